"""The runtimes behind the Backend protocol, and the loader that picks and checks them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest

from vibration_core.errors import ContractMismatchError
from vibration_core.features import extract_features
from vibration_core.logs import event_fields
from vibration_infer.backends import edgetpu, litert, onnx
from vibration_infer.errors import DigestMismatchError, LoadError, PredictError
from vibration_infer.loader import load_model, predict
from vibration_testkit.cards import card_with, for_artifact
from vibration_testkit.tflite import build_tflite, softmax_reference

if TYPE_CHECKING:
    from pathlib import Path

    from vibration_testkit.cards import TinyModel
    from vibration_train.simulator import SimulatedData


Linear = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Weights (4, 10), bias (4,) and inputs (200, 10) of a softmax regression."""


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_onnx_probabilities_equal_sklearn_and_onnxruntime(onnx_model: TinyModel, tmp_path: Path) -> None:
    backend = onnx.load(_write(tmp_path, "model.onnx", onnx_model.data))
    x = onnx_model.x_test
    probabilities = backend.predict_proba(x)
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (x.shape[0], 4)
    np.testing.assert_allclose(probabilities, onnx_model.estimator.predict_proba(x), atol=1e-5)
    session = ort.InferenceSession(onnx_model.data, providers=["CPUExecutionProvider"])
    (offline,) = session.run(["probabilities"], {"features": x})
    np.testing.assert_allclose(probabilities, offline, atol=1e-6)  # thread count changes summation order
    assert backend.name == "onnxruntime:CPUExecutionProvider"


def test_onnx_signature_matches_the_card(onnx_model: TinyModel, tmp_path: Path) -> None:
    signature = onnx.load(_write(tmp_path, "model.onnx", onnx_model.data)).signature()
    assert tuple(signature.inputs) == (onnx_model.card.input,)
    assert signature.n_classes == len(onnx_model.card.labels)


def test_onnx_corrupt_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="ONNX Runtime refused"):
        onnx.load(_write(tmp_path, "model.onnx", b"\x08\x07not a model" * 10))


def test_onnx_batch_of_wrong_width_is_a_predict_error(onnx_model: TinyModel, tmp_path: Path) -> None:
    backend = onnx.load(_write(tmp_path, "model.onnx", onnx_model.data))
    with pytest.raises(PredictError, match="onnxruntime"):
        backend.predict_proba(np.zeros((3, 9), dtype=np.float32))


@pytest.fixture(scope="module")
def linear() -> Linear:
    rng = np.random.default_rng(3)
    return rng.normal(size=(4, 10)), rng.normal(size=4), rng.normal(size=(200, 10)).astype(np.float32)


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-batch", "fixed-batch-1"])
def test_litert_float_matches_numpy_for_any_batch_size(
    *, linear: Linear, dynamic: bool, tmp_path: Path
) -> None:
    weights, bias, x = linear
    backend = litert.load(_write(tmp_path, "m.tflite", build_tflite(weights, bias, dynamic=dynamic)))
    for rows in (64, 1, 7, 64, 200):
        np.testing.assert_allclose(
            backend.predict_proba(x[:rows]), softmax_reference(x[:rows], weights, bias), atol=1e-5
        )
    signature = backend.signature()
    assert signature.inputs[0].shape == ((None, 10) if dynamic else (1, 10))
    assert signature.inputs[0].dtype == "float32"
    assert signature.n_classes == 4
    assert backend.name == "litert:cpu"


def test_litert_int8_quantizes_inputs_and_dequantizes_outputs(linear: Linear, tmp_path: Path) -> None:
    weights, bias, x = linear
    in_scale = float(np.abs(x).max() / 127)
    logits = softmax_reference(x, weights, bias)  # only for its range below
    assert logits.shape == (200, 4)
    model = build_tflite(weights, bias, int8=(in_scale, 0, 16 / 127, 0))
    backend = litert.load(_write(tmp_path, "q.tflite", model))
    probabilities = backend.predict_proba(x)
    expected = softmax_reference(x, weights, bias)
    assert probabilities.dtype == np.float32
    assert np.abs(probabilities - expected).max() < 0.06
    assert np.mean(probabilities.argmax(axis=1) == expected.argmax(axis=1)) > 0.9
    assert backend.signature().inputs[0].dtype == "int8"


