"""The model card's parts: artifact, signal, features, tensors, input transform, metrics, training data.

Each field carries the description docs/contracts.md is generated from;
`vibration_core.modelcard` assembles the parts into the card and checks them
against each other.

A TFLite or Edge TPU model may expect its features transformed before they
are quantized into its int8 input tensor (`InputTransform`, the card's
``input_transform``): quantizing the ten raw features, whose ranges differ by
orders of magnitude, with one scale and zero point would erase the small
ones. `InputTransform.apply` is the one implementation of that transform,
called by training to measure the model and by serving to feed it. An ONNX
card has none: its scaling is inside the graph.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vibration_core.units import Unit

if TYPE_CHECKING:
    import numpy.typing as npt

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Frozen(BaseModel):
    """The base of the card and its parts: unknown fields refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Artifact(Frozen):
    """The model file this card describes."""

    filename: str = Field(description="File name of the artifact next to the card, e.g. model.onnx.")
    sha256: str = Field(pattern=_SHA256.pattern, description="Lower-case hex sha256 of the artifact's bytes.")
    size_bytes: int = Field(ge=1, description="Size of the artifact in bytes.")


class Signal(Frozen):
    """The raw signal the model was trained on; other inputs are refused."""

    sample_rate: float = Field(gt=0, description="Sample rate of the training windows, Hz.")
    window_length: int = Field(ge=2, description="Samples per window.")
    unit: Unit = Field(description="Physical unit of the samples: g or m/s^2 (vibration_core.units).")


class FeatureSpec(Frozen):
    """The model's input features, in input order."""

    names: tuple[str, ...] = Field(description="Feature names in the model's input column order.")
    extractor_version: str = Field(description="Version of vibration_core.features that computed them.")


class TensorSpec(Frozen):
    """Name, shape (None for a free dimension) and dtype of one tensor."""

    name: str = Field(description="Tensor name in the graph.")
    shape: tuple[int | None, ...] = Field(description="Dimensions; null for a free one (the batch).")
    dtype: str = Field(description="Element type, e.g. float32, int64, string.")


class InputTransform(Frozen):
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


class ClassMetrics(Frozen):
    """Held-out figures for one class."""

    precision: float = Field(ge=0, le=1)
    recall: float = Field(ge=0, le=1)
    f1: float = Field(ge=0, le=1)
    support: int = Field(ge=0)


class HeldOut(Frozen):
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


class Metrics(Frozen):
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


class TrainingData(Frozen):
    """Summary of the data the model was trained on."""

    samples: int = Field(ge=1, description="Windows used for training and testing together.")
    start: datetime = Field(description="Timestamp of the earliest window.")
    end: datetime = Field(description="Timestamp of the latest window.")
    machines: tuple[str, ...] = Field(description="Machines the windows came from.")
    class_counts: dict[str, int] = Field(description="Windows per class label.")
