"""Settings of ``vibration-infer serve``: one typed object, built once in `run`.

Every field reads ``VIBRATION_<FIELD>`` from the environment (the node name
also plain ``NODE_NAME``, as the downward API sets it). MQTT credentials come
as values or, from a mounted Secret, through the ``*_file`` fields, read at
each (re)connect so a rotated Secret is picked up; they are `SecretStr`, so
no repr or log line shows them.

Which model serves: the validate init container left the node's last good
version in the cache, and serve loads the last good version of the
VibrationModel its `target_file` names (or of `model_id`, when set) from
`cache_dir`. For local runs and tests, `artifact` and `card` name the files
directly instead.

The cache, accelerator, threshold and S3 fields share their names (and so
their environment variables) with `vibration_infer.settings.ValidateSettings`:
the init container and the serving container of a pod read one environment.

Longer than the others: it is one settings class, each field with the
docstring its flag's help and the chart's documentation come from.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vibration_core.drift_monitor import DriftPolicy
from vibration_core.errors import MessageError
from vibration_core.messages import ID_PATTERN, Severity
from vibration_core.raw import DEFAULT_MAX_BYTES
from vibration_core.topics import check_prefix, check_share_group
from vibration_infer.errors import UsageError
from vibration_infer.settings import Accelerator, EdgeTpuFallback, namespace_field

if TYPE_CHECKING:
    from collections.abc import Callable

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_PACKET_HEADROOM = 128 << 10  # the fixed header, a topic (64 KiB at most), properties
_MQTT_MAX_PACKET = 268_435_455 + 5
"""The largest MQTT packet: a Remaining Length of four bytes, and the fixed header's five."""
_U32_MAX = 0xFFFFFFFF
_DRIFT = DriftPolicy()


def _default_severity() -> dict[str, Severity]:
    return {"bearing_fault": "critical"}


def _hostname() -> str:
    return socket.gethostname().split(".")[0] or "node"


