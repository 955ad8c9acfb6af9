"""The model card: what a model promises, and the checks that hold it to that.

The card travels next to the artifact (``modelcard.json`` beside
``model.onnx``). Serving and validation read the class labels, the feature
order, the input tensor and the signal it was trained for from the card and
from nowhere else, and refuse a model whose runtime signature or whose input
signal does not match it.

A TFLite or Edge TPU model may expect its features transformed before they
are quantized into its int8 input tensor (`InputTransform`, the card's
``input_transform``): quantizing the ten raw features, whose ranges differ by
orders of magnitude, with one scale and zero point would erase the small
ones. `InputTransform.apply` is the one implementation of that transform,
called by training to measure the model and by serving to feed it. An ONNX
card has none: its scaling is inside the graph. A card without the field
serialises without it, so readers that predate it still accept ONNX cards;
they refuse a card that has it (extra fields are forbidden) rather than feed
its model untransformed features.

Longer than the others: it is the whole model card contract, each field with
the description docs/contracts.md is generated from, and the checks that
refuse a card.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vibration_core.api import VERSION_PATTERN
from vibration_core.errors import ContractMismatchError, ModelCardError
from vibration_core.features import EXTRACTOR_VERSION, FEATURE_NAMES
from vibration_core.reference import ReferenceDistribution
from vibration_core.units import Unit

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import numpy.typing as npt

CARD_FILENAME = "modelcard.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

ModelFormat = Literal["onnx", "tflite", "edgetpu"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Artifact(_Frozen):
    """The model file this card describes."""

    filename: str = Field(description="File name of the artifact next to the card, e.g. model.onnx.")
    sha256: str = Field(pattern=_SHA256.pattern, description="Lower-case hex sha256 of the artifact's bytes.")
    size_bytes: int = Field(ge=1, description="Size of the artifact in bytes.")


class Signal(_Frozen):
    """The raw signal the model was trained on; other inputs are refused."""

    sample_rate: float = Field(gt=0, description="Sample rate of the training windows, Hz.")
    window_length: int = Field(ge=2, description="Samples per window.")
    unit: Unit = Field(description="Physical unit of the samples: g or m/s^2 (vibration_core.units).")


class FeatureSpec(_Frozen):
    """The model's input features, in input order."""

    names: tuple[str, ...] = Field(description="Feature names in the model's input column order.")
    extractor_version: str = Field(description="Version of vibration_core.features that computed them.")


class TensorSpec(_Frozen):
    """Name, shape (None for a free dimension) and dtype of one tensor."""

    name: str = Field(description="Tensor name in the graph.")
    shape: tuple[int | None, ...] = Field(description="Dimensions; null for a free one (the batch).")
    dtype: str = Field(description="Element type, e.g. float32, int64, string.")


