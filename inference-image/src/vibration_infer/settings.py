"""Settings of ``vibration-infer validate``: one typed object, built once in the CLI.

Every field reads the environment variable ``VIBRATION_<FIELD>`` (the node
name also plain ``NODE_NAME``, as the downward API sets it); flags given on
the command line override the environment. S3 credentials come either as
values or, as a Kubernetes Secret mounted as files, through the
``*_file`` fields; the values are `SecretStr` so that no repr, log line or
report shows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vibration_core.api import VERSION_PATTERN
from vibration_core.gate import DEFAULT_MAX_REGRESSION_CLASS_RECALL, DEFAULT_MAX_REGRESSION_MACRO_F1
from vibration_infer.errors import UsageError
from vibration_infer.last_good import NAMESPACE_PATTERN, SLOT_PATTERN, slot_of

if TYPE_CHECKING:
    from vibration_core.target import ModelTarget

Accelerator = Literal["cpu", "coral"]
EdgeTpuFallback = Literal["cpu", "fail"]

_SCHEMES = frozenset({"s3", "http", "https", "file"})
_SHA256 = r"^[0-9a-f]{64}$"


def namespace_field() -> Any:  # noqa: ANN401 - a pydantic FieldInfo, typed as the field it sets
    """The VibrationModel's namespace, as both containers of a serving pod read it (downward API)."""
    return Field(
        default=None,
        pattern=NAMESPACE_PATTERN,
        max_length=63,
        validation_alias=AliasChoices("namespace", "VIBRATION_NAMESPACE", "POD_NAMESPACE"),
        description="The VibrationModel's namespace, from the downward API: with the target's name, "
        "the slot of its last good version in the node cache.",
    )


