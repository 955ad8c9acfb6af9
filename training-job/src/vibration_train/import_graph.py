"""An imported ONNX classifier's graph, read before it runs: its input, its outputs, the classes it states.

A classifier trained elsewhere (the reference pipeline's: scikit-learn's
gradient boosting converted by skl2onnx with ``zipmap`` off) can serve here
when its graph takes what the nodes feed and gives what they read
(`read_graph`, which parses and checks and runs nothing):

- exactly one input: float32, rank 2, ten columns (`FEATURE_NAMES`, in order);
- a label output, an int64 or string tensor with one entry per row, and a
  probabilities output, a float32 tensor ``[N, k]`` with one column per
  class (`import_checks.check_width`: one of the names given per column);
  nothing else.

skl2onnx's default ZipMap output (a sequence of maps, one per row) is refused
with the conversion that avoids it. The ``ai.onnx.ml`` classifier node that
feeds the label output (TreeEnsembleClassifier, LinearClassifier or
SVMClassifier) states its classes in column order (``classlabels_int64s``,
``classlabels_strings``): `read_graph` keeps them as `ImportedGraph.classes`,
and the i-th name given stands for the i-th of them
(`import_checks.integer_names`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import onnx
import onnx.checker

from vibration_core.features import FEATURE_NAMES
from vibration_core.modelcard_parts import TensorSpec
from vibration_train.errors import ModelImportError

if TYPE_CHECKING:
    from collections.abc import Sequence

FEATURES_DTYPE: Final = "float32"
LABEL_DTYPES: Final = ("int64", "string")
PROBABILITIES_DTYPE: Final = "float32"
_ML_DOMAIN: Final = "ai.onnx.ml"
_CLASSIFIERS: Final = frozenset({"TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier"})
_ZIPMAP_FIX: Final = (
    "convert it with zipmap off, e.g. skl2onnx.to_onnx(model, X, options={'zipmap': False}), "
    "which gives the probabilities as one float32 tensor [N, k]"
)


@dataclass(frozen=True)
class ImportedGraph:
    """A parsed ONNX classifier whose signature fits the model contract."""

    source: str
    """The file it came from, for messages and the card."""
    data: bytes
    """Its bytes, unchanged: the artifact, whose sha256 the card records."""
    input: TensorSpec
    label: TensorSpec
    probabilities: TensorSpec
    producer: str
    """``producer_name producer_version`` as the graph states them, e.g. ``skl2onnx 1.20.0``."""
    opsets: dict[str, int]
    """The opset of each domain the graph imports."""
    classes: tuple[int, ...] | tuple[str, ...] | None = None
    """The classes of the probability columns, in order, as the classifier node feeding the label
    output states them (``classlabels_int64s`` or ``classlabels_strings``); None when it states none."""

    def integer_classes(self, k: int) -> tuple[int, ...] | None:
        """The int64 label's value for each of the `k` columns (0..k-1 unless stated); None for strings."""
        if self.label.dtype != "int64":
            return None
        if self.classes is None:
            return tuple(range(k))
        return tuple(int(value) for value in self.classes)

    @property
    def outputs(self) -> tuple[TensorSpec, TensorSpec]:
        """The label output, then the probabilities: the order the card records."""
        return (self.label, self.probabilities)


