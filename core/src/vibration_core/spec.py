"""The VibrationModel resource (contract 5): its spec and the whole object, as pydantic models.

One source of truth: the CRD in ``crds/`` is generated from these models
(`vibration_operator.crd`), the training job builds its manifests with them, and
the operator parses what the API server hands it with them. Field names are
the camelCase of the Kubernetes API conventions; every field has a
description, which is what ``kubectl explain vibrationmodel.spec`` shows.
Cross-field rules are CEL (``x-kubernetes-validations``), so the API server
refuses an invalid spec with a clear message instead of the operator finding
out later. Its status is `vibration_core.status`; its API names are `vibration_core.api`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from vibration_core.api import MAX_NAME_LENGTH, NAME_MESSAGE, NAME_PATTERN, VERSION_PATTERN
from vibration_core.schema import Schema, cel_rules
from vibration_core.status import VibrationModelStatus

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SHA256 = r"^[0-9a-f]{64}$"
_LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE = rf"^({_LABEL_NAME})?$"
"""A Kubernetes label value: at most 63 characters, alphanumerics and '-', '_', '.' inside."""
LABEL_KEY = rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$"
"""A Kubernetes label key: an optional DNS-subdomain prefix and '/', then a name like a value's."""
MAX_SELECTOR_LABELS = 32
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]


class ArtifactRef(Schema):
    """Where the model file is and which bytes it must be."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "has(self.sha256) || (has(self.unverified) && self.unverified)",
                "artifact.sha256 is required unless artifact.unverified is true",
            )
        )
    )

    uri: str = Field(pattern=r"^(s3|https?|file)://.+", max_length=2048)
    """Artifact URI: s3://bucket/key, https://host/path or file:///path. The model card is read next to it."""
    sha256: str | None = Field(default=None, pattern=_SHA256)
    """Lower-case hex sha256 of the artifact. Nodes refuse any other bytes."""
    unverified: bool = False
    """Allow an artifact without sha256 (development only): the card's digest is then trusted."""
    credentials_secret: str | None = Field(default=None, pattern=_DNS_LABEL, max_length=253)
    """Secret with the S3 credentials (keys accessKey, secretKey), mounted into the validator and the pod."""
    endpoint: str | None = Field(default=None, pattern=r"^https?://.+", max_length=2048)
    """S3 endpoint for s3:// URIs, e.g. http://minio.minio:9000. Empty: the chart's registry endpoint."""

    @model_validator(mode="after")
    def _digest_or_unverified(self) -> Self:
        # The same rule as the CEL rule above, for manifests built in Python.
        if self.sha256 is None and not self.unverified:
            raise ValueError("artifact.sha256 is required unless artifact.unverified is true")
        return self


class MqttSpec(Schema):
    """The hall's broker and topic tree."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "!has(self.caSecret) || self.broker.startsWith('mqtts://')",
                "mqtt.caSecret needs an mqtts:// broker",
            )
        )
    )

    broker: str = Field(pattern=r"^mqtts?://[^/@]+$", max_length=512)
    """Broker URL, mqtt://host:1883 or mqtts://host:8883; no user or password (credentialsSecret)."""
    topic_prefix: str = Field(pattern=r"^[^+#$/\x00](/?[^+#/\x00])*$", max_length=200)
    """Topic prefix of the hall, e.g. factory/hall-a. No wildcards, no empty level, no leading or
    trailing slash, no leading $ (the broker's own topics): what the serving pods accept."""
    credentials_secret: str | None = Field(default=None, pattern=_DNS_LABEL, max_length=253)
    """Secret with the serving pods' MQTT username and password (keys username and password)."""
    ca_secret: str | None = Field(default=None, pattern=_DNS_LABEL, max_length=253)
    """Secret with ca.crt, the CA that signed an mqtts:// broker's certificate; empty: the image's CAs."""
    client: Literal["wire", "paho"] = "wire"
    """MQTT client of the serving pods: wire (the project's MQTT 5 client) or paho (paho-mqtt v2)."""

    @model_validator(mode="after")
    def _ca_for_tls(self) -> Self:
        # The same rule as the CEL rule above, for manifests built in Python.
        if self.ca_secret is not None and not self.broker.startswith("mqtts://"):
            raise ValueError("mqtt.caSecret needs an mqtts:// broker")
        return self


class MaxRegression(Schema):
    """How far a candidate may fall below the version the node serves, on the same test windows."""

    macro_f1: float = Field(default=0.05, ge=0, le=1)
    """Allowed fall of macro F1 (0.05: five points)."""
    class_recall: float = Field(default=0.1, ge=0, le=1)
    """Allowed fall of each class's recall (0.1: ten points)."""
    per_class: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    """Per-class overrides of classRecall, e.g. {bearing_fault: 0.02}."""


