"""The library steps of `fit`: table, split, metrics and report, ONNX parity, card, write."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import classification_report

from vibration_core.features import EXTRACTOR_VERSION, FEATURE_NAMES
from vibration_core.modelcard import (
    CARD_FILENAME,
    ModelCard,
    RuntimeSignature,
    check_artifact,
    check_extractor,
    check_signature,
    sha256_file,
)
from vibration_core.modelcard_parts import TensorSpec
from vibration_testkit.train_tables import N_WINDOWS, SAMPLE_RATE, TINY, WINDOW_LENGTH, Trained
from vibration_train.card import write_model
from vibration_train.data import load_table
from vibration_train.errors import FitConfigError, ParityError
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


def test_split_holds_out_whole_machines_and_is_seeded(trained: Trained) -> None:
    # The simulator spreads every class over every machine (4 here): the split is grouped.
    result, table = trained.result, trained.table
    assert table.machines is not None
    train_machines = set(table.machines[result.split.train].tolist())
    test_machines = set(table.machines[result.split.test].tolist())
    assert train_machines.isdisjoint(test_machines)
    assert len(test_machines) == 1  # one of four machines is nearest to 20 %
    np.testing.assert_array_equal(result.x_test, table.features[result.split.test])
    np.testing.assert_array_equal(result.y_train, table.labels[result.split.train])
    assert result.y_train.size + result.y_test.size == N_WINDOWS
    assert set(result.y_test.tolist()) == set(result.y_train.tolist()) == set(result.labels)
    again = fit(trained.table, replace(TINY, n_estimators=1))
    np.testing.assert_array_equal(again.split.test, result.split.test)


def test_card_says_the_split_was_grouped_and_which_machines(trained: Trained) -> None:
    held_out = trained.card.metrics.held_out
    assert held_out is not None
    assert held_out.split == "grouped"
    assert held_out.machines == trained.result.split.held_out_machines
    assert set(held_out.machines) < set(trained.card.training.machines)
    # One held-out machine carrying four classes: four recordings.
    assert held_out.recordings == len(trained.result.labels)
    assert 0 <= held_out.recording_accuracy <= 1


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
    assert card.reference.samples == trained.table.labels.size  # every window: the split holds out machines
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


def test_files_beside_the_artifact_replace_older_ones_and_leave_no_temporaries(
    trained: Trained, tmp_path: Path
) -> None:
    (tmp_path / "model_int8.tflite").write_bytes(b"old")
    write_model(tmp_path, trained.model.data, trained.card, beside={"model_int8.tflite": b"int8"})
    assert (tmp_path / "model_int8.tflite").read_bytes() == b"int8"
    check_artifact(ModelCard.load(tmp_path / CARD_FILENAME), tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CARD_FILENAME, "model.onnx", "model_int8.tflite"]
    )


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
