"""TFLite models written as flatbuffers with LiteRT's schema module, without TensorFlow.

A fully-connected layer and a softmax, float32 or full-integer, so the LiteRT
and Edge TPU paths run for real in tests; the full-integer one takes
transformed features, as the training job's INT8 path makes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import flatbuffers  # type: ignore[import-untyped] # ships no types
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from vibration_core.modelcard_parts import TensorSpec
from vibration_testkit.cards import for_artifact

if TYPE_CHECKING:
    from vibration_core.modelcard import ModelCard


def build_tflite(
    weights: np.ndarray,
    bias: np.ndarray,
    *,
    dynamic: bool = True,
    int8: tuple[float, int, float, int] | None = None,
) -> bytes:
    """A ``softmax(x @ weights.T + bias)`` model, float32 or int8.

    `int8` is (input scale, input zero point, logit scale, logit zero point).
    """
    k, n = weights.shape
    buffers = [tfl.BufferT()]

    def buffer(array: np.ndarray) -> int:
        entry = tfl.BufferT()
        entry.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8).tolist()
        buffers.append(entry)
        return len(buffers) - 1

    def quant(scale: float, zero: int) -> Any:
        params = tfl.QuantizationParametersT()
        params.scale, params.zeroPoint = [float(scale)], [int(zero)]
        return params

    def tensor(name: str, shape: list[int], kind: int, buf: int = 0, q: Any = None) -> Any:
        entry = tfl.TensorT()
        entry.name, entry.shape, entry.type, entry.buffer = name, shape, kind, buf
        if dynamic and name in {"features", "logits", "probabilities"}:
            entry.shapeSignature = [-1, *shape[1:]]
        if q is not None:
            entry.quantization = q
        return entry

    if int8 is None:
        tensors = [
            tensor("features", [1, n], tfl.TensorType.FLOAT32),
            tensor("w", [k, n], tfl.TensorType.FLOAT32, buffer(weights.astype(np.float32))),
            tensor("b", [k], tfl.TensorType.FLOAT32, buffer(bias.astype(np.float32))),
            tensor("logits", [1, k], tfl.TensorType.FLOAT32),
            tensor("probabilities", [1, k], tfl.TensorType.FLOAT32),
        ]
    else:
        in_scale, in_zero, logit_scale, logit_zero = int8
        w_scale = float(np.abs(weights).max() / 127)
        w_q = np.clip(np.rint(weights / w_scale), -127, 127).astype(np.int8)
        b_q = np.rint(bias / (in_scale * w_scale)).astype(np.int32)
        tensors = [
            tensor("features", [1, n], tfl.TensorType.INT8, q=quant(in_scale, in_zero)),
            tensor("w", [k, n], tfl.TensorType.INT8, buffer(w_q), quant(w_scale, 0)),
            tensor("b", [k], tfl.TensorType.INT32, buffer(b_q), quant(in_scale * w_scale, 0)),
            tensor("logits", [1, k], tfl.TensorType.INT8, q=quant(logit_scale, logit_zero)),
            tensor("probabilities", [1, k], tfl.TensorType.INT8, q=quant(1 / 256, -128)),
        ]
    operators, codes = [], []
    for index, (code, options_type, options, inputs, outputs) in enumerate(
        (
            (
                tfl.BuiltinOperator.FULLY_CONNECTED,
                tfl.BuiltinOptions.FullyConnectedOptions,
                tfl.FullyConnectedOptionsT(),
                [0, 1, 2],
                [3],
            ),
            (tfl.BuiltinOperator.SOFTMAX, tfl.BuiltinOptions.SoftmaxOptions, tfl.SoftmaxOptionsT(), [3], [4]),
        )
    ):
        if code == tfl.BuiltinOperator.SOFTMAX:
            options.beta = 1.0
        op = tfl.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = index, inputs, outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        operators.append(op)
        opcode = tfl.OperatorCodeT()
        opcode.builtinCode = opcode.deprecatedBuiltinCode = code
        opcode.version = 1 if int8 is None else 2
        codes.append(opcode)
    graph = tfl.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators, graph.name = (
        tensors,
        [0],
        [4],
        operators,
        "main",
    )
    model = tfl.ModelT()
    model.version, model.description = 3, "vibration-edge test model"
    model.subgraphs, model.operatorCodes, model.buffers = [graph], codes, buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def softmax_reference(x: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """What `build_tflite`'s float model computes, in float64: ``softmax(x @ weights.T + bias)``."""
    logits = x.astype(np.float64) @ weights.T.astype(np.float64) + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def tflite_card(onnx_card: ModelCard, data: bytes, dtype: str, **updates: Any) -> ModelCard:
    """The ONNX model's card re-pointed at a dynamic-batch TFLite model whose tensors are `dtype`."""
    return for_artifact(
        onnx_card,
        data,
        format="tflite",
        artifact={"filename": "model.tflite"},
        input=TensorSpec(name="features", shape=(None, 10), dtype=dtype).model_dump(),
        outputs=[TensorSpec(name="probabilities", shape=(None, 4), dtype=dtype).model_dump()],
        **updates,
    )
