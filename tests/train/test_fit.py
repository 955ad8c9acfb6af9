"""The library steps of `fit`: table, split, metrics and report, ONNX parity, card, write."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import classification_report
from tests.train.conftest import N_WINDOWS, SAMPLE_RATE, TINY, WINDOW_LENGTH, Trained

from vibration_core.features import EXTRACTOR_VERSION, FEATURE_NAMES
from vibration_core.modelcard import (
    CARD_FILENAME,
    ModelCard,
    RuntimeSignature,
    TensorSpec,
    check_artifact,
    check_extractor,
    check_signature,
    sha256_file,
)
from vibration_train.card import write_model
from vibration_train.data import load_table
from vibration_train.errors import FitConfigError, ParityError, TrainingDataError
from vibration_train.fit import FitConfig, fit
from vibration_train.onnx_export import PROB_TOLERANCE, check_parity, compare_outputs, to_onnx
from vibration_train.report import format_report

if TYPE_CHECKING:
    from pathlib import Path

    from vibration_train.simulator import SimulatedData


def test_raw_windows_become_the_extractors_features(trained: Trained, simulated: SimulatedData) -> None:
    table = trained.table
    assert table.features.shape == (N_WINDOWS, len(FEATURE_NAMES))
    assert table.features.dtype == np.float32
    assert (table.sample_rate, table.window_length) == (SAMPLE_RATE, WINDOW_LENGTH)
    assert table.labels.tolist() == simulated.labels.tolist()
    assert table.machine_ids() == tuple(sorted(set(simulated.machine.tolist())))


def test_features_table_loads_the_same_features(features_parquet: Path, trained: Trained) -> None:
    table = load_table(features_parquet, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH)
    np.testing.assert_array_equal(table.features, trained.table.features)
    assert table.labels.tolist() == trained.table.labels.tolist()
    assert table.date_range() == trained.table.date_range()


def test_split_is_stratified_and_seeded(trained: Trained) -> None:
    result = trained.result
    assert result.y_train.size + result.y_test.size == N_WINDOWS
    assert result.y_test.size == int(np.ceil(N_WINDOWS * TINY.test_size))
    for label in result.labels:
        share_all = np.mean(trained.table.labels == label)
        assert abs(np.mean(result.y_test == label) - share_all) < 0.01
    again = fit(trained.table, replace(TINY, n_estimators=1))
    np.testing.assert_array_equal(again.x_test, result.x_test)
    np.testing.assert_array_equal(again.y_test, result.y_test)


def test_labels_are_the_estimators_class_order(trained: Trained) -> None:
    classes = tuple(str(c) for c in trained.result.estimator.classes_)
    assert trained.result.labels == classes
    assert trained.card.labels == classes
    assert tuple(trained.card.reference.class_shares) == classes


def test_report_is_sklearns_and_matches_the_card(trained: Trained) -> None:
    result = trained.result
    report = format_report(trained.card.metrics, trained.card.labels)
    assert report == classification_report(result.y_test, result.predictions, digits=4)
    macro_line = next(line for line in report.splitlines() if line.strip().startswith("macro avg"))
    assert float(macro_line.split()[-2]) == round(trained.card.metrics.macro_f1, 4)
    assert trained.card.metrics.macro_f1 == result.metrics.macro_f1
    assert trained.card.metrics.test_samples == result.y_test.size


def test_onnx_labels_and_probabilities_match_sklearn(trained: Trained) -> None:
    result = trained.result
    session = ort.InferenceSession(trained.model.data, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"features": result.x_test})
    assert labels.tolist() == result.estimator.predict(result.x_test).tolist()
    np.testing.assert_allclose(
        probabilities, result.estimator.predict_proba(result.x_test), rtol=0, atol=PROB_TOLERANCE
    )
    assert trained.parity.identical_labels == trained.parity.total == result.y_test.size


def test_the_same_data_and_seed_give_the_same_bytes(trained: Trained) -> None:
    # A rebuilt version must be byte-identical, or publishing it again is refused as a conflict.
    again = fit(trained.table, TINY)
    assert to_onnx(again.estimator, trained.table.features.shape[1]).data == trained.model.data


def test_card_describes_the_onnx_graph(trained: Trained) -> None:
    card = trained.card
    session = ort.InferenceSession(trained.model.data, providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    signature = RuntimeSignature(
        inputs=[TensorSpec(name=graph_input.name, shape=tuple(graph_input.shape), dtype="float32")],
        n_classes=session.get_outputs()[1].shape[1],
    )
    check_signature(card, signature)
    check_extractor(card)
    assert card.input == TensorSpec(name="features", shape=(None, 10), dtype="float32")
    assert card.outputs == (
        TensorSpec(name="label", shape=(None,), dtype="string"),
        TensorSpec(name="probabilities", shape=(None, len(card.labels)), dtype="float32"),
    )
    assert card.features.names == FEATURE_NAMES
    assert card.features.extractor_version == EXTRACTOR_VERSION
    assert card.signal.sample_rate == SAMPLE_RATE
    assert card.signal.window_length == WINDOW_LENGTH


def test_card_summarises_training_data_and_settings(trained: Trained, simulated: SimulatedData) -> None:
    card = trained.card
    assert card.training.samples == N_WINDOWS
    assert sum(card.training.class_counts.values()) == N_WINDOWS
    assert card.training.start.timestamp() * 1e9 == pytest.approx(int(simulated.timestamp_ns.min()))
    assert card.training.end.timestamp() * 1e9 == pytest.approx(int(simulated.timestamp_ns.max()))
    assert card.reference.samples == trained.result.y_train.size
    assert card.hyperparameters["n_estimators"] == 20
    assert card.hyperparameters["max_depth"] == 5
    assert card.hyperparameters["random_state"] == 42
    assert card.framework.startswith("sklearn-gradient-boosting ")


def test_written_artifact_matches_the_cards_digest(trained: Trained, tmp_path: Path) -> None:
    artifact, card_path = write_model(tmp_path / "out", trained.model.data, trained.card)
    card = ModelCard.load(card_path)
    assert card == trained.card
    assert sha256_file(artifact) == card.artifact.sha256
    assert artifact.stat().st_size == card.artifact.size_bytes
    check_artifact(card, artifact)
    assert sorted(p.name for p in artifact.parent.iterdir()) == sorted([CARD_FILENAME, "model.onnx"])


def test_rewriting_a_directory_replaces_both_files(trained: Trained, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"old")
    (tmp_path / CARD_FILENAME).write_text("{}", encoding="utf-8")
    write_model(tmp_path, trained.model.data, trained.card)
    check_artifact(ModelCard.load(tmp_path / CARD_FILENAME), tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CARD_FILENAME, "model.onnx"])


def test_parity_check_refuses_a_model_that_disagrees(trained: Trained) -> None:
    other = fit(trained.table, replace(TINY, n_estimators=3)).estimator
    with pytest.raises(ParityError) as caught:
        check_parity(other, trained.model, trained.result.x_test)
    error = caught.value
    assert error.total == trained.result.y_test.size
    assert error.max_prob_diff > PROB_TOLERANCE
    assert "ONNX parity failed" in str(error)


def test_a_tie_between_two_classes_is_no_disagreement() -> None:
    probs = np.array([[0.45, 0.45, 0.1], [0.7, 0.2, 0.1]])
    report = compare_outputs(np.array(["b", "a"]), probs + 1e-8, np.array(["a", "a"]), probs)
    assert (report.identical_labels, report.tied_labels) == (2, 1)
    assert "(1 a tie either way)" in report.summary()
    with pytest.raises(ParityError):  # the same label swap on a row that is no tie
        compare_outputs(np.array(["a", "b"]), probs, np.array(["a", "a"]), probs)


def test_a_split_too_small_for_every_class_is_refused(trained: Trained) -> None:
    keep = np.concatenate(
        [np.flatnonzero(trained.table.labels == label)[:2] for label in trained.result.labels]
    )
    small = replace(trained.table, features=trained.table.features[keep], labels=trained.table.labels[keep])
    with pytest.raises(TrainingDataError, match="stratified split of 4 classes"):
        fit(small, TINY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_estimators": 0}, "n_estimators"),
        ({"max_depth": 0}, "max_depth"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"test_size": 1.0}, "test_size"),
    ],
)
def test_fit_config_refuses_impossible_values(change: dict[str, float], message: str) -> None:
    with pytest.raises(FitConfigError, match=message):
        FitConfig(**change)  # type: ignore[arg-type]  # values of mixed types, one field each