def test_int8_model_gets_the_cards_transform_before_quantizing(
    int8_model: TinyModel, node_data: SimulatedData, tmp_path: Path
) -> None:
    path = _write(tmp_path, "model.tflite", int8_model.data)
    weights, bias, transform = int8_model.estimator
    features = extract_features(node_data.windows, node_data.sample_rate)
    expected = softmax_reference(transform.apply(features), weights, bias)
    on_cpu = load_model(path, int8_model.card).backend
    on_fallback = edgetpu.load(path, library="libedgetpu-absent.so.1", transform=transform)
    for backend in (on_cpu, on_fallback):
        probabilities = backend.predict_proba(features)
        assert np.abs(probabilities - expected).max() < 0.1  # int8 steps of the input and the logits
        assert np.mean(probabilities.argmax(axis=1) == expected.argmax(axis=1)) > 0.95
    # The extractor's features quantized as they are: the small ones vanish, and so does the model.
    untransformed = litert.load(path).predict_proba(features)
    assert np.mean(untransformed.argmax(axis=1) == expected.argmax(axis=1)) < 0.6


def test_transform_of_the_wrong_width_is_a_predict_error(int8_model: TinyModel, tmp_path: Path) -> None:
    _, _, transform = int8_model.estimator
    backend = litert.load(_write(tmp_path, "model.tflite", int8_model.data), transform=transform)
    with pytest.raises(PredictError, match="litert:cpu"):
        backend.predict_proba(np.ones((3, 9), dtype=np.float32))


def test_litert_corrupt_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="LiteRT refused"):
        litert.load(_write(tmp_path, "m.tflite", b"TFL3 but not really" * 20))