class ServeSettings(BaseSettings):
    """Broker, model, batching, alert, drift, HTTP and hot-swap settings of one serving pod."""

    model_config = SettingsConfigDict(
        env_prefix="VIBRATION_", extra="forbid", frozen=True, populate_by_name=True
    )

    # --- MQTT -----------------------------------------------------------------------------
    mqtt_client: Literal["wire", "paho"] = Field(
        default="wire",
        description="MQTT client of the serving loop: wire (the project's MQTT 5 client, one write per "
        "batch: several times less CPU per window) or paho (paho-mqtt v2).",
    )
    mqtt_url: str = Field(
        default="mqtt://localhost:1883",
        description="Broker: mqtt://host[:1883] or mqtts://host[:8883] (TLS).",
    )
    mqtt_username: str | None = Field(default=None, description="MQTT user name.")
    mqtt_password: SecretStr | None = Field(default=None, description="MQTT password.")
    mqtt_username_file: Path | None = Field(
        default=None, description="File holding the MQTT user name (a mounted Secret); wins over the value."
    )
    mqtt_password_file: Path | None = Field(
        default=None, description="File holding the MQTT password (a mounted Secret); wins over the value."
    )
    mqtt_ca_file: Path | None = Field(
        default=None, description="CA bundle for mqtts:// with a private CA; the system store otherwise."
    )
    client_id: str | None = Field(
        default=None,
        description="Stable MQTT client id of the persistent session; vibration-infer-{node} by default.",
    )
    topic_prefix: str = Field(
        default="factory/hall-a",
        description="The hall's topic prefix (publish and the docs use the same default).",
    )
    mqtt_share_group: str | None = Field(
        default=None,
        description="MQTT 5 shared subscription: the pods of one group share the hall's windows, each "
        "window goes to one of them ($share/GROUP/PREFIX/machines/+/raw; the operator sets the "
        "VibrationModel's name). 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', '-'. Unset: this pod "
        "reads every window.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive, seconds.")
    session_expiry_s: int = Field(
        default=3600,
        ge=0,
        le=_U32_MAX,
        description="How long the broker keeps the session (and queues QoS 1 windows) while the pod is away; "
        f"{_U32_MAX} (MQTT's largest): never expires.",
    )
    receive_maximum: int = Field(
        default=1024,
        ge=1,
        le=65535,
        description="Unacknowledged windows the broker may have in flight to this pod; bounds its memory.",
    )
    max_inflight: int = Field(
        default=20,
        ge=1,
        le=65535,
        description="Answers published at QoS 1 and not yet acknowledged, at most. The wire client also "
        "keeps below the broker's Receive Maximum by itself; with paho keep it at or below that "
        "(Mosquitto: max_inflight_messages, 20 by default).",
    )
    reconnect_min_s: int = Field(default=1, ge=1, description="First reconnect delay, seconds; doubles.")
    reconnect_max_s: int = Field(default=30, ge=1, description="Longest reconnect delay, seconds.")
    predictions_qos: int = Field(
        default=1,
        ge=0,
        le=1,
        description="QoS of predictions, alerts and errors: 1, at least once (every answer carries its "
        "window's key, so a subscriber drops a transport copy by it), or 0. QoS 2 is not offered: its "
        "exactly-once lasts only as long as the pod's process, and a restarted pod cannot release the "
        "half-done flows its persistent session left at the broker.",
    )
    node_name: str = Field(
        default_factory=_hostname,
        pattern=ID_PATTERN,
        validation_alias=AliasChoices("node_name", "VIBRATION_NODE_NAME", "NODE_NAME"),
        description="The node this pod runs on (downward API); names the status topic.",
    )
    namespace: str | None = namespace_field()

    # --- model ----------------------------------------------------------------------------
    cache_dir: Path = Field(
        default=Path("/var/cache/vibration-edge"), description="Node-local model cache (a hostPath volume)."
    )
    cache_keep: int = Field(default=3, ge=1, description="Digests kept per model id in the cache.")
    model_id: str | None = Field(
        default=None, description="Serve the last good version of this model id from the cache."
    )
    artifact: Path | None = Field(
        default=None, description="Serve this artifact directly (local runs, tests); needs `card`."
    )
    card: Path | None = Field(default=None, description="The model card of `artifact`.")
    accelerator: Accelerator = Field(default="cpu", description="cpu, or coral for the Edge TPU delegate.")
    edgetpu_fallback: EdgeTpuFallback = Field(
        default="cpu",
        description="Edge TPU wanted but missing: cpu = LiteRT on the CPU (logged), fail = refuse.",
    )
    threads: int = Field(default=1, ge=1, description="Threads per runtime (intra-op).")

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

    # --- drift (the defaults are `DriftPolicy`'s; see vibration_core.drift_monitor) ----------
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

    # --- hot swap -------------------------------------------------------------------------
    target_file: Path | None = Field(
        default=Path("/etc/vibration-edge/target/target.json"),
        description="The operator's target model (a projected ConfigMap); polled, swapped in when valid.",
    )
    target_poll_s: float = Field(default=1.0, gt=0, description="Seconds between looks at `target_file`.")
    fetch_retry_s: float = Field(
        default=30.0, gt=0, description="Seconds before a target that could not be fetched is tried again."
    )
    test_data: Path | None = Field(
        default=None, description="Node-local test data a new target is validated on before it serves."
    )
    min_accuracy: float | None = Field(
        default=None, ge=0, le=1, description="Default lowest accuracy of a target; unset: not checked."
    )
    min_macro_f1: float | None = Field(
        default=None, ge=0, le=1, description="Default lowest macro F1 of a target; unset: the default floor."
    )
    min_class_recall: dict[str, float] = Field(
        default_factory=dict, description="Default lowest recall per class label of a target."
    )
    max_p99_ms: float | None = Field(
        default=None, gt=0, description="Default highest p99 latency per window of a target (ms)."
    )
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint for targets on s3://.")
    s3_region: str | None = Field(default=None, description="S3 region; asked from the endpoint when unset.")
    s3_access_key_file: Path | None = Field(default=None, description="File holding the S3 access key.")
    s3_secret_key_file: Path | None = Field(default=None, description="File holding the S3 secret key.")
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Connect timeout of a target download, s."
    )
    read_timeout_s: float = Field(default=30.0, gt=0, description="Read timeout of a target download, s.")
    retries: int = Field(default=3, ge=0, le=10, description="Retries of a target download.")

    @field_validator("mqtt_share_group")
    @classmethod
    def _check_share_group(cls, group: str | None) -> str | None:
        return None if group is None else _checked(check_share_group, group)

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        return _checked(check_prefix, prefix)  # a usage error (exit 2), not a crash once serving starts

    @model_validator(mode="after")
    def _check(self) -> Self:
        parts = urlsplit(self.mqtt_url)
        if parts.username is not None or parts.password is not None:
            # It would be logged and shown on /status, and never used: credentials come from files.
            msg = "mqtt_url must not carry a user or password: set mqtt_username_file and mqtt_password_file"
            raise ValueError(msg)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            msg = f"mqtt_url must be mqtt://host[:port] or mqtts://host[:port], got {self.mqtt_url!r}"
            raise ValueError(msg)
        if (self.artifact is None) != (self.card is None):
            msg = "artifact and card go together: set both or neither"
            raise ValueError(msg)
        if self.artifact is None and self.model_id is None and self.target_file is None:
            msg = "set target_file, model_id (serve the cache's last good version) or artifact and card"
            raise ValueError(msg)
        if self.reconnect_max_s < self.reconnect_min_s:
            msg = "reconnect_max_s must be >= reconnect_min_s"
            raise ValueError(msg)
        return self

    @property
    def mqtt_host(self) -> str:
        """Host of `mqtt_url`."""
        return urlsplit(self.mqtt_url).hostname or "localhost"

    @property
    def mqtt_port(self) -> int:
        """Port of `mqtt_url`, 1883 (mqtt) or 8883 (mqtts) by default."""
        parts = urlsplit(self.mqtt_url)
        return parts.port or _DEFAULT_PORTS[parts.scheme]

    @property
    def mqtt_tls(self) -> bool:
        """Whether `mqtt_url` asks for TLS."""
        return urlsplit(self.mqtt_url).scheme == "mqtts"

    @property
    def max_packet_bytes(self) -> int:
        """The largest MQTT packet the pod takes: a raw payload it reads, with a topic and properties.

        Announced in CONNECT (Maximum Packet Size), so the broker discards a larger message
        for this pod instead of sending it: one sensor's 200 MB message would otherwise
        push the pod past its memory limit, and back again at each redelivery.
        """
        return self.max_payload_bytes + _PACKET_HEADROOM

    @property
    def effective_client_id(self) -> str:
        """The MQTT client id: `client_id`, or vibration-infer-{node}."""
        return self.client_id or f"vibration-infer-{self.node_name}"

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

    def mqtt_credentials(self) -> tuple[str | None, str | None]:
        """User name and password, read from their files when those are set."""
        return (
            _read_secret(self.mqtt_username_file) or self.mqtt_username,
            _read_secret(self.mqtt_password_file)
            or (self.mqtt_password.get_secret_value() if self.mqtt_password else None),
        )


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        # The message names the file, never its content.
        raise UsageError(f"cannot read secret file {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise UsageError(f"secret file {path} is not UTF-8 text") from None


def _checked(check: Callable[[str], str], value: str) -> str:
    """`check(value)`; a `MessageError` as a ValueError of its detail (reason and field are pydantic's)."""
    try:
        return check(value)
    except MessageError as exc:
        raise ValueError(exc.detail) from None