def read_graph(data: bytes, source: str) -> ImportedGraph:
    """Parse `data` and check its input and outputs; `ModelImportError` names what does not fit."""
    try:
        # The checker parses the bytes first: garbage is a ValueError, a malformed graph a ValidationError.
        onnx.checker.check_model(data)
    except (ValueError, onnx.checker.ValidationError) as exc:
        raise ModelImportError(source, f"is not a valid ONNX model: {exc}") from exc
    proto = onnx.load_model_from_string(data)
    initializers = {tensor.name for tensor in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    label, probabilities = _outputs(source, proto.graph.output)
    producer = f"{proto.producer_name} {proto.producer_version}".strip()
    return ImportedGraph(
        source=source,
        data=data,
        input=_input(source, inputs),
        label=label,
        probabilities=probabilities,
        producer=producer or "an unnamed producer",
        opsets={entry.domain or "ai.onnx": int(entry.version) for entry in proto.opset_import},
        classes=_classes(proto.graph, label),
    )


def describe(spec: TensorSpec) -> str:
    """``'features' float32 [N, 10]``: a tensor as messages name it."""
    dims = ", ".join("N" if dim is None else str(dim) for dim in spec.shape)
    return f"{spec.name!r} {spec.dtype} [{dims}]"


def _input(source: str, inputs: Sequence[onnx.ValueInfoProto]) -> TensorSpec:
    if len(inputs) != 1:
        names = ", ".join(repr(value.name) for value in inputs) or "none"
        raise ModelImportError(
            source, f"has {len(inputs)} inputs ({names}); the nodes feed exactly one, the ten features"
        )
    spec = _tensor(source, inputs[0], "input")
    expected = f"expected {FEATURES_DTYPE} [N, {len(FEATURE_NAMES)}], the features {', '.join(FEATURE_NAMES)}"
    if spec.dtype != FEATURES_DTYPE:
        raise ModelImportError(source, f"input {describe(spec)} is {spec.dtype}; {expected}")
    if len(spec.shape) != 2:  # noqa: PLR2004 - rows by features
        raise ModelImportError(source, f"input {describe(spec)} has rank {len(spec.shape)}; {expected}")
    if spec.shape[-1] != len(FEATURE_NAMES):
        columns = "a free number of" if spec.shape[-1] is None else str(spec.shape[-1])
        raise ModelImportError(source, f"input {describe(spec)} takes {columns} columns; {expected}")
    if spec.shape[0] is not None:
        raise ModelImportError(
            source,
            f"input {describe(spec)} takes a fixed batch of {spec.shape[0]}; the nodes run batches "
            f"of any size: export it again with a free batch, e.g. skl2onnx's FloatTensorType([None, "
            f"{len(FEATURE_NAMES)}])",
        )
    return spec


def _outputs(source: str, outputs: Sequence[onnx.ValueInfoProto]) -> tuple[TensorSpec, TensorSpec]:
    for value in outputs:
        if value.type.WhichOneof("value") in {"sequence_type", "map_type"}:
            raise ModelImportError(
                source, f"output {value.name!r} is a ZipMap (a sequence of maps, one per row); {_ZIPMAP_FIX}"
            )
    specs = [_tensor(source, value, "output") for value in outputs]
    labels = [s for s in specs if s.dtype in LABEL_DTYPES and len(s.shape) == 1]
    probabilities = [s for s in specs if s.dtype == PROBABILITIES_DTYPE and len(s.shape) == 2]  # noqa: PLR2004
    listed = "; its outputs: " + (", ".join(describe(s) for s in specs) or "none")
    if not probabilities:
        raise ModelImportError(
            source, f"has no probabilities output (a {PROBABILITIES_DTYPE} tensor [N, k]){listed}"
        )
    if not labels:
        raise ModelImportError(source, f"has no label output (an int64 or string tensor [N]){listed}")
    if len(specs) != 2:  # noqa: PLR2004 - one label output, one probabilities output
        raise ModelImportError(
            source, f"has {len(specs)} outputs; expected a label and a probabilities output only{listed}"
        )
    return labels[0], probabilities[0]


def _classes(graph: onnx.GraphProto, label: TensorSpec) -> tuple[int, ...] | tuple[str, ...] | None:
    """The classes stated by the classifier node whose label output (through Identity nodes) is `label`."""
    producers = {output: node for node in graph.node for output in node.output}
    name, node = label.name, producers.get(label.name)
    while node is not None and node.op_type == "Identity" and node.domain in {"", "ai.onnx"}:
        name, node = node.input[0], producers.get(node.input[0])
    # A classifier's first output is its label, the second its scores.
    if (
        node is None
        or node.domain != _ML_DOMAIN
        or node.op_type not in _CLASSIFIERS
        or node.output[0] != name
    ):
        return None
    attributes = {attribute.name: attribute for attribute in node.attribute}
    if label.dtype == "int64" and "classlabels_int64s" in attributes:
        return tuple(int(value) for value in attributes["classlabels_int64s"].ints)
    if label.dtype == "string" and "classlabels_strings" in attributes:
        return tuple(value.decode() for value in attributes["classlabels_strings"].strings)
    return None


def _tensor(source: str, value: onnx.ValueInfoProto, role: str) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        what = kind or "value of no type"
        raise ModelImportError(source, f"{role} {value.name!r} is a {what}, not a tensor")
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        raise ModelImportError(source, f"{role} {value.name!r} does not state its shape")
    name = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
    dtype = {"float": "float32", "double": "float64"}.get(name, name)
    shape = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim)
    return TensorSpec(name=value.name, shape=shape, dtype=dtype)