class InputTransform(_Frozen):
    """Per-feature transform from the extractor's features to the model's input, in feature order.

    Feature ``i`` becomes ``(g(x) - offset[i]) / scale[i]``, where ``g(x)`` is
    ``ln(max(x, log_floor[i]))`` when ``log_floor[i]`` is set and ``x`` when it
    is null. The result is what the model's input tensor holds before its own
    quantization (scale and zero point of an int8 tensor).
    """

    log_floor: tuple[float | None, ...] = Field(
        description="Per feature: null keeps it as it is; a positive floor takes ln(max(x, floor)) first."
    )
    offset: tuple[float, ...] = Field(description="Per feature: subtracted after the log (a mean).")
    scale: tuple[float, ...] = Field(description="Per feature: divides the result, > 0 (a std deviation).")

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if not len(self.log_floor) == len(self.offset) == len(self.scale):
            msg = (
                f"log_floor, offset and scale must have one entry per feature, got "
                f"{len(self.log_floor)}, {len(self.offset)} and {len(self.scale)}"
            )
            raise ValueError(msg)
        if not all(math.isfinite(v) for v in (*self.offset, *self.scale)):
            msg = "offset and scale must be finite"
            raise ValueError(msg)
        if not all(v > 0 for v in self.scale):
            msg = f"scale must be > 0 for every feature, got {list(self.scale)}"
            raise ValueError(msg)
        if not all(v is None or (math.isfinite(v) and v > 0) for v in self.log_floor):
            msg = f"log_floor must be null or a finite number > 0, got {list(self.log_floor)}"
            raise ValueError(msg)
        return self

    def apply(self, features: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Transform a ``(n, features)`` batch into the model's input, float32; a new array."""
        values = np.array(features, dtype=np.float64)
        logged = [i for i, floor in enumerate(self.log_floor) if floor is not None]
        if logged:
            floors = np.array([self.log_floor[i] for i in logged], dtype=np.float64)
            values[:, logged] = np.log(np.maximum(values[:, logged], floors))
        values -= np.array(self.offset, dtype=np.float64)
        values /= np.array(self.scale, dtype=np.float64)
        return values.astype(np.float32)


class ClassMetrics(_Frozen):
    """Held-out figures for one class."""

    precision: float = Field(ge=0, le=1)
    recall: float = Field(ge=0, le=1)
    f1: float = Field(ge=0, le=1)
    support: int = Field(ge=0)


class HeldOut(_Frozen):
    """How the held-out windows were chosen, and the model's accuracy per recording on them.

    A recording is one machine's windows of one class. Its windows are
    near-duplicates, so the split keeps them apart from their neighbours:
    ``grouped`` holds out whole machines, ``time`` the latest windows of each
    recording.
    """

    split: Literal["grouped", "time", "external"] = Field(
        description=(
            "grouped: whole machines held out, none of them trained the model; "
            "time: the latest windows of each machine and class held out (too few machines to group); "
            "external: a model trained elsewhere (vibration-train import), measured on every window given."
        )
    )
    machines: tuple[str, ...] = Field(
        description="Machines with held-out windows, sorted; empty when the training data named none."
    )
    recordings: int = Field(ge=1, description="Held-out recordings: distinct (machine, label) pairs.")
    recording_accuracy: float = Field(
        ge=0,
        le=1,
        description=(
            "Share of held-out recordings whose majority prediction over their windows is their label "
            "(a tie counts as wrong)."
        ),
    )


class Metrics(_Frozen):
    """Held-out figures of the model."""

    accuracy: float = Field(ge=0, le=1, description="Share of held-out windows predicted right.")
    macro_f1: float = Field(ge=0, le=1, description="Mean F1 over the classes.")
    weighted_f1: float = Field(ge=0, le=1, description="F1 weighted by each class's support.")
    per_class: dict[str, ClassMetrics] = Field(description="Precision, recall, F1 and support per label.")
    test_samples: int = Field(ge=1, description="Windows in the held-out split.")
    # Optional so that serving, rollback and the registry still read the cards published before it
    # (a node's last good version among them); every card trained since has it.
    held_out: HeldOut | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description=(
            "How the held-out split was made, and accuracy per recording; absent on cards written "
            "before it was recorded, whose windows were split one by one (figures inflated by "
            "near-duplicate neighbours in training)."
        ),
    )


class TrainingData(_Frozen):
    """Summary of the data the model was trained on."""

    samples: int = Field(ge=1, description="Windows used for training and testing together.")
    start: datetime = Field(description="Timestamp of the earliest window.")
    end: datetime = Field(description="Timestamp of the latest window.")
    machines: tuple[str, ...] = Field(description="Machines the windows came from.")
    class_counts: dict[str, int] = Field(description="Windows per class label.")


class ModelCard(_Frozen):
    """Everything a consumer may rely on about one model version."""

    schema_version: Literal[1] = Field(default=1, description="Version of this card's schema.")
    model_id: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="Model id, a DNS label."
    )
    version: str = Field(pattern=VERSION_PATTERN, description="Model version, e.g. v3.")
    framework: str = Field(description="What trained it, e.g. sklearn-gradient-boosting 1.9.1.")
    format: ModelFormat = Field(description="Artifact format: onnx, tflite or edgetpu.")
    created: datetime = Field(description="When the card was written (RFC 3339).")
    artifact: Artifact = Field(description="The model file.")
    labels: tuple[str, ...] = Field(min_length=2, description="Class labels in the model's output order.")
    features: FeatureSpec = Field(description="Input features and the extractor version.")
    signal: Signal = Field(description="Sample rate, window length and unit the model was trained for.")
    input: TensorSpec = Field(description="The input tensor.")
    outputs: tuple[TensorSpec, ...] = Field(
        min_length=1, description="Output tensors; the last holds probabilities."
    )
    input_transform: InputTransform | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description=(
            "Transform applied to the features before the input tensor (TFLite and Edge TPU only); "
            "absent: the features go in as extracted."
        ),
    )
    training: TrainingData = Field(description="Summary of the training data.")
    metrics: Metrics = Field(description="Held-out figures.")
    reference: ReferenceDistribution = Field(description="Training distribution, for drift checks.")
    hyperparameters: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="Training settings, for the record."
    )

    @model_validator(mode="before")
    @classmethod
    def _extractor_first(cls, data: object) -> object:
        # Checked before any field: a card of another extractor major version
        # (which also predates fields such as signal.unit) is refused for that
        # reason, naming both versions, not for the first field it lacks.
        features = data.get("features") if isinstance(data, dict) else None
        version = features.get("extractor_version") if isinstance(features, dict) else None
        if isinstance(version, str) and (problem := extractor_problem(version)):
            raise ValueError(problem)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.labels)) != len(self.labels):
            msg = f"labels must be unique, got {list(self.labels)}"
            raise ValueError(msg)
        if "" in self.labels:  # a prediction names its class: an empty name is no answer
            msg = f"labels must not be empty strings, got {list(self.labels)}"
            raise ValueError(msg)
        if set(self.metrics.per_class) != set(self.labels):
            msg = (
                f"metrics.per_class covers {sorted(self.metrics.per_class)}, labels are {sorted(self.labels)}"
            )
            raise ValueError(msg)
        if tuple(self.reference.class_shares) != self.labels:
            msg = "reference.class_shares must list the labels in output order"
            raise ValueError(msg)
        if tuple(self.reference.feature_quantiles) != self.features.names:
            msg = "reference.feature_quantiles must list the features in input order"
            raise ValueError(msg)
        if self.input.shape[-1:] != (len(self.features.names),):
            msg = (
                f"input shape {self.input.shape} does not end in the feature count {len(self.features.names)}"
            )
            raise ValueError(msg)
        if self.input_transform is not None:
            if self.format == "onnx":
                msg = "input_transform must be absent for an ONNX model (its scaling is inside the graph)"
                raise ValueError(msg)
            if len(self.input_transform.offset) != len(self.features.names):
                msg = (
                    f"input_transform has {len(self.input_transform.offset)} entries, "
                    f"the features are {len(self.features.names)}"
                )
                raise ValueError(msg)
        return self

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<bytes>") -> ModelCard:
        """Parse a card, naming the first field that is wrong."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ModelCardError(source, _first_error(exc)) from exc

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """Read a card from a JSON file."""
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ModelCardError(str(path), f"cannot be read: {exc.strerror or exc}") from exc
        return cls.from_json(text, source=str(path))

    def to_json(self) -> str:
        """Serialise the card as indented JSON with a trailing newline."""
        return self.model_dump_json(indent=2) + "\n"

    def save(self, path: Path) -> None:
        """Write the card as JSON, atomically (a reader never sees half a card)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "card"
    return f"{where}: {first['msg']} ({exc.error_count()} error(s) in all)"


