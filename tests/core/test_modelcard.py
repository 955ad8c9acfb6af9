"""The model card: round trip, consistency rules, and the contract checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from vibration_core.errors import ContractMismatchError, ModelCardError
from vibration_core.features import FEATURE_NAMES
from vibration_core.modelcard import (
    ModelCard,
    RuntimeSignature,
    check_artifact,
    check_extractor,
    check_signal,
    check_signature,
    sha256_file,
)
from vibration_core.modelcard_parts import FeatureSpec, InputTransform, TensorSpec
from vibration_testkit.cards import LABELS, card_dict

if TYPE_CHECKING:
    from pathlib import Path


def make_card(**changes: Any) -> ModelCard:
    return ModelCard.model_validate({**card_dict(), **changes})


def test_card_round_trips_through_a_file(tmp_path: Path) -> None:
    card = make_card()
    path = tmp_path / "modelcard.json"
    card.save(path)
    assert ModelCard.load(path) == card
    assert card.created == datetime(2026, 11, 24, 22, tzinfo=UTC)
    assert not list(tmp_path.glob("*.tmp"))


def test_labels_come_in_output_order() -> None:
    assert make_card().labels == LABELS
    assert tuple(make_card().reference.class_shares) == LABELS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": ["normal", "normal", "imbalance", "bearing_fault"]}, "labels must be unique"),
        ({"labels": ["normal"]}, r"labels: Tuple should have at least 2 items"),
        ({"model_id": "Spindle_Classifier"}, "model_id: String should match pattern"),
        ({"format": "pickle"}, "format: Input should be 'onnx', 'tflite' or 'edgetpu'"),
        ({"artifact": {"filename": "m", "sha256": "XYZ", "size_bytes": 1}}, "artifact.sha256"),
        (
            {"input": {"name": "features", "shape": [None, 9], "dtype": "float32"}},
            "does not end in the feature",
        ),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"labels": ["a", "b", "c", "d"]}, "metrics.per_class covers"),
        ({"labels": ["normal", "", "misalignment", "bearing_fault"]}, "labels must not be empty strings"),
    ],
    ids=[
        "duplicate-labels",
        "one-label",
        "bad-id",
        "bad-format",
        "bad-sha",
        "bad-shape",
        "extra",
        "labels-vs-metrics",
        "empty-label",
    ],
)
def test_inconsistent_cards_are_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    text = json.dumps({**card_dict(), **change})
    with pytest.raises(ModelCardError, match=message):
        ModelCard.from_json(text, source="test")


def test_missing_field_is_named() -> None:
    data = card_dict()
    del data["signal"]
    with pytest.raises(ModelCardError, match=r"model card test: signal: Field required"):
        ModelCard.from_json(json.dumps(data), source="test")


def test_unreadable_and_non_json_cards_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="cannot be read"):
        ModelCard.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelCardError, match="Invalid JSON"):
        ModelCard.load(tmp_path / "bad.json")


def test_the_split_of_the_held_out_windows_round_trips() -> None:
    card = make_card()
    assert card.metrics.held_out is not None
    assert (card.metrics.held_out.split, card.metrics.held_out.machines) == ("grouped", ("m-02",))
    assert ModelCard.from_json(card.to_json()) == card


def test_a_card_from_before_the_split_was_recorded_still_loads() -> None:
    # Serving keeps reading the cards published before (a node's last good version among them).
    data = card_dict()
    del data["metrics"]["held_out"]
    card = ModelCard.from_json(json.dumps(data), source="old")
    assert card.metrics.held_out is None
    assert "held_out" not in json.loads(card.to_json())["metrics"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": "window"}, "metrics.held_out.split: Input should be 'grouped', 'time' or 'external'"),
        ({"recordings": 0}, "metrics.held_out.recordings: Input should be greater than or equal to 1"),
        ({"recording_accuracy": 1.5}, "metrics.held_out.recording_accuracy: Input should be less than"),
        ({"folds": 5}, "metrics.held_out.folds: Extra inputs are not permitted"),
    ],
    ids=["unknown-split", "no-recordings", "accuracy-above-one", "extra"],
)
def test_bad_held_out_records_are_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    data = card_dict()
    data["metrics"]["held_out"].update(change)
    with pytest.raises(ModelCardError, match=message):
        ModelCard.from_json(json.dumps(data), source="test")


def test_signature_check_accepts_the_matching_model() -> None:
    signature = RuntimeSignature(
        inputs=[TensorSpec(name="features", shape=(None, 10), dtype="float32")], n_classes=4
    )
    check_signature(make_card(), signature)


@pytest.mark.parametrize(
    ("inputs", "n_classes", "field"),
    [
        ([TensorSpec(name="x", shape=(None, 10), dtype="float32")], 4, "input name"),
        ([TensorSpec(name="features", shape=(None, 9), dtype="float32")], 4, "input shape"),
        ([TensorSpec(name="features", shape=(None, 10), dtype="float64")], 4, "input dtype"),
        ([TensorSpec(name="features", shape=(None, 10), dtype="float32")], 3, "class count"),
        ([], 4, "input count"),
    ],
)
def test_signature_mismatches_are_named(inputs: list[TensorSpec], n_classes: int, field: str) -> None:
    with pytest.raises(ContractMismatchError) as info:
        check_signature(make_card(), RuntimeSignature(inputs=inputs, n_classes=n_classes))
    assert info.value.field == field


def test_extractor_check() -> None:
    check_extractor(make_card())
    renamed = card_dict()
    renamed["features"]["names"] = list(reversed(FEATURE_NAMES))
    renamed["reference"]["feature_quantiles"] = {
        name: renamed["reference"]["feature_quantiles"][name] for name in reversed(FEATURE_NAMES)
    }
    with pytest.raises(ContractMismatchError, match=r"features\.names"):
        check_extractor(ModelCard.model_validate(renamed))
    # Minor and patch versions never change a feature's meaning.
    check_extractor(make_card(features={"names": list(FEATURE_NAMES), "extractor_version": "2.7.1"}))
    # A card built around the parser (model_construct) still meets the check.
    features = FeatureSpec.model_construct(names=FEATURE_NAMES, extractor_version="1.0.0")
    built = make_card().model_copy(update={"features": features})
    with pytest.raises(
        ContractMismatchError, match=r"extractor_version: expected '2\.0\.1', found '1\.0\.0'"
    ):
        check_extractor(built)


def test_a_card_of_another_extractor_major_is_refused_naming_both_versions() -> None:
    # A 1.x card also lacks signal.unit: the version is what the message names, not that field.
    data = card_dict()
    data["features"]["extractor_version"] = "1.0.0"
    del data["signal"]["unit"]
    with pytest.raises(
        ModelCardError, match=r"trained on features of extractor 1\.0\.0, this extractor is 2\.0\.1"
    ):
        ModelCard.from_json(json.dumps(data), source="old/modelcard.json")


def test_signal_check_refuses_other_rates_and_lengths() -> None:
    card = make_card()
    check_signal(card, 25600.0, 4096)
    with pytest.raises(ContractMismatchError, match=r"signal.sample_rate: expected 25600.0, found 51200.0"):
        check_signal(card, 51200.0, 4096)
    with pytest.raises(ContractMismatchError, match=r"signal.window_length: expected 4096, found 2048"):
        check_signal(card, 25600.0, 2048)


def test_artifact_check_compares_the_digest(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model bytes")
    card = make_card(artifact={"filename": "model.onnx", "sha256": sha256_file(model), "size_bytes": 11})
    check_artifact(card, model)
    model.write_bytes(b"other bytes")
    with pytest.raises(ContractMismatchError, match=r"artifact\.sha256"):
        check_artifact(card, model)


# --- the input transform of TFLite and Edge TPU cards ---

LOG_FLOORS = [1e-4, 1e-4, 1e-3, None, 1e-6, 1e-7, 1e-7, None, None, None]


def transform_dict(**changes: Any) -> dict[str, Any]:
    return {"log_floor": LOG_FLOORS, "offset": [0.5] * 10, "scale": [2.0] * 10, **changes}


def tflite_card_dict(**transform_changes: Any) -> dict[str, Any]:
    return {
        **card_dict(),
        "format": "tflite",
        "artifact": {"filename": "model_int8.tflite", "sha256": "a" * 64, "size_bytes": 1234},
        "input": {"name": "features", "shape": [1, 10], "dtype": "int8"},
        "outputs": [{"name": "probabilities", "shape": [1, 4], "dtype": "int8"}],
        "input_transform": transform_dict(**transform_changes),
    }


def test_onnx_card_has_no_transform_and_does_not_mention_it() -> None:
    card = make_card()
    assert card.input_transform is None
    # Written without the key, so a reader that predates the field still accepts ONNX cards.
    assert "input_transform" not in json.loads(card.to_json())


def test_tflite_card_with_a_transform_round_trips(tmp_path: Path) -> None:
    card = ModelCard.model_validate(tflite_card_dict())
    path = tmp_path / "modelcard.json"
    card.save(path)
    assert ModelCard.load(path) == card
    assert card.input_transform is not None
    assert card.input_transform.log_floor == tuple(LOG_FLOORS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"offset": [0.5] * 9}, "input_transform: .* one entry per feature, got 10, 9 and 10"),
        ({"scale": [2.0] * 9 + [0.0]}, "input_transform: .*scale must be > 0"),
        ({"scale": [2.0] * 9 + [-1.0]}, "input_transform: .*scale must be > 0"),
        ({"offset": [0.5] * 9 + [float("inf")]}, "input_transform: .*offset and scale must be finite"),
        ({"scale": [2.0] * 9 + [float("nan")]}, "input_transform: .*offset and scale must be finite"),
        ({"log_floor": [0.0, *LOG_FLOORS[1:]]}, "input_transform: .*log_floor must be null"),
        (
            {"log_floor": LOG_FLOORS[:9], "offset": [0.5] * 9, "scale": [2.0] * 9},
            "input_transform has 9 entries, the features are 10",
        ),
    ],
    ids=["lengths", "zero-scale", "negative-scale", "inf-offset", "nan-scale", "zero-floor", "feature-count"],
)
def test_bad_transforms_are_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelCardError, match=message):
        ModelCard.from_json(json.dumps(tflite_card_dict(**changes)), source="test")


def test_onnx_card_with_a_transform_is_refused() -> None:
    data = {**card_dict(), "input_transform": transform_dict()}
    with pytest.raises(ModelCardError, match="input_transform must be absent for an ONNX model"):
        ModelCard.from_json(json.dumps(data), source="test")


def test_transform_takes_logs_above_the_floor_then_standardises() -> None:
    transform = InputTransform.model_validate(transform_dict())
    features = np.full((2, 10), 3.0, dtype=np.float32)
    features[1, :3] = 0.0  # below every floor: the floor's log
    out = transform.apply(features)
    assert out.dtype == np.float32
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out[0, :3], (np.log(3.0) - 0.5) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(out[1, :3], (np.log([1e-4, 1e-4, 1e-3]) - 0.5) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(out[:, 3], (3.0 - 0.5) / 2.0)  # no floor: linear
    np.testing.assert_allclose(out[:, 7:], (3.0 - 0.5) / 2.0)
    assert np.all(features[1, :3] == 0.0)  # the input is left alone
