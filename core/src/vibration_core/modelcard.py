"""The model card: what a model promises, and the checks that hold it to that.

The card travels next to the artifact (``modelcard.json`` beside
``model.onnx``). Serving and validation read the class labels, the feature
order, the input tensor and the signal it was trained for from the card and
from nowhere else, and refuse a model whose runtime signature or whose input
signal does not match it. Its parts, each field with its description, are in
`vibration_core.modelcard_parts`; here are the card, the rules that hold its
parts together, reading and writing it, and the checks that refuse a model.

A card without ``input_transform`` serialises without it, so readers that
predate that field still accept ONNX cards; they refuse a card that has it
(extra fields are forbidden) rather than feed its model untransformed
features.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, ValidationError, model_validator

from vibration_core.api import VERSION_PATTERN
from vibration_core.errors import ContractMismatchError, ModelCardError
from vibration_core.features import EXTRACTOR_VERSION, FEATURE_NAMES
from vibration_core.modelcard_parts import (
    Artifact,
    FeatureSpec,
    Frozen,
    InputTransform,
    Metrics,
    Signal,
    TensorSpec,
    TrainingData,
)
from vibration_core.reference import ReferenceDistribution

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

CARD_FILENAME = "modelcard.json"

ModelFormat = Literal["onnx", "tflite", "edgetpu"]


class ModelCard(Frozen):
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