def sha256_file(path: Path) -> str:
    """Return the lower-case hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class RuntimeSignature:
    """What a loaded model reports about itself, from whichever runtime."""

    inputs: Sequence[TensorSpec]
    n_classes: int | None
    """Width of the probability output, None when the runtime cannot tell."""


def check_extractor(card: ModelCard) -> None:
    """Refuse a card whose features this extractor does not compute."""
    if card.features.names != FEATURE_NAMES:
        raise ContractMismatchError("features.names", FEATURE_NAMES, card.features.names)
    if problem := extractor_problem(card.features.extractor_version):
        raise ContractMismatchError(
            "features.extractor_version", EXTRACTOR_VERSION, card.features.extractor_version, hint=problem
        )


def extractor_problem(version: str) -> str | None:
    """Why features of extractor `version` are not this extractor's, None when they are."""
    # A major version changes what a feature means (2.0.0 made kurtosis Pearson,
    # 3 more than 1.x's excess kurtosis); minor and patch versions never do.
    if version.split(".", 1)[0] == EXTRACTOR_VERSION.split(".", 1)[0]:
        return None
    return (
        f"the model was trained on features of extractor {version}, this extractor is "
        f"{EXTRACTOR_VERSION} and computes them differently; retrain it, or import it again with "
        "`vibration-train import` if it was trained on the reference pipeline's formulas"
    )


def check_signature(card: ModelCard, signature: RuntimeSignature) -> None:
    """Refuse a loaded model whose inputs or outputs differ from the card."""
    if len(signature.inputs) != 1:
        raise ContractMismatchError("input count", 1, len(signature.inputs))
    actual = signature.inputs[0]
    if actual.name != card.input.name:
        raise ContractMismatchError("input name", card.input.name, actual.name)
    if actual.dtype != card.input.dtype:
        raise ContractMismatchError("input dtype", card.input.dtype, actual.dtype)
    if len(actual.shape) != len(card.input.shape) or actual.shape[-1] != card.input.shape[-1]:
        raise ContractMismatchError("input shape", card.input.shape, actual.shape)
    if signature.n_classes is not None and signature.n_classes != len(card.labels):
        raise ContractMismatchError("class count", len(card.labels), signature.n_classes)


def check_signal(card: ModelCard, sample_rate: float, window_length: int) -> None:
    """Refuse windows of another sample rate or length than the model's."""
    if not math.isclose(sample_rate, card.signal.sample_rate, rel_tol=1e-9):
        raise ContractMismatchError("signal.sample_rate", card.signal.sample_rate, sample_rate)
    if window_length != card.signal.window_length:
        raise ContractMismatchError("signal.window_length", card.signal.window_length, window_length)


def check_artifact(card: ModelCard, path: Path) -> None:
    """Refuse an artifact whose bytes are not the ones the card names."""
    actual = sha256_file(path)
    if actual != card.artifact.sha256:
        raise ContractMismatchError("artifact.sha256", card.artifact.sha256, actual)