def test_edgetpu_missing_library_falls_back_to_cpu_with_a_log(
    linear: Linear, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weights, bias, x = linear
    path = _write(tmp_path, "m.tflite", build_tflite(weights, bias))
    with caplog.at_level(logging.WARNING, logger="vibration_infer.backends.edgetpu"):
        backend = edgetpu.load(path, fallback="cpu", library="libedgetpu-absent.so.1")
    assert backend.name == "litert:cpu(edgetpu-fallback)"
    unavailable = [event_fields(r) for r in caplog.records if r.getMessage() == "edgetpu_unavailable"]
    assert [(e["fallback"], "libedgetpu-absent.so.1" in e["reason"]) for e in unavailable] == [("cpu", True)]
    np.testing.assert_allclose(backend.predict_proba(x), softmax_reference(x, weights, bias), atol=1e-5)


def test_edgetpu_missing_library_with_fail_policy_is_a_load_error(linear: Linear, tmp_path: Path) -> None:
    weights, bias, _ = linear
    path = _write(tmp_path, "m.tflite", build_tflite(weights, bias))
    with pytest.raises(LoadError, match="Edge TPU unavailable"):
        edgetpu.load(path, fallback="fail", library="libedgetpu-absent.so.1")


def test_edgetpu_real_library_name_is_absent_here_and_falls_back(
    tflite_model: TinyModel, tmp_path: Path
) -> None:
    # This machine has no libedgetpu.so.1: the default library name takes the same fallback.
    path = _write(tmp_path, "model.tflite", tflite_model.data)
    loaded = load_model(path, tflite_model.card, accelerator="coral", edgetpu_fallback="cpu")
    assert loaded.backend.name == "litert:cpu(edgetpu-fallback)"


def test_loader_refuses_a_digest_other_than_expected(onnx_model: TinyModel, tmp_path: Path) -> None:
    path = _write(tmp_path, "model.onnx", onnx_model.data)
    with pytest.raises(DigestMismatchError):
        load_model(path, onnx_model.card, expected_sha256="0" * 64)
    with pytest.raises(DigestMismatchError):
        load_model(_write(tmp_path, "other.onnx", onnx_model.data + b"\0"), onnx_model.card)


@pytest.mark.parametrize(
    ("version", "rate", "length", "warned"),
    [("2.0.0", 25000.0, 3000, True), ("2.0.1", 25000.0, 3000, False), ("2.0.0", 25600.0, 4096, False)],
)
def test_a_2_0_0_model_whose_band_edges_moved_is_loaded_with_a_warning(
    onnx_model: TinyModel,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    *,
    version: str,
    rate: float,
    length: int,
    warned: bool,
) -> None:
    card = card_with(
        onnx_model.card,
        {
            "features": {"extractor_version": version},
            "signal": {"sample_rate": rate, "window_length": length},
        },
    )
    with caplog.at_level(logging.WARNING):
        load_model(_write(tmp_path, "model.onnx", onnx_model.data), card)
    said = [r for r in caplog.records if r.getMessage() == "extractor_edge_bins_moved"]
    assert bool(said) is warned


def test_loader_refuses_a_runtime_signature_other_than_the_card(
    onnx_model: TinyModel, tmp_path: Path
) -> None:
    path = _write(tmp_path, "model.onnx", onnx_model.data)
    renamed = card_with(onnx_model.card, {"input": {"name": "x"}})
    with pytest.raises(ContractMismatchError, match="input name"):
        load_model(path, renamed)


def test_loader_refuses_onnx_on_coral_with_fail_policy(onnx_model: TinyModel, tmp_path: Path) -> None:
    path = _write(tmp_path, "model.onnx", onnx_model.data)
    with pytest.raises(LoadError, match="Edge TPU"):
        load_model(path, onnx_model.card, accelerator="coral", edgetpu_fallback="fail")


def test_tflite_card_loads_on_litert_and_agrees_with_numpy(
    tflite_model: TinyModel, node_data: SimulatedData, tmp_path: Path
) -> None:
    path = _write(tmp_path, "model.tflite", tflite_model.data)
    loaded = load_model(path, for_artifact(tflite_model.card, tflite_model.data))
    weights, bias = tflite_model.estimator
    expected = softmax_reference(extract_features(node_data.windows, node_data.sample_rate), weights, bias)
    got = predict(loaded, node_data.windows, node_data.sample_rate)
    np.testing.assert_allclose(got.probabilities, expected, atol=1e-4)


def test_predict_labels_come_from_the_card(
    onnx_model: TinyModel, node_data: SimulatedData, tmp_path: Path
) -> None:
    loaded = load_model(_write(tmp_path, "model.onnx", onnx_model.data), onnx_model.card)
    got = predict(loaded, node_data.windows[:50], node_data.sample_rate)
    features = extract_features(node_data.windows[:50], node_data.sample_rate)
    assert list(got.labels) == onnx_model.estimator.predict(features).astype(str).tolist()
    np.testing.assert_allclose(got.confidences, got.probabilities.max(axis=1))
    with pytest.raises(ContractMismatchError, match="sample_rate"):
        predict(loaded, node_data.windows[:5], 51200.0)


def test_the_probabilities_are_read_from_the_output_the_card_names(
    onnx_model: TinyModel, node_data: SimulatedData, tmp_path: Path
) -> None:
    # A model whose last float (batch, classes) output is not its probabilities (scores after
    # them): by position it served the scores, with rows that do not sum to 1, and passed the gate.
    import onnx as onnx_lib  # noqa: PLC0415 - the graph surgery of this test only

    model = onnx_lib.load_from_string(onnx_model.data)
    graph = model.graph
    probabilities = onnx_model.card.outputs[-1].name
    graph.initializer.append(onnx_lib.helper.make_tensor("ten", onnx_lib.TensorProto.FLOAT, [], [10.0]))
    graph.node.append(onnx_lib.helper.make_node("Mul", [probabilities, "ten"], ["scores"]))
    width = len(onnx_model.card.labels)
    graph.output.append(
        onnx_lib.helper.make_tensor_value_info("scores", onnx_lib.TensorProto.FLOAT, [None, width])
    )
    data = model.SerializeToString()
    loaded = load_model(_write(tmp_path, "model.onnx", data), for_artifact(onnx_model.card, data))
    original = load_model(_write(tmp_path, "original.onnx", onnx_model.data), onnx_model.card)
    got = predict(loaded, node_data.windows[:20], node_data.sample_rate)
    np.testing.assert_allclose(
        got.probabilities, predict(original, node_data.windows[:20], node_data.sample_rate).probabilities
    )
    np.testing.assert_allclose(got.probabilities.sum(axis=1), 1.0, atol=1e-5)