class ValidationSpec(Schema):
    """What a node checks before it serves a version (the promotion gate; see the README)."""

    test_data_path: str = Field(default="/var/lib/vibration-edge/testdata", pattern=r"^/.*")
    """Node-local directory (hostPath) of labelled test windows as parquet."""
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    """Lowest accuracy on the node's test data that passes; unset: not checked."""
    min_macro_f1: float | None = Field(default=None, ge=0, le=1)
    """Lowest macro F1 that passes; unset: the default floor, halfway from chance to 1 (0.625, 4 classes)."""
    min_class_recall: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    """Lowest recall per class label, e.g. {bearing_fault: 0.95}; a class not named: the default floor,
    a quarter of the way from chance to 1 (0.4375 for 4 classes)."""
    max_p99_latency_ms: float | None = Field(default=None, gt=0)
    """Highest p99 latency per window on the node that passes; unset: not checked."""
    max_regression: MaxRegression = Field(default_factory=MaxRegression)
    """Champion against challenger: how far the candidate may fall below the version the node serves."""


class UpdateWindow(Schema):
    """When a rollout may change what nodes serve."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "duration(self.duration) >= duration('1m') && duration(self.duration) <= duration('24h')",
                "updateWindow.duration must be between 1m and 24h",
            )
        )
    )

    schedule: str = Field(pattern=r"^(\S+\s+){4}\S+$", max_length=100)
    """Cron schedule (5 fields, UTC) of the window's start, e.g. "0 22 * * *"."""
    duration: str = Field(pattern=r"^([0-9]+h)?([0-9]+m)?$", min_length=2, max_length=10)
    """How long the window stays open, e.g. 2h or 90m."""

    @property
    def minutes(self) -> int:
        """The duration in minutes."""
        match = re.fullmatch(r"(?:([0-9]+)h)?(?:([0-9]+)m)?", self.duration)
        hours, minutes = (int(part) if part else 0 for part in match.groups()) if match else (0, 0)
        return hours * 60 + minutes

    @model_validator(mode="after")
    def _sane_duration(self) -> Self:
        if not 1 <= self.minutes <= 24 * 60:
            raise ValueError("updateWindow.duration must be between 1m and 24h")
        return self


class ShadowSpec(Schema):
    """Run a validated candidate beside the serving version on live windows before it may answer."""

    windows: int = Field(ge=1, le=10_000_000)
    """Live windows the candidate must see beside the serving version (on each node)."""
    min_agreement: float = Field(default=0.95, ge=0, le=1)
    """Lowest share of windows where both predict the same class."""
    min_class_agreement: float = Field(default=0.9, ge=0, le=1)
    """Lowest agreement on the windows of each class the serving version predicted."""
    min_class_windows: int = Field(default=20, ge=1)
    """A class the serving version predicted fewer times is shown but not judged."""


class RolloutSpec(Schema):
    """How a new version reaches the nodes."""

    canary_nodes: int = Field(default=1, ge=1, le=100)
    """Nodes that validate and serve the new version first; a failure there stops the rollout."""
    update_window: UpdateWindow | None = None
    """Only change nodes inside this window; unset: any time."""
    paused: bool = False
    """Hold the rollout where it is."""
    approval: Literal["auto", "manual"] = "auto"
    """manual: once the canaries pass, hold until spec.rollout.approvedVersion names this version."""
    approved_version: str | None = Field(default=None, pattern=VERSION_PATTERN)
    """The version a person approved for the rest of the nodes (commit it, or kubectl patch)."""
    shadow: ShadowSpec | None = None
    """After validation, on nodes that serve a version: shadow the candidate on live windows first."""


class DriftSpec(Schema):
    """Drift checks: features against the card's training data, class shares against each node's start.

    Each serving pod evaluates its most recent windows every quarter window. A
    feature (or the class shares) is flagged when its chi-square test is
    significant, at pValue over all the tests of an evaluation, and its PSI is
    at least featurePsi (classPsi); the pod reports drift after raiseAfter
    flagged evaluations in a row and clears it after clearAfter clean ones.
    The defaults are those `make drift-eval` measured (README, Monitoring).
    """

    enabled: bool = True
    """Read drift statistics from the serving pods and set the Drifted condition."""
    window: int = Field(default=500, ge=50, le=100000)
    """Most recent windows per node each evaluation sees."""
    feature_psi: float = Field(default=0.05, gt=0, le=10)
    """Smallest PSI of a feature against the training data (in the node's class mix) that counts as drift."""
    class_psi: float = Field(default=0.1, gt=0, le=10)
    """Smallest PSI of the predicted class shares against the node's baseline that counts as drift."""
    p_value: float = Field(default=0.01, gt=0, le=0.2)
    """Significance of one evaluation over all its tests (Bonferroni over the features and class shares)."""
    baseline_windows: int = Field(default=2000, ge=100, le=1000000)
    """Windows after a version starts serving on a node whose predicted class mix is that node's baseline."""
    raise_after: int = Field(default=3, ge=1, le=100)
    """Flagged evaluations in a row before a node reports drift."""
    clear_after: int = Field(default=3, ge=1, le=100)
    """Clean evaluations in a row before a node stops reporting drift."""


