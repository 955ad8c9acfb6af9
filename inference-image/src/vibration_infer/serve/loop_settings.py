"""The serving loop's fields of `ServeSettings`: batching and input, alerts, drift, HTTP and status.

The drift defaults are `DriftPolicy`'s (see `vibration_core.drift_monitor`),
so the flags and the monitor cannot disagree about them.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from vibration_core.drift_monitor import DriftPolicy
from vibration_core.messages import Severity
from vibration_core.raw import DEFAULT_MAX_BYTES

_PACKET_HEADROOM = 128 << 10  # the fixed header, a topic (64 KiB at most), properties
_MQTT_MAX_PACKET = 268_435_455 + 5
"""The largest MQTT packet: a Remaining Length of four bytes, and the fixed header's five."""
_DRIFT = DriftPolicy()


def _default_severity() -> dict[str, Severity]:
    return {"bearing_fault": "critical"}


class LoopFields(BaseModel):
    """How windows are batched and answered, when they alert or drift, and what the pod shows."""

    # --- batching and input ---------------------------------------------------------------
    batch_max: int = Field(default=64, ge=1, le=4096, description="Windows per batch at most.")
    batch_deadline_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description=(
            "How long a batch may wait for more windows after its first one arrived; 0 runs what is "
            "queued at once (batches still grow under load: windows queue while a batch runs). At a "
            "hall's few hundred windows a second a few ms let windows share a batch's fixed costs; on "
            "plain TCP the windows that come while a batch waits are read together when it is due, and "
            "each counts its latency from the batch's first (an upper bound)."
        ),
    )
    max_payload_bytes: int = Field(
        default=DEFAULT_MAX_BYTES,
        ge=64,
        le=_MQTT_MAX_PACKET - _PACKET_HEADROOM,
        description="Larger raw payloads are refused (oversized) unread; with 128 KiB for the topic and "
        "properties, the Maximum Packet Size the pod announces (MQTT's largest is 256 MiB).",
    )
    dedupe_keys: int = Field(
        default=65536,
        ge=0,
        description="Recent windows (machine, timestamp, payload digest) kept to drop redeliveries; 0: off.",
    )

    # --- alerts ---------------------------------------------------------------------------
    alert_confidence: float = Field(
        default=0.8, ge=0, le=1, description="Confidence an abnormal window needs."
    )
    alert_consecutive: int = Field(
        default=3, ge=1, description="Abnormal windows in a row (one machine, one label) before an alert."
    )
    normal_labels: tuple[str, ...] = Field(
        default=("normal",), description="Labels that never alert; every other label of the card does."
    )
    alert_labels: tuple[str, ...] | None = Field(
        default=None, description="If set, only these labels alert (instead of all but `normal_labels`)."
    )
    alert_severity: dict[str, Severity] = Field(
        default_factory=_default_severity,
        description="Severity per label; labels not listed get `alert_default_severity`.",
    )
    alert_default_severity: Severity = Field(default="warning", description="Severity of other labels.")

    # --- drift ----------------------------------------------------------------------------
    drift_window: int = Field(
        default=_DRIFT.window, ge=10, description="Most recent windows each drift evaluation sees."
    )
    drift_evaluate_every: int | None = Field(
        default=None,
        ge=1,
        description="New windows between two drift evaluations; empty: a quarter of the window.",
    )
    drift_min_samples: int = Field(
        default=_DRIFT.min_samples, ge=1, description="Windows needed before the first drift evaluation."
    )
    drift_feature_psi: float = Field(
        default=_DRIFT.feature_psi,
        gt=0,
        description="Smallest PSI of a feature against its training reference that counts as drift.",
    )
    drift_class_psi: float = Field(
        default=_DRIFT.class_psi,
        gt=0,
        description="Smallest PSI of the predicted class shares against the node's baseline that is drift.",
    )
    drift_p_value: float = Field(
        default=_DRIFT.p_value,
        gt=0,
        lt=1,
        description="Significance of one drift evaluation over all its tests (Bonferroni).",
    )
    drift_baseline_windows: int = Field(
        default=_DRIFT.baseline_windows,
        ge=1,
        description="Windows after a model starts serving whose predicted class mix is the class baseline.",
    )
    drift_raise_after: int = Field(
        default=_DRIFT.raise_after, ge=1, description="Flagged drift evaluations in a row that report drift."
    )
    drift_clear_after: int = Field(
        default=_DRIFT.clear_after, ge=1, description="Clean drift evaluations in a row that clear it."
    )

    # --- HTTP, status ---------------------------------------------------------------------
    http_host: str = Field(default="0.0.0.0", description="Address of /healthz, /readyz, /metrics, /status.")  # noqa: S104
    http_port: int = Field(default=8080, ge=0, le=65535, description="Port of the HTTP endpoints; 0 = any.")
    status_interval_s: float = Field(
        default=10.0, gt=0, description="Seconds between retained status messages (also sent on changes)."
    )
    shutdown_timeout_s: float = Field(
        default=5.0, ge=0, description="On SIGTERM, how long to wait for the last answers to be acknowledged."
    )
    memory_trim_s: float = Field(
        default=1.0,
        ge=0,
        description=(
            "Seconds between returns of freed heap memory to the system (malloc_trim); while on, "
            "free() itself keeps up to 8 MB for the next batch. 0 = off."
        ),
    )

    @property
    def max_packet_bytes(self) -> int:
        """The largest MQTT packet the pod takes: a raw payload it reads, with a topic and properties.

        Announced in CONNECT (Maximum Packet Size), so the broker discards a larger message
        for this pod instead of sending it: one sensor's 200 MB message would otherwise
        push the pod past its memory limit, and back again at each redelivery.
        """
        return self.max_payload_bytes + _PACKET_HEADROOM

    @property
    def drift_policy(self) -> DriftPolicy:
        """The drift policy the `drift_*` fields describe."""
        return DriftPolicy(
            window=self.drift_window,
            evaluate_every=self.drift_evaluate_every,
            min_samples=self.drift_min_samples,
            feature_psi=self.drift_feature_psi,
            class_psi=self.drift_class_psi,
            p_value=self.drift_p_value,
            baseline_windows=self.drift_baseline_windows,
            raise_after=self.drift_raise_after,
            clear_after=self.drift_clear_after,
        )
