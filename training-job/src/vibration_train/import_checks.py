"""What an imported ONNX classifier must be: its graph, read before it runs, and what its outputs say.

A classifier trained elsewhere (the reference pipeline's: scikit-learn's
gradient boosting converted by skl2onnx with ``zipmap`` off) can serve here
when its graph takes what the nodes feed and gives what they read
(`read_graph`, which parses and checks and runs nothing):

- exactly one input: float32, rank 2, ten columns (`FEATURE_NAMES`, in order);
- a label output, an int64 or string tensor with one entry per row, and a
  probabilities output, a float32 tensor ``[N, k]`` with one column per
  class (`check_width`: one of the names given per column); nothing else.

skl2onnx's default ZipMap output (a sequence of maps, one per row) is refused
with the conversion that avoids it. Once the model has run, `decode_labels`
turns its label output into names: an int64 label ``i`` is the i-th name, a
string label must be one of them. Serving reads only the probabilities and
names their columns with the card's labels, so the label output is held to
the largest probability of every row (ties aside): that proves the names
were given in column order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import onnx
import onnx.checker

from vibration_core.features import FEATURE_NAMES
from vibration_core.modelcard import TensorSpec
from vibration_train.errors import ModelImportError
from vibration_train.onnx_export import PROB_TOLERANCE

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

FEATURES_DTYPE: Final = "float32"
LABEL_DTYPES: Final = ("int64", "string")
PROBABILITIES_DTYPE: Final = "float32"
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
    )


def check_labels(labels: Sequence[str], source: str) -> tuple[str, ...]:
    """The class names, stripped; refused when empty, repeated or fewer than two."""
    names = tuple(label.strip() for label in labels)
    if len(names) < 2 or not all(names):  # noqa: PLR2004 - a classifier has two classes at least
        raise ModelImportError(
            source, f"--labels must name at least 2 classes, none empty; got {list(names)}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ModelImportError(source, f"--labels names {', '.join(map(repr, repeated))} more than once")
    return names


def check_width(graph: ImportedGraph, labels: Sequence[str]) -> None:
    """Refuse labels that do not give each probability column a name (when the graph states the width)."""
    width = graph.probabilities.shape[-1]
    if width is not None and width != len(labels):
        raise ModelImportError(
            graph.source,
            f"--labels names {len(labels)} classes ({', '.join(labels)}), but the probabilities output "
            f"{graph.probabilities.name!r} has {width} columns: give one label per column, in column order",
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


def decode_labels(
    graph: ImportedGraph,
    raw_labels: npt.NDArray[np.generic],
    probabilities: npt.NDArray[np.float32],
    labels: Sequence[str],
) -> npt.NDArray[np.str_]:
    """The model's label of each row as a name; refused unless the names fit the outputs."""
    n, k = int(probabilities.shape[0]), len(labels)
    if probabilities.shape != (n, k) or raw_labels.shape != (n,):
        raise ModelImportError(
            graph.source,
            f"gave labels of shape {raw_labels.shape} and probabilities of shape {probabilities.shape}; "
            f"expected ({n},) and ({n}, {k}), one column per --labels entry",
        )
    names = np.asarray(labels)
    if raw_labels.dtype.kind in "iu":
        values = raw_labels.astype(np.int64)
        outside = (values < 0) | (values >= k)
        if outside.any():
            shown = ", ".join(str(v) for v in sorted(set(values[outside].tolist()))[:10])
            raise ModelImportError(
                graph.source,
                f"label output {graph.label.name!r} holds {shown}, outside 0..{k - 1} "
                f"(in {int(outside.sum())} of {n} rows): label i means the i-th of the {k} --labels, "
                "so its classes must be numbered from 0",
            )
        predicted = names[values]
        remedy = "an int64 label i must be the index of its probability column, and here it is not"
    else:
        predicted = raw_labels.astype(str)
        unknown = sorted(set(predicted.tolist()) - set(labels))
        if unknown:
            raise ModelImportError(
                graph.source,
                f"label output {graph.label.name!r} holds {', '.join(map(repr, unknown))}, which --labels "
                f"({', '.join(labels)}) does not name",
            )
        remedy = "give --labels in the order of the probability columns (scikit-learn's classes_ order)"
    _check_column_order(graph, predicted, probabilities, names, remedy)
    return predicted


def _check_column_order(
    graph: ImportedGraph,
    predicted: npt.NDArray[np.str_],
    probabilities: npt.NDArray[np.float32],
    names: npt.NDArray[np.str_],
    remedy: str,
) -> None:
    best = probabilities.argmax(axis=1)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    tied = top_two[:, 1] - top_two[:, 0] <= PROB_TOLERANCE
    wrong = (predicted != names[best]) & ~tied
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        said, column = str(predicted[row]), int(best[row])
        raise ModelImportError(
            graph.source,
            f"its label output and its largest probability disagree in {int(wrong.sum())} of "
            f"{predicted.size} rows (row {row}: label {said!r}, largest probability in column {column}, "
            f"which --labels calls {str(names[column])!r}): {remedy}",
        )
