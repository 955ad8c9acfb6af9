"""The LiteRT interpreter wrapper shared by the LiteRT and Edge TPU backends.

Not a backend of its own: `litert` and `edgetpu` open an interpreter their
own way (with or without the delegate) and wrap it here, so neither imports
the other. Float and full-integer models are both handled: an int8/uint8
input is quantized with the tensor's scale and zero point, an integer output
dequantized. The card's `InputTransform`, when it has one, is applied to the
features first: the model was quantized on transformed features, not on the
extractor's.

Batches. A model whose batch dimension is dynamic (``shape_signature`` -1)
is resized when the batch size changes: a resize costs about as much as a
few rows invoked one by one, and a sized batch a small part of invoking its
rows one by one (serve's batch work per window: docs/benchmarks.md). A model with a fixed batch (the
Edge TPU compiler's output) runs in chunks of that batch, the last one
padded.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from vibration_core.modelcard import RuntimeSignature
from vibration_core.modelcard_parts import InputTransform, TensorSpec
from vibration_infer.errors import LoadError, PredictError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import numpy.typing as npt


class Interpreter(Protocol):
    """The part of LiteRT's (and tflite_runtime's) Interpreter used here."""

    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def resize_tensor_input(self, index: int, shape: Sequence[int]) -> None: ...
    def set_tensor(self, index: int, value: npt.NDArray[Any]) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, index: int) -> npt.NDArray[Any]: ...


def open_litert(path: Path, *, threads: int, delegates: Sequence[object] = ()) -> Interpreter:
    """A LiteRT interpreter for `path`, tensors allocated; runtime errors become `LoadError`."""
    try:
        from ai_edge_litert.interpreter import Interpreter as LiteRTInterpreter  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise LoadError(str(path), "LiteRT (ai-edge-litert) is not installed in this image") from exc
    try:
        interpreter: Interpreter = LiteRTInterpreter(
            model_path=str(path), num_threads=threads, experimental_delegates=list(delegates) or None
        )
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError, OSError) as exc:
        raise LoadError(str(path), f"LiteRT refused the model: {_one_line(exc)}") from exc
    return interpreter


class TFLiteBackend:
    """A LiteRT interpreter behind the `Backend` protocol."""

    def __init__(
        self, interpreter: Interpreter, name: str, path: Path, transform: InputTransform | None = None
    ) -> None:
        self._interpreter = interpreter
        self._name = name
        self._transform = transform
        # The interpreter is not thread-safe; an uncontended lock is negligible beside a batch's invoke.
        self._lock = threading.Lock()
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise LoadError(str(path), f"expected one input tensor, found {len(inputs)}")
        self._input = inputs[0]
        self._candidates = [d for d in interpreter.get_output_details() if len(d["shape"]) == 2]  # noqa: PLR2004
        if not self._candidates:
            raise LoadError(str(path), "no 2-D (batch, classes) output tensor")
        signature = [int(v) for v in self._input.get("shape_signature", self._input["shape"])]
        self._dynamic = signature[0] == -1
        self._fixed_batch = int(self._input["shape"][0])
        self._batch = self._fixed_batch
        self._in_scale, self._in_zero = _quantization(self._input)
        self._use(self._candidates[-1])

    def _use(self, output: dict[str, Any]) -> None:
        self._output = output
        self._n_classes = int(output["shape"][-1])
        self._out_scale, self._out_zero = _quantization(output)

    def use_output(self, name: str) -> None:
        """Read the probabilities from the 2-D output tensor `name`, if there is one."""
        for output in self._candidates:
            if output["name"] == name:
                self._use(output)

    @property
    def name(self) -> str:
        """Runtime and device, e.g. ``litert:cpu``."""
        return self._name

    def signature(self) -> RuntimeSignature:
        """The input tensor as LiteRT reports it, and the width of the probability output."""
        shape = self._input.get("shape_signature", self._input["shape"])
        spec = TensorSpec(
            name=str(self._input["name"]),
            shape=tuple(None if int(v) < 0 else int(v) for v in shape),
            dtype=np.dtype(self._input["dtype"]).name,
        )
        return RuntimeSignature(inputs=(spec,), n_classes=self._n_classes)

    def predict_proba(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``(n, n_classes)`` float32 probabilities."""
        n = features.shape[0]
        try:
            values = self._quantize(features if self._transform is None else self._transform.apply(features))
            with self._lock:
                if self._dynamic:
                    return self._run(values, n)
                out = np.empty((n, self._n_classes), dtype=np.float32)
                step = self._fixed_batch
                for start in range(0, n, step):
                    chunk = values[start : start + step]
                    rows = chunk.shape[0]
                    if rows < step:
                        chunk = np.concatenate([chunk, np.zeros((step - rows, chunk.shape[1]), chunk.dtype)])
                    out[start : start + rows] = self._run(chunk, step)[:rows]
                return out
        except (RuntimeError, ValueError) as exc:
            raise PredictError(self._name, _one_line(exc)) from exc

    def _run(self, values: npt.NDArray[Any], n: int) -> npt.NDArray[np.float32]:
        index = int(self._input["index"])
        if self._dynamic and n != self._batch:
            self._interpreter.resize_tensor_input(index, [n, values.shape[1]])
            self._interpreter.allocate_tensors()
            self._batch = n
        self._interpreter.set_tensor(index, values)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(int(self._output["index"]))
        if self._out_scale is None:
            return np.asarray(raw, dtype=np.float32)  # get_tensor already returns a copy
        return (raw.astype(np.float32) - np.float32(self._out_zero)) * np.float32(self._out_scale)

    def _quantize(self, features: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        dtype = np.dtype(self._input["dtype"])
        if self._in_scale is None:
            return np.ascontiguousarray(features, dtype=dtype)
        info = np.iinfo(dtype)
        scaled = np.rint(features / np.float32(self._in_scale)) + np.float32(self._in_zero)
        quantized: npt.NDArray[Any] = np.clip(scaled, info.min, info.max).astype(dtype)
        return quantized


def _quantization(details: dict[str, Any]) -> tuple[float | None, int]:
    """Scale and zero point of an integer tensor; (None, 0) for a float one."""
    if np.dtype(details["dtype"]).kind not in "iu":
        return None, 0
    scale, zero = details.get("quantization", (0.0, 0))
    if not scale:
        return None, 0
    return float(scale), int(zero)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