Label = Annotated[str, Field(min_length=1, max_length=128)]
"""A class label of a model card."""


class AlertSpec(Schema):
    """When the serving pods raise an alert."""

    min_confidence: float = Field(default=0.8, ge=0, le=1)
    """Confidence of an abnormal class at or above which a window counts towards an alert."""
    consecutive: int = Field(default=3, ge=1, le=1000)
    """Windows in a row of classes that alert (fault classes may mix: one alert names the most frequent)."""
    normal_labels: list[Label] = Field(default_factory=lambda: ["normal"], max_length=32)
    """Classes of the model card that never alert; every other class does (a card's labels are its own)."""
    alert_labels: list[Label] | None = Field(default=None, min_length=1, max_length=32)
    """If set, only these classes alert, instead of every class but `normalLabels`."""
    critical_labels: list[Label] = Field(default_factory=lambda: ["bearing_fault"], max_length=32)
    """Classes whose alerts are critical; the others' are warnings."""


class ServingSpec(Schema):
    """How the serving pods batch the windows they answer.

    A hall's few hundred windows a second come one by one, and each then pays a
    batch's fixed costs (a one-window FFT, a one-row model call, an answer); a
    few milliseconds of waiting let windows share them, for as much latency.
    docs/benchmarks.md measures the trade.
    """

    batch_deadline_ms: float = Field(default=0.0, ge=0, le=1000)
    """Milliseconds a window may wait for others to share its batch; 0 answers each read at once.

    At a hall's few hundred windows a second, a few tens of milliseconds cut serve's CPU per
    window about threefold (docs/benchmarks.md), for as much latency.
    """


class VibrationModelSpec(Schema):
    """A model version and how the nodes of a hall should serve it."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "self.format == 'onnx' || self.accelerator == 'coral'",
                (
                    "format tflite or edgetpu needs accelerator coral (LiteRT is in the Edge TPU image "
                    "only; CPU nodes serve ONNX)"
                ),
            ),
        )
    )

    version: str = Field(pattern=VERSION_PATTERN)
    """The version to serve, as in the model card."""
    artifact: ArtifactRef
    """The model file."""
    format: Literal["onnx", "tflite", "edgetpu"] = "onnx"
    """Artifact format: onnx (ONNX Runtime), tflite (LiteRT), edgetpu (LiteRT and the Edge TPU delegate).

    tflite and edgetpu need accelerator coral: LiteRT is in the Edge TPU image only."""
    accelerator: Literal["cpu", "coral"] = "cpu"
    """cpu, or coral: pods request the Edge TPU device-plugin resource."""
    node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=MAX_SELECTOR_LABELS)
    """Labels of the nodes that serve this model, e.g. {edge.vibration.io/hall: hall-a}."""
    mqtt: MqttSpec
    """The hall's broker."""
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    """Node-local validation before a node serves a version."""
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    """Rollout policy."""
    drift: DriftSpec = Field(default_factory=DriftSpec)
    """Drift policy."""
    alerts: AlertSpec = Field(default_factory=AlertSpec)
    """Alert policy."""
    serving: ServingSpec = Field(default_factory=ServingSpec)
    """How the serving pods batch windows."""

    @model_validator(mode="after")
    def _label_keys(self) -> Self:
        # Keys only here: the API server's schema cannot name a map's keys without CEL whose
        # cost it refuses to bound; values and their count it checks itself.
        for key in self.node_selector:
            prefix, _, name = key.rpartition("/")
            if not re.fullmatch(LABEL_KEY, key) or len(name) > 63 or len(prefix) > 253:  # noqa: PLR2004
                msg = (
                    f"nodeSelector key {key!r} is not a label key ([prefix/]name, name at most 63 characters)"
                )
                raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _tflite_on_coral(self) -> Self:
        if self.format != "onnx" and self.accelerator != "coral":
            msg = (
                f"format {self.format} needs accelerator coral (LiteRT is in the Edge TPU image only; "
                "CPU nodes serve ONNX)"
            )
            raise ValueError(msg)
        return self


class VibrationModel(Schema):
    """A VibrationModel object as the API server stores it."""

    api_version: Literal["edge.vibration.io/v1alpha1"] = "edge.vibration.io/v1alpha1"
    kind: Literal["VibrationModel"] = "VibrationModel"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: VibrationModelSpec
    status: VibrationModelStatus | None = None

    @model_validator(mode="after")
    def _name_is_a_dns_label(self) -> Self:
        name = self.metadata.get("name")
        if name is not None and (
            not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not re.fullmatch(NAME_PATTERN, name)
        ):
            raise ValueError(f"{NAME_MESSAGE}, got {name!r}")
        return self

    def to_manifest(self) -> dict[str, Any]:
        """The object as a manifest: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"status"})
