"""The node target: which model one node should serve, and the bar it must pass there.

The operator writes it, as ``target.json``, into a ConfigMap per node and
VibrationModel, mounted into the serving pod. The init container
(``vibration-infer validate --target FILE``) validates it before the pod
serves; the serve container watches the same file and hot-swaps to each new
content that passes the same validation. One model on both sides, so the
writer and the readers cannot disagree about a field.

`name` is the VibrationModel's name: the node cache keeps the last good
version per name as well as per model id, so a pod whose target fails (or
cannot be fetched while the uplink is down) still knows what it served last,
before it has seen any card.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vibration_core.errors import TargetError
from vibration_core.status import VersionRef

if TYPE_CHECKING:
    from pathlib import Path

    from vibration_core.spec import VibrationModelSpec

TARGET_FILENAME: Final = "target.json"
MAX_TARGET_BYTES: Final = 64 * 1024
"""A target file is a few hundred bytes; anything larger is refused unread."""

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SHA256 = r"^[0-9a-f]{64}$"


class ShadowPolicy(BaseModel):
    """How long a candidate shadows the serving model on live windows, and the agreement it needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: int = Field(ge=1, description="Live windows to count.")
    min_agreement: float = Field(ge=0, le=1, description="Lowest overall agreement.")
    min_class_agreement: float = Field(
        ge=0, le=1, description="Lowest agreement per class the champion predicted."
    )
    min_class_windows: int = Field(ge=1, description="Fewer windows of a class: shown, not judged.")


class ModelTarget(BaseModel):
    """What one node should serve, in full: the content of ``target.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_DNS_LABEL, max_length=63, description="The VibrationModel's name.")
    version: str = Field(min_length=1, max_length=63, description="The model version.")
    model_uri: str = Field(description="The artifact: s3://, http(s):// or file:// URI.")
    sha256: str | None = Field(
        default=None,
        pattern=_SHA256,
        description="The artifact's digest; None only for a spec that says the artifact is unverified.",
    )
    card_uri: str | None = Field(default=None, description="The card; modelcard.json beside the artifact.")
    endpoint: str | None = Field(default=None, description="S3 endpoint of the artifact, if not the pod's.")
    min_accuracy: float | None = Field(default=None, ge=0, le=1, description="Lowest accuracy that passes.")
    min_macro_f1: float | None = Field(default=None, ge=0, le=1, description="Lowest macro F1 that passes.")
    min_class_recall: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="Lowest recall per class label."
    )
    max_p99_ms: float | None = Field(default=None, gt=0, description="Highest p99 latency per window, ms.")
    max_regression_macro_f1: float | None = Field(
        default=None, ge=0, le=1, description="Allowed fall of macro F1 below the champion's; None: default."
    )
    max_regression_class_recall: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Allowed fall of a class recall below the champion's; None: default.",
    )
    max_regression_per_class: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="Per-class overrides of max_regression_class_recall."
    )
    champion: VersionRef | None = Field(
        default=None,
        description="The version the VibrationModel serves (its active one) when that is not this target: "
        "the candidate is compared with it on the node. None for the active version itself.",
    )
    shadow: ShadowPolicy | None = Field(
        default=None, description="Shadow the champion on live windows after validation; None: no shadow."
    )

    @classmethod
    def from_spec(
        cls, name: str, spec: VibrationModelSpec, champion: VersionRef | None = None
    ) -> ModelTarget:
        """The spec's version with its own bar: thresholds travel with the version, not the pod."""
        validation = spec.validation
        regression = validation.max_regression
        return cls(
            name=name,
            version=spec.version,
            sha256=spec.artifact.sha256,
            model_uri=spec.artifact.uri,
            endpoint=spec.artifact.endpoint,
            min_accuracy=validation.min_accuracy,
            min_macro_f1=validation.min_macro_f1,
            min_class_recall=dict(validation.min_class_recall),
            max_p99_ms=validation.max_p99_latency_ms,
            max_regression_macro_f1=regression.macro_f1,
            max_regression_class_recall=regression.class_recall,
            max_regression_per_class=dict(regression.per_class),
            champion=champion,
            shadow=None
            if champion is None or spec.rollout.shadow is None
            else ShadowPolicy.model_validate(spec.rollout.shadow.model_dump()),
        )

    def as_active(self) -> ModelTarget:
        """This target as the VibrationModel's active version: held to no champion, no shadow run."""
        return self.model_copy(update={"champion": None, "shadow": None})

    @property
    def ref(self) -> VersionRef:
        """Version and digest."""
        return VersionRef(version=self.version, sha256=self.sha256)

    @property
    def short(self) -> str:
        """Version and the digest's first 12 characters, for messages."""
        return f"{self.version} ({self.sha256[:12] if self.sha256 else 'unverified'})"


def parse_target(data: bytes, source: str) -> ModelTarget:
    """A target from the bytes of a target file; `TargetError` names the first wrong field."""
    if len(data) > MAX_TARGET_BYTES:
        raise TargetError(source, f"{len(data)} bytes, more than the {MAX_TARGET_BYTES} a target may have")
    try:
        return ModelTarget.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise TargetError(source, f"{where}: {first['msg']}") from None


def load_target(path: Path) -> ModelTarget:
    """Read and parse a target file; `TargetError` says what was wrong with it."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TARGET_BYTES + 1)
    except OSError as exc:
        raise TargetError(str(path), f"cannot read: {exc.strerror or type(exc).__name__}") from None
    return parse_target(data, str(path))
