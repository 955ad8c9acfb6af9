"""ONNX Runtime: the CPU by default, CUDA or TensorRT when this build of onnxruntime has them.

The probabilities are the model's one float output of rank 2 (skl2onnx with
``zipmap`` off writes a string or int64 label tensor beside it, which is
never computed here: only the probabilities are requested). One intra-op
thread by default: a row of this GBDT is microseconds of work (serve's batch
work per window: docs/benchmarks.md), and more threads only add wake-up
jitter to the p99.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from vibration_core.modelcard import RuntimeSignature
from vibration_core.modelcard_parts import TensorSpec
from vibration_infer.errors import LoadError, PredictError

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

logger = logging.getLogger(__name__)

# Preferred first; only those this onnxruntime build has are asked for.
_PROVIDERS: Final = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_DTYPES: Final = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(string)": "string",
    "tensor(bool)": "bool",
}
# onnxruntime's pybind errors derive from Exception, not RuntimeError.
_ORT_ERRORS: Final = (
    *(
        getattr(ort_state, name)
        for name in (
            "Fail",
            "InvalidArgument",
            "NoSuchFile",
            "NoModel",
            "EngineError",
            "RuntimeException",
            "InvalidProtobuf",
            "ModelLoaded",
            "NotImplemented",
            "InvalidGraph",
            "EPFail",
        )
        if hasattr(ort_state, name)
    ),
    RuntimeError,
    ValueError,
    OSError,
)


_RANK = 2
"""(batch, classes): the rank of a probability output."""


def load(path: Path, *, threads: int = 1) -> OnnxBackend:
    """Open `path` in ONNX Runtime; raises `LoadError` when the runtime refuses it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings would reach the node's log per session
    available = set(ort.get_available_providers())
    providers = [p for p in _PROVIDERS if p in available]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except _ORT_ERRORS as exc:
        raise LoadError(str(path), f"ONNX Runtime refused the model: {_one_line(exc)}") from exc
    backend = OnnxBackend(session, path)
    logger.info("backend_opened", extra={"backend": backend.name, "path": path, "threads": threads})
    return backend


class OnnxBackend:
    """An ONNX Runtime session behind the `Backend` protocol."""

    def __init__(self, session: Any, path: Path) -> None:  # noqa: ANN401 - onnxruntime ships no types
        self._session = session
        self._name = f"onnxruntime:{session.get_providers()[0]}"
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise LoadError(str(path), f"expected one input tensor, found {len(inputs)}")
        self._input_name = str(inputs[0].name)
        outputs = session.get_outputs()
        self._candidates = [o for o in outputs if o.type == "tensor(float)" and len(o.shape) == _RANK]
        if not self._candidates:
            raise LoadError(str(path), "no float output of rank 2 (the class probabilities)")
        self._use(self._candidates[-1])

    def _use(self, output: Any) -> None:  # noqa: ANN401 - onnxruntime's NodeArg
        self._output = output
        width = output.shape[-1]
        self._n_classes = width if isinstance(width, int) else None

    def use_output(self, name: str) -> None:
        """Read the probabilities from the float (batch, classes) output `name`, if there is one."""
        for output in self._candidates:
            if output.name == name:
                self._use(output)

    @property
    def name(self) -> str:
        """``onnxruntime:<execution provider>``."""
        return self._name

    def signature(self) -> RuntimeSignature:
        """The session's input and the width of its probability output."""
        spec = _spec(self._session.get_inputs()[0])
        return RuntimeSignature(inputs=(spec,), n_classes=self._n_classes)

    def predict_proba(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``(n, n_classes)`` float32 probabilities."""
        batch = np.ascontiguousarray(features, dtype=np.float32)
        try:
            (out,) = self._session.run([self._output.name], {self._input_name: batch})
        except _ORT_ERRORS as exc:
            raise PredictError(self._name, _one_line(exc)) from exc
        return np.asarray(out, dtype=np.float32)


def _spec(node: Any) -> TensorSpec:  # noqa: ANN401 - onnxruntime's NodeArg
    shape = tuple(dim if isinstance(dim, int) else None for dim in node.shape)
    return TensorSpec(name=str(node.name), shape=shape, dtype=_DTYPES.get(str(node.type), str(node.type)))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