class ValidateSettings(BaseSettings):
    """What to validate, where from, against which data and thresholds."""

    model_config = SettingsConfigDict(
        env_prefix="VIBRATION_", extra="forbid", frozen=True, populate_by_name=True
    )

    target: Path | None = Field(
        default=None,
        description="The operator's target file (target.json): model, digest and thresholds, which win "
        "over the flags and environment. Either this or model_uri.",
    )
    fallback_last_good: bool = Field(
        default=False,
        description="With target: when the target fails but this node has a last good version of the same "
        "VibrationModel, report the failure yet exit 0, so the pod serves the last good version.",
    )
    model_uri: str | None = Field(
        default=None, description="The artifact: s3://bucket/key, http(s)://host/path or file:///abs/path."
    )
    slot: str | None = Field(
        default=None,
        pattern=SLOT_PATTERN,
        description="Also record a passed version as the last good one under this slot, "
        "namespace/name (the VibrationModel's; set from the target and namespace).",
    )
    card_uri: str | None = Field(
        default=None, description="The model card; by default modelcard.json next to the artifact."
    )
    expected_sha256: str | None = Field(
        default=None,
        pattern=_SHA256,
        description="The artifact's sha256 as the VibrationModel names it; a cached copy with this "
        "digest is used without any download (offline restarts).",
    )
    expected_version: str | None = Field(
        default=None,
        pattern=VERSION_PATTERN,
        description="The version the VibrationModel names: a cached copy of the digest with no card of "
        "that version on this node (the same artifact applied again under a new version) has its card "
        "fetched anew.",
    )
    s3_endpoint: str | None = Field(
        default=None, description="S3 endpoint URL such as http://minio.minio:9000; AWS when not set."
    )
    s3_region: str | None = Field(
        default=None, description="S3 region; asked from the endpoint when not set."
    )
    s3_access_key: SecretStr | None = Field(default=None, description="S3 access key.")
    s3_secret_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    s3_access_key_file: Path | None = Field(
        default=None, description="File holding the S3 access key (a mounted Secret); wins over the value."
    )
    s3_secret_key_file: Path | None = Field(
        default=None, description="File holding the S3 secret key (a mounted Secret); wins over the value."
    )
    ca_file: Path | None = Field(
        default=None, description="CA bundle for https endpoints with a private CA; system store otherwise."
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Seconds to wait for a TCP connection.")
    read_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds to wait for each read once connected (a hung server)."
    )
    retries: int = Field(default=3, ge=0, le=10, description="Retries after the first attempt of a download.")
    backoff_s: float = Field(
        default=0.5, ge=0, description="First pause between attempts; doubles on each retry (capped at 30 s)."
    )
    min_download_kib_s: float = Field(
        default=4.0,
        ge=0,
        description="Slowest average download rate (KiB/s) accepted once a transfer has run longer than "
        "read_timeout_s: a registry that trickles bytes, each read inside the read timeout, is given up "
        "and retried like a timeout (exit 10 once every attempt failed). At 4 (32 kbit/s, below any "
        "uplink a gateway is given), an attempt at an artifact of n MiB lasts at most about "
        "read_timeout_s + 256 s x n. 0: no bound.",
    )
    max_artifact_mb: float = Field(
        default=512.0, gt=0, description="Refuse artifacts larger than this (protects the node's disk)."
    )
    cache_dir: Path = Field(
        default=Path("/var/cache/vibration-edge"), description="Node-local model cache (a hostPath volume)."
    )
    cache_keep: int = Field(
        default=3, ge=1, description="Digests kept per model id; the last good one is never evicted."
    )
    test_data: Path = Field(description="Node-local test data: a parquet file or a directory of them.")
    max_test_data_mb: float = Field(
        default=64.0,
        gt=0,
        description="Refuse test data whose parquet files together are larger than this, in MiB (exit 15): "
        "validation holds the windows in memory, about 4.5 times the files' size, inside the "
        "container's memory limit (the chart's serving.resources.limits.memory, 512Mi). Raise it only "
        "with the limit.",
    )
    batch_size: int = Field(default=64, ge=1, le=4096, description="Windows per inference batch.")
    threads: int = Field(default=1, ge=1, description="Threads per runtime (intra-op); 1 keeps latency flat.")
    accelerator: Accelerator = Field(default="cpu", description="cpu, or coral for the Edge TPU delegate.")
    edgetpu_fallback: EdgeTpuFallback = Field(
        default="cpu",
        description="When the Edge TPU is wanted but missing: cpu = run on LiteRT's CPU (logged), "
        "fail = refuse to load.",
    )
    min_accuracy: float | None = Field(
        default=None, ge=0, le=1, description="Lowest accepted accuracy; unset: not checked."
    )
    min_macro_f1: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Lowest accepted macro F1; unset: the default floor, halfway from chance to 1 "
        "(0.625 for four classes).",
    )
    min_class_recall: dict[str, float] = Field(
        default_factory=dict,
        description="Lowest accepted recall per class label, e.g. {bearing_fault: 0.95}; a class not "
        "named: the default floor, a quarter of the way from chance to 1 (0.4375 for four classes).",
    )
    max_regression_macro_f1: float = Field(
        default=DEFAULT_MAX_REGRESSION_MACRO_F1,
        ge=0,
        le=1,
        description="How far the candidate's macro F1 may fall below the champion's on the same windows.",
    )
    max_regression_class_recall: float = Field(
        default=DEFAULT_MAX_REGRESSION_CLASS_RECALL,
        ge=0,
        le=1,
        description="How far a class's recall may fall below the champion's on the same windows.",
    )
    max_regression_per_class: dict[str, float] = Field(
        default_factory=dict, description="Per-class overrides of max_regression_class_recall."
    )
    champion_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="The version this node serves (from the node cache), to hold the candidate to; "
        "unset: no comparison.",
    )
    champion_version: str | None = Field(
        default=None,
        pattern=VERSION_PATTERN,
        description="The champion's version: its card on this node is the one it passed under.",
    )
    max_p99_ms: float | None = Field(
        default=None, gt=0, description="Highest accepted p99 latency per window (ms); not checked if unset."
    )
    convert_units: bool = Field(
        default=False,
        description="Convert test data in g to a model in m/s^2 and back (x 9.80665); "
        "off: test data in another unit than the model's is refused (exit 15).",
    )
    termination_log: Path | None = Field(
        default=None,
        description="Where the compact report goes (the pod status reads it); unset: "
        "/dev/termination-log when that file exists (the kubelet mounts it), else nowhere.",
    )
    node_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("node_name", "VIBRATION_NODE_NAME", "NODE_NAME"),
        description="The node this runs on, for the report; from the downward API.",
    )
    namespace: str | None = namespace_field()

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.model_uri is None) == (self.target is None):
            msg = "give exactly one of model_uri (what to validate) and target (the operator's target file)"
            raise ValueError(msg)
        for name in ("model_uri", "card_uri"):
            uri = getattr(self, name)
            if uri is not None and urlsplit(uri).scheme not in _SCHEMES:
                msg = f"{name} must start with s3://, http://, https:// or file://"
                raise ValueError(msg)
        for name in ("min_class_recall", "max_regression_per_class"):
            bad = {k: v for k, v in getattr(self, name).items() if not 0 <= v <= 1}
            if bad:
                msg = f"{name} values must lie in [0, 1], got {sorted(bad)}"
                raise ValueError(msg)
        return self

    @property
    def artifact_uri(self) -> str:
        """`model_uri`, which is set once a target is resolved (`for_target`)."""
        if self.model_uri is None:
            raise UsageError("no model_uri: resolve the target first")
        return self.model_uri

    def for_target(self, target: ModelTarget) -> ValidateSettings:
        """These settings with the target's model, digest, endpoint and thresholds (unset ones keep ours)."""
        update: dict[str, Any] = {
            "target": None,
            "model_uri": target.model_uri,
            "card_uri": target.card_uri,
            "expected_sha256": target.sha256,
            "expected_version": target.version,
            "slot": slot_of(target.name, self.namespace),
            "min_class_recall": target.min_class_recall or self.min_class_recall,
            "max_regression_per_class": target.max_regression_per_class or self.max_regression_per_class,
            "champion_sha256": target.champion.sha256 if target.champion is not None else None,
            "champion_version": target.champion.version if target.champion is not None else None,
        }
        if target.endpoint:
            update["s3_endpoint"] = target.endpoint
        for name in (
            "min_accuracy",
            "min_macro_f1",
            "max_p99_ms",
            "max_regression_macro_f1",
            "max_regression_class_recall",
        ):
            if (value := getattr(target, name)) is not None:
                update[name] = value
        # Validated again: a target is input like any flag.
        return type(self).model_validate(self.model_dump() | update)

    def s3_credentials(self) -> tuple[str | None, str | None]:
        """The access and secret key, read from their files when those are set.

        Read at call time rather than at start-up so that a rotated Secret is
        picked up by the next download.
        """
        return (
            _secret(self.s3_access_key_file, self.s3_access_key),
            _secret(self.s3_secret_key_file, self.s3_secret_key),
        )


def _secret(path: Path | None, value: SecretStr | None) -> str | None:
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            # The message names the file, never its content.
            detail = f"cannot read secret file {path}: {exc.strerror or type(exc).__name__}"
            raise UsageError(detail) from None
    return value.get_secret_value() if value is not None else None
