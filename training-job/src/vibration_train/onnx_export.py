"""Convert the fitted classifier to ONNX and prove the two agree.

skl2onnx writes a graph with one float32 input ``features`` of shape
``[None, n_features]`` and, with ``zipmap`` off, two plain tensors: the
string labels and the class probabilities in `estimator.classes_` order. The
opsets are capped (`TARGET_OPSET`): skl2onnx never imports higher ones, so
a newer skl2onnx cannot produce a graph the gateways' onnxruntime does not
run. Below the cap it picks its own (ai.onnx 16 and ai.onnx.ml 1 for this
classifier with skl2onnx 1.20; the reference pipeline asks for 13, which
expresses it too). The card's framework string records the opsets the graph
actually imports.

`check_parity` runs the ONNX model in onnxruntime on the whole held-out
split and refuses any label that differs from scikit-learn's or any
probability further than `PROB_TOLERANCE` from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from vibration_core.modelcard_parts import TensorSpec
from vibration_train.errors import ExportError, ParityError

if TYPE_CHECKING:
    import numpy.typing as npt

logger = logging.getLogger(__name__)

INPUT_NAME: Final = "features"
TARGET_OPSET: Final = {"": 17, "ai.onnx.ml": 3}
"""Highest opsets skl2onnx may use; onnxruntime 1.32 runs both."""
PROB_TOLERANCE: Final = 1e-5
"""Largest absolute probability difference between ONNX Runtime and scikit-learn."""

_DTYPES: Final[dict[int, str]] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.STRING: "string",
}


@dataclass(frozen=True)
class OnnxModel:
    """A serialised ONNX model and the signature the model card records."""

    data: bytes
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    """The label tensor, then the probabilities."""
    opsets: dict[str, int]
    """The opset of each domain the graph actually imports."""


@dataclass(frozen=True)
class ParityReport:
    """Outcome of a parity check that passed."""

    total: int
    identical_labels: int
    """Rows with the same label, ties included (`tied_labels`)."""
    max_prob_diff: float
    tied_labels: int = 0
    """Rows whose two best classes tie within the tolerance and whose labels differ."""

    def summary(self) -> str:
        """One line for a person: ``labels 2400/2400 identical, max |dp| = 3.1e-07``."""
        ties = f" ({self.tied_labels} a tie either way)" if self.tied_labels else ""
        figures = f"labels {self.identical_labels}/{self.total} identical{ties}"
        return f"{figures}, max |dp| = {self.max_prob_diff:.2g}"


GRAPH_NAME = "vibration_classifier"
"""The ONNX graph's name, fixed so that an export is a function of the model alone."""


def to_onnx(estimator: Any, n_features: int) -> OnnxModel:  # noqa: ANN401 - any fitted scikit-learn classifier
    """Convert a fitted classifier to ONNX with the pinned opsets and ``zipmap`` off."""
    try:
        proto = convert_sklearn(
            estimator,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options={id(estimator): {"zipmap": False}},
            target_opset=dict(TARGET_OPSET),
        )
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
        raise ExportError("onnx", f"{type(exc).__name__}: {exc}") from exc
    (graph_input,) = proto.graph.input
    outputs = tuple(_tensor_spec(value) for value in proto.graph.output)
    if len(outputs) != 2 or outputs[0].dtype != "string":  # noqa: PLR2004 - label and probabilities
        raise ExportError("onnx", f"expected a string label and a probability output, got {outputs}")
    opsets = {entry.domain or "ai.onnx": int(entry.version) for entry in proto.opset_import}
    # skl2onnx names the graph with a random UUID: the same data and seed would give other
    # bytes, another sha256, and a republish of a rebuilt version would be refused as a conflict.
    proto.graph.name = GRAPH_NAME
    data = proto.SerializeToString()
    logger.info("onnx_exported", extra={"bytes": len(data), "opsets": opsets})
    return OnnxModel(data=data, input=_tensor_spec(graph_input), outputs=outputs, opsets=opsets)


def check_parity(
    estimator: Any,  # noqa: ANN401 - any fitted scikit-learn classifier
    model: OnnxModel,
    x_test: npt.NDArray[np.float32],
) -> ParityReport:
    """Run both models on `x_test`; raise `ParityError` unless they agree."""
    session = ort.InferenceSession(model.data, providers=["CPUExecutionProvider"])
    names = [spec.name for spec in model.outputs]
    onnx_labels, onnx_probs = session.run(names, {model.input.name: np.ascontiguousarray(x_test, np.float32)})
    return compare_outputs(
        np.asarray(onnx_labels).astype(str),
        np.asarray(onnx_probs, dtype=np.float64),
        np.asarray(estimator.predict(x_test)).astype(str),
        np.asarray(estimator.predict_proba(x_test), dtype=np.float64),
    )


def compare_outputs(
    onnx_labels: npt.NDArray[np.str_],
    onnx_probs: npt.NDArray[np.float64],
    sk_labels: npt.NDArray[np.str_],
    sk_probs: npt.NDArray[np.float64],
) -> ParityReport:
    """Hold the ONNX outputs to scikit-learn's; raise `ParityError` unless they agree."""
    same = onnx_labels == sk_labels
    # A row whose two best classes tie (within the tolerance) may go either way in
    # float32 and float64 alike: a different label there is no disagreement.
    top_two = np.sort(sk_probs, axis=1)[:, -2:]
    tied = top_two[:, 1] - top_two[:, 0] <= PROB_TOLERANCE
    identical = int(np.count_nonzero(same | tied))
    diff = np.abs(onnx_probs - sk_probs)
    max_diff = float(diff.max()) if diff.size else 0.0
    total = int(sk_labels.size)
    logger.info("parity_checked", extra={"total": total, "identical": identical, "max_prob_diff": max_diff})
    if identical != total or not max_diff <= PROB_TOLERANCE:
        raise ParityError(total - identical, max_diff, total, PROB_TOLERANCE)
    ties = int(np.count_nonzero(~same & tied))
    return ParityReport(total=total, identical_labels=identical, max_prob_diff=max_diff, tied_labels=ties)


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = _DTYPES.get(tensor.elem_type)
    if dtype is None:
        raise ExportError("onnx", f"tensor {value.name} has unsupported element type {tensor.elem_type}")
    shape = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim)
    return TensorSpec(name=value.name, shape=shape, dtype=dtype)
