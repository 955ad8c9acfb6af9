"""Fixtures of the inference tests: tiny real models trained at test time, node data, a registry.

Nothing binary is committed. The ONNX model goes through the training job's
own steps (fit, export, card) on simulated windows, 2048 samples at
25.6 kHz, 20 boosting stages. The TFLite models are written directly as
flatbuffers with LiteRT's schema module (a fully-connected layer and a
softmax), float and full-integer, so the LiteRT and Edge TPU paths run for
real without TensorFlow; the full-integer one takes transformed features, as
the training job's INT8 path makes them, and carries the transform in its
card. The node's test data is a second, independently
seeded simulation written with the core's parquet writer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import flatbuffers  # type: ignore[import-untyped] # ships no types
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as tfl

from vibration_core import dataset
from vibration_core.modelcard import ModelCard, TensorSpec
from vibration_infer.settings import ValidateSettings
from vibration_train.card import build_card, write_model
from vibration_train.data import TrainingTable
from vibration_train.edgetpu_convert import fit_input_transform
from vibration_train.fit import FitConfig, fit
from vibration_train.onnx_export import to_onnx
from vibration_train.simulator import SimulatedData, simulate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

SAMPLE_RATE = 25600.0
WINDOW_LENGTH = 2048
MODEL_ID = "spindle-classifier"
TINY = FitConfig(n_estimators=20, max_depth=3)


@dataclass(frozen=True, eq=False)
class TinyModel:
    """A trained model: its artifact bytes, its card, and what made it."""

    data: bytes
    card: ModelCard
    estimator: Any = None
    x_test: Any = None


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The settings read VIBRATION_* and NODE_NAME; a developer's shell must not leak in.
    import os  # noqa: PLC0415

    for name in list(os.environ):
        if name.startswith("VIBRATION_") or name == "NODE_NAME":
            monkeypatch.delenv(name)


def _table(data: SimulatedData) -> TrainingTable:
    return TrainingTable.from_simulated(data)


@pytest.fixture(scope="session")
def train_table() -> TrainingTable:
    return _table(simulate(480, seed=7, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH, machines=4))


@pytest.fixture(scope="session")
def node_data() -> SimulatedData:
    return simulate(192, seed=11, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH, machines=4)


@pytest.fixture(scope="session")
def test_parquet(node_data: SimulatedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("node") / "test-windows.parquet"
    dataset.write_parquet(node_data, path, unit="g")
    return path


@pytest.fixture(scope="session")
def onnx_model(train_table: TrainingTable) -> TinyModel:
    result = fit(train_table, TINY)
    model = to_onnx(result.estimator, train_table.features.shape[1])
    card = build_card(
        table=train_table, result=result, config=TINY, model=model, model_id=MODEL_ID, version="v1"
    )
    return TinyModel(model.data, card, result.estimator, result.x_test)


def card_with(card: ModelCard, updates: dict[str, Any]) -> ModelCard:
    """A copy of `card` with nested fields replaced (``{"signal": {"sample_rate": 51200.0}}``), validated."""

    def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in changes.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and key in base else value
        return out

    return ModelCard.model_validate(merge(card.model_dump(mode="json"), updates))


def for_artifact(card: ModelCard, data: bytes, **updates: Any) -> ModelCard:
    """`card` re-pointed at other artifact bytes (digest and size follow them)."""
    import hashlib  # noqa: PLC0415

    artifact = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        **updates.pop("artifact", {}),
    }
    return card_with(card, {"artifact": artifact, **updates})


def publish(root: Path, model: TinyModel, version: str | None = None) -> Path:
    """Write a model into a file registry; return the artifact's path."""
    card = model.card if version is None else card_with(model.card, {"version": version})
    artifact, _ = write_model(root / card.model_id / card.version, model.data, card)
    return artifact


# --- TFLite models without TensorFlow -------------------------------------------------------


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
    logits = x.astype(np.float64) @ weights.T.astype(np.float64) + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


@pytest.fixture(scope="session")
def tflite_model(train_table: TrainingTable, onnx_model: TinyModel) -> TinyModel:
    """A float TFLite softmax regression on the standardised features, with its card."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    x, labels = train_table.features.astype(np.float64), train_table.labels
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-12
    lr = LogisticRegression(max_iter=2000).fit((x - mean) / std, labels)
    assert tuple(lr.classes_) == onnx_model.card.labels
    # Standardisation folded into the layer: W' = W / std, b' = b - W' . mean.
    weights = lr.coef_ / std
    bias = lr.intercept_ - weights @ mean
    data = build_tflite(weights, bias)
    card = _tflite_card(onnx_model.card, data, "float32", framework="test softmax regression")
    return TinyModel(data, card, (weights, bias))


@pytest.fixture(scope="session")
def int8_model(train_table: TrainingTable, onnx_model: TinyModel) -> TinyModel:
    """A full-integer softmax regression on transformed features; the card holds the transform.

    `estimator` is (weights, bias, transform): float probabilities are
    ``softmax_reference(transform.apply(features), weights, bias)``.
    """
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    transform = fit_input_transform(train_table.features)
    x = transform.apply(train_table.features)
    lr = LogisticRegression(max_iter=2000).fit(x, train_table.labels)
    assert tuple(lr.classes_) == onnx_model.card.labels
    logits = x @ lr.coef_.T + lr.intercept_
    in_scale, logit_scale = float(np.abs(x).max() / 127), float(np.abs(logits).max() / 127)
    data = build_tflite(lr.coef_, lr.intercept_, int8=(in_scale, 0, logit_scale, 0))
    card = _tflite_card(
        onnx_model.card,
        data,
        "int8",
        framework="test int8 softmax regression",
        input_transform=transform.model_dump(),
    )
    return TinyModel(data, card, (lr.coef_, lr.intercept_, transform))


def _tflite_card(onnx_card: ModelCard, data: bytes, dtype: str, **updates: Any) -> ModelCard:
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


# --- servers that misbehave ------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def hung_server() -> Iterator[int]:
    """A TCP server on loopback that accepts every connection and never answers; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = listener.accept()
                held.append(conn)  # keep it open, say nothing

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


@pytest.fixture
def make_settings(tmp_path: Path, test_parquet: Path) -> Callable[..., ValidateSettings]:
    """Settings for one validation: a per-test cache and termination file, short timeouts."""

    def make(**overrides: Any) -> ValidateSettings:
        values: dict[str, Any] = {
            "test_data": test_parquet,
            "cache_dir": tmp_path / "cache",
            "termination_log": tmp_path / "termination-log",
            # Patient enough for moto and http.server on a loaded runner; the hung-registry
            # tests set their own short timeouts.
            "connect_timeout_s": 2.0,
            "read_timeout_s": 5.0,
            "retries": 1,
            "backoff_s": 0.05,
            "node_name": "node-a",
        }
        values.update(overrides)
        return ValidateSettings(**values)

    return make
