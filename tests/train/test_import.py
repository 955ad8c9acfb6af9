"""`vibration-train import`: the reference pipeline's model, built from its recipe here, and every refusal.

The model is made at test time the reference's way (`vibration_testkit.reference_pipeline`:
its feature formulas in float64, its gradient-boosting recipe with fewer
stages, skl2onnx with ``zipmap`` off and opset 13) from simulated windows in
g; the data it is measured on is another simulation. Each bad input is
refused with a message that names what is wrong, and nothing is written to
``--out``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score
from typer.testing import CliRunner, Result

from vibration_core import dataset
from vibration_core.features import FEATURE_NAMES, extract_features
from vibration_core.modelcard import CARD_FILENAME, ModelCard, check_artifact
from vibration_core.modelcard_parts import TensorSpec
from vibration_testkit.reference_pipeline import (
    CLASSES,
    SAMPLE_RATE,
    WINDOW_LENGTH,
    reference_features,
    reference_model,
)
from vibration_train.cli import app
from vibration_train.cli_common import EXIT_BAD_INPUT
from vibration_train.cli_import import EXIT_MODEL
from vibration_train.errors import ModelImportError
from vibration_train.import_checks import decode_labels
from vibration_train.import_graph import ImportedGraph, read_graph
from vibration_train.import_labels import check_label_order
from vibration_train.simulator import SimulatedData, simulate

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

LABELS = ",".join(CLASSES)
SORTED = ",".join(sorted(CLASSES))
"""The string model's column order: scikit-learn sorts its classes."""


def invoke(*args: object) -> Result:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def assert_refused(result: Result, code: int, message: str, out: Path) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.splitlines()[-1].startswith("error: "), result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.fixture(scope="module")
def training() -> SimulatedData:
    """The reference pipeline's training windows (its model is trained elsewhere: here, in the fixture)."""
    return simulate(400, seed=21, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH, machines=4)


@pytest.fixture(scope="module")
def training_features(training: SimulatedData) -> np.ndarray:
    return reference_features(training.windows, SAMPLE_RATE)


def int_labels(labels: np.ndarray) -> np.ndarray:
    return np.array([CLASSES.index(str(label)) for label in labels], dtype=np.int64)


@pytest.fixture(scope="module")
def models(
    training: SimulatedData, training_features: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The reference recipe's model (int64 labels) and its variants, as files in one directory."""
    root = tmp_path_factory.mktemp("models")
    x, y = training_features, int_labels(training.labels)
    few = 5  # stages: enough for a model of the right shape
    rng = np.random.default_rng(5)
    noisy = rng.random(y.size) < 0.7  # labels drawn at random: a weak model, right about half the time
    weak = np.where(noisy, rng.integers(0, len(CLASSES), y.size), y)
    no_probabilities = onnx.load_model_from_string(reference_model(x, y, n_estimators=few))
    kept = [value for value in no_probabilities.graph.output if value.name != "probabilities"]
    del no_probabilities.graph.output[:]
    no_probabilities.graph.output.extend(kept)
    batch_of_one = onnx.load_model_from_string(reference_model(x, y, n_estimators=few))
    batch_of_one.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # as for one row a call
    variants = {
        "reference.onnx": reference_model(x, y),
        "strings.onnx": reference_model(x, training.labels.astype(str)),
        "nine-features.onnx": reference_model(x[:, :9], y, n_estimators=few),
        "zipmap.onnx": reference_model(x, y, zipmap=True, n_estimators=few),
        "raw-scores.onnx": reference_model(x, y, raw_scores=True, n_estimators=few),
        "no-probabilities.onnx": no_probabilities.SerializeToString(),
        "batch-of-one.onnx": batch_of_one.SerializeToString(),
        "numbered-from-1.onnx": reference_model(x, y + 1, n_estimators=few),
        "weak.onnx": reference_model(x, weak, n_estimators=few),
        "shouting.onnx": reference_model(x, np.char.upper(training.labels.astype(str)), n_estimators=few),
    }
    for name, data in variants.items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def measured() -> SimulatedData:
    """The labelled windows the model is measured on: another simulation, in g."""
    return simulate(160, seed=22, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH, machines=4)


@pytest.fixture(scope="module")
def data(measured: SimulatedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "history.parquet"
    dataset.write_parquet(measured, path, unit="g")
    return path


def onnx_labels(model: Path, features: np.ndarray) -> np.ndarray:
    """The model's label output in ONNX Runtime, run here without the importer."""
    session = ort.InferenceSession(model.read_bytes(), providers=["CPUExecutionProvider"])
    (labels,) = session.run(["label"], {"features": features.astype(np.float32)})
    return np.asarray(labels)


def test_the_reference_pipelines_model_imports_with_a_card_that_says_so(
    models: Path, data: Path, measured: SimulatedData, tmp_path: Path
) -> None:
    out = tmp_path / "imported"
    result = invoke("import", models / "reference.onnx", "--labels", LABELS, "--data", data, "--out", out)

    assert result.exit_code == 0, result.output
    card = ModelCard.load(out / CARD_FILENAME)
    check_artifact(card, out / "model.onnx")
    # The model's bytes, unchanged: the digest is the one of the file the user brought.
    assert card.artifact.sha256 == hashlib.sha256((models / "reference.onnx").read_bytes()).hexdigest()
    assert card.labels == CLASSES
    assert card.framework.startswith("imported: skl2onnx ")
    assert card.hyperparameters == {"imported_from": "reference.onnx", "evaluated_on": "history.parquet"}
    assert (card.input.name, card.input.shape, card.input.dtype) == ("features", (None, 10), "float32")
    assert [(o.name, o.dtype) for o in card.outputs] == [("label", "int64"), ("probabilities", "float32")]
    assert (card.signal.sample_rate, card.signal.window_length, card.signal.unit) == (25600.0, 4096, "g")
    assert card.training.samples == card.metrics.test_samples == len(measured)
    assert card.training.class_counts == dict.fromkeys(CLASSES, 40)
    # The figures, recomputed here from ONNX Runtime and the int64 labels mapped by position.
    predicted = np.asarray(CLASSES)[
        onnx_labels(models / "reference.onnx", extract_features(measured.windows, SAMPLE_RATE))
    ]
    assert card.metrics.accuracy == accuracy_score(measured.labels, predicted)
    for label in CLASSES:
        recall = float(np.mean(predicted[measured.labels == label] == label))
        assert card.metrics.per_class[label].recall == pytest.approx(recall)
    assert card.metrics.accuracy > 0.5  # a model, not chance (0.25)
    assert card.reference.class_shares == dict.fromkeys(CLASSES, 0.25)
    rms = extract_features(measured.windows, SAMPLE_RATE)[:, 0].astype(np.float64)
    assert card.reference.feature_quantiles["rms"][10] == pytest.approx(float(np.quantile(rms, 0.5)))
    assert "all of them measured (the model was trained elsewhere: no held-out split)" in result.stdout
    assert f"accuracy                         {card.metrics.accuracy:.4f}       160" in result.stdout


def test_the_reference_formulas_and_ours_give_the_model_the_same_labels(
    models: Path, measured: SimulatedData
) -> None:
    # What the import measured (our extractor) is what the reference pipeline would have predicted.
    ours = onnx_labels(models / "reference.onnx", extract_features(measured.windows, SAMPLE_RATE))
    theirs = onnx_labels(models / "reference.onnx", reference_features(measured.windows, SAMPLE_RATE))
    assert ours.tolist() == theirs.tolist()


def test_a_model_with_string_labels_imports_with_the_labels_in_column_order(
    models: Path, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "imported"
    result = invoke("import", models / "strings.onnx", "--labels", SORTED, "--data", data, "--out", out)

    assert result.exit_code == 0, result.output
    card = ModelCard.load(out / CARD_FILENAME)
    assert card.labels == tuple(sorted(CLASSES))
    assert card.outputs[0].dtype == "string"
    assert card.metrics.accuracy > 0.5


def test_string_labels_given_in_another_order_than_the_columns_are_refused(
    models: Path, data: Path, tmp_path: Path
) -> None:
    # Serving names the probability columns with the card's labels: this order would mislabel them.
    out = tmp_path / "imported"
    result = invoke("import", models / "strings.onnx", "--labels", LABELS, "--data", data, "--out", out)
    assert_refused(result, EXIT_MODEL, "its label output and its largest probability disagree", out)
    assert "give --labels in the order of the probability columns" in result.stderr


def test_a_reference_features_table_without_a_unit_is_data_too(
    models: Path, measured: SimulatedData, tmp_path: Path
) -> None:
    features = reference_features(measured.windows, SAMPLE_RATE)
    columns = {name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    pq.write_table(pa.table({**columns, "label": measured.labels.tolist()}), tmp_path / "features.parquet")
    out = tmp_path / "imported"
    args = ("--sample-rate", SAMPLE_RATE, "--window-length", WINDOW_LENGTH)
    base = ("import", models / "reference.onnx", "--labels", LABELS, "--data", tmp_path / "features.parquet")

    refused = invoke(*base, "--out", out, *args)
    assert_refused(refused, EXIT_BAD_INPUT, "does not say the unit of its samples", out)

    result = invoke(*base, "--out", out, *args, "--unit", "g")
    assert result.exit_code == 0, result.output
    card = ModelCard.load(out / CARD_FILENAME)
    predicted = np.asarray(CLASSES)[onnx_labels(models / "reference.onnx", features)]
    assert card.metrics.accuracy == accuracy_score(measured.labels, predicted)
    assert card.signal.unit == "g"


REFUSED_MODELS = {
    "nine-features": (
        "nine-features.onnx",
        LABELS,
        "input 'features' float32 [N, 9] takes 9 columns; expected float32 [N, 10]",
    ),
    "zipmap": (
        "zipmap.onnx",
        LABELS,
        "output 'output_probability' is a ZipMap (a sequence of maps, one per row); convert it with zipmap",
    ),
    "raw-scores": (
        "raw-scores.onnx",
        LABELS,
        "its probabilities output 'probabilities' holds no probabilities: in ",
    ),
    "batch-of-one": (
        "batch-of-one.onnx",
        LABELS,
        "input 'features' float32 [1, 10] takes a fixed batch of 1; the nodes run batches of any size",
    ),
    "no-probabilities": (
        "no-probabilities.onnx",
        LABELS,
        "has no probabilities output (a float32 tensor [N, k]); its outputs: 'label' int64 [N]",
    ),
    "labels-width": (
        "reference.onnx",
        "normal,imbalance,misalignment",
        (
            "--labels names 3 classes (normal, imbalance, misalignment), but the probabilities output "
            "'probabilities' has 4 columns"
        ),
    ),
    "labels-twice": (
        "reference.onnx",
        "normal,imbalance,normal,bearing_fault",
        "--labels names 'normal' more than once",
    ),
    "labels-numbers": (  # as fit refuses them: no class would be normal, and every window alerts
        "reference.onnx",
        "0,1,2,3",
        "--labels names the classes by numbers (0, 1, 2, 3): the card, predictions and alerts use these",
    ),
    "string-not-in-labels": (
        "shouting.onnx",
        SORTED,
        (
            "label output 'label' holds 'BEARING_FAULT', 'IMBALANCE', 'MISALIGNMENT', 'NORMAL', which "
            "--labels (bearing_fault, imbalance, misalignment, normal) does not name"
        ),
    ),
}


@pytest.mark.parametrize("case", REFUSED_MODELS.values(), ids=REFUSED_MODELS.keys())
def test_a_model_that_does_not_fit_is_refused_naming_why(
    case: tuple[str, str, str], models: Path, data: Path, tmp_path: Path
) -> None:
    model, labels, message = case
    out = tmp_path / "imported"
    result = invoke("import", models / model, "--labels", labels, "--data", data, "--out", out)
    assert_refused(result, EXIT_MODEL, message, out)


def relabelled(measured: SimulatedData, path: Path, relabel: dict[str, str]) -> Path:
    labels = np.array([relabel.get(str(label), str(label)) for label in measured.labels])
    dataset.write_parquet(
        dataset.WindowSet(measured.machine, measured.timestamp_ns, SAMPLE_RATE, measured.windows, labels),
        path,
        unit="g",
    )
    return path


@pytest.mark.parametrize(
    ("relabel", "message"),
    [
        (
            {"bearing_fault": "cavitation"},
            (
                "holds labels that are neither a --labels name nor one of the model's integer classes: "
                "'cavitation' (40 windows)"
            ),
        ),
        ({"bearing_fault": "normal"}, "has no windows of 'bearing_fault'"),
    ],
    ids=["a-label-the-model-does-not-know", "no-windows-of-a-class"],
)
def test_data_whose_labels_are_not_the_models_is_refused_naming_them(
    relabel: dict[str, str], message: str, models: Path, measured: SimulatedData, tmp_path: Path
) -> None:
    data = relabelled(measured, tmp_path / "data.parquet", relabel)
    out = tmp_path / "imported"
    result = invoke("import", models / "reference.onnx", "--labels", LABELS, "--data", data, "--out", out)
    assert_refused(result, EXIT_BAD_INPUT, message, out)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is not a valid ONNX model"), (b"\x00not a model", "is not a valid ONNX model")],
    ids=["empty", "garbage"],
)
def test_a_file_that_is_no_onnx_model_is_refused(
    content: bytes, message: str, data: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(content)
    out = tmp_path / "imported"
    assert_refused(
        invoke("import", model, "--labels", LABELS, "--data", data, "--out", out), EXIT_MODEL, message, out
    )


def test_a_missing_model_and_a_bad_version_are_refused_before_any_work(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    missing = invoke("import", tmp_path / "nowhere.onnx", "--labels", LABELS, "--data", data, "--out", out)
    assert_refused(missing, EXIT_BAD_INPUT, "nowhere.onnx: no such file", out)
    bad = invoke(
        "import",
        tmp_path / "nowhere.onnx",
        "--labels",
        LABELS,
        "--data",
        data,
        "--out",
        out,
        "--version",
        "-x",
    )
    assert_refused(bad, EXIT_BAD_INPUT, "--version '-x' must match", out)


def test_import_is_a_command_that_explains_itself() -> None:
    result = invoke("import", "--help")
    assert result.exit_code == 0, result.output
    assert "--labels" in result.stdout
    assert "import" in invoke("--help").stdout


def test_an_int64_label_must_be_its_probability_column_but_a_tie_may_go_either_way() -> None:
    graph = ImportedGraph(
        source="model.onnx",
        data=b"",
        input=TensorSpec(name="features", shape=(None, 10), dtype="float32"),
        label=TensorSpec(name="label", shape=(None,), dtype="int64"),
        probabilities=TensorSpec(name="probabilities", shape=(None, 2), dtype="float32"),
        producer="test",
        opsets={},
    )
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]], dtype=np.float32)
    labels = decode_labels(graph, np.array([0, 0, 1]), probabilities, ("a", "b"))
    assert labels.tolist() == ["a", "a", "b"]  # row 1 is a tie: either label is the model's
    with pytest.raises(ModelImportError) as refused:
        decode_labels(graph, np.array([0, 1, 0]), probabilities, ("a", "b"))
    row = "(row 2: label 'a', largest probability in column 1, which --labels calls 'b')"
    assert f"disagree in 1 of 3 rows {row}" in str(refused.value)
    assert "an int64 label must be the class of its probability column" in str(refused.value)


def a_graph(labels: str, classes: tuple[int, ...] | None) -> ImportedGraph:
    """The signature of a two-class model whose label output is `labels` and whose node states `classes`."""
    return ImportedGraph(
        source="model.onnx",
        data=b"",
        input=TensorSpec(name="features", shape=(None, 10), dtype="float32"),
        label=TensorSpec(name="label", shape=(None,), dtype=labels),
        probabilities=TensorSpec(name="probabilities", shape=(None, 2), dtype="float32"),
        producer="test",
        opsets={},
        classes=classes,
    )


def test_the_graph_states_the_classes_of_its_columns(models: Path) -> None:
    def classes(name: str) -> tuple[int, ...] | tuple[str, ...] | None:
        return read_graph((models / name).read_bytes(), name).classes

    assert classes("reference.onnx") == (0, 1, 2, 3)
    assert classes("numbered-from-1.onnx") == (1, 2, 3, 4)
    assert classes("strings.onnx") == tuple(sorted(CLASSES))  # scikit-learn sorts its classes


def test_an_int64_label_is_the_column_where_the_graph_states_it() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    stated = a_graph("int64", (7, 3))
    assert decode_labels(stated, np.array([7, 3]), probabilities, ("a", "b")).tolist() == ["a", "b"]
    with pytest.raises(
        ModelImportError, match=r"holds 0, none of the classes its classifier states \(7, 3\)"
    ):
        decode_labels(stated, np.array([0, 3]), probabilities, ("a", "b"))
    # Without a stated list, label i is the i-th name, as before.
    unstated = a_graph("int64", None)
    assert decode_labels(unstated, np.array([0, 1]), probabilities, ("a", "b")).tolist() == ["a", "b"]
    with pytest.raises(ModelImportError, match=r"holds 2, outside 0\.\.1 \(in 1 of 2 rows\)"):
        decode_labels(unstated, np.array([0, 2]), probabilities, ("a", "b"))


@pytest.fixture(scope="module")
def measured_features(measured: SimulatedData) -> np.ndarray:
    return reference_features(measured.windows, SAMPLE_RATE)


FEATURES_TABLE = ("--sample-rate", SAMPLE_RATE, "--window-length", WINDOW_LENGTH, "--unit", "g")
"""What a features table does not say about its signal."""


def features_table(features: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """A reference-pipeline features table: its formulas, with `labels` as the ``label`` column."""
    columns = {name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    pq.write_table(pa.table({**columns, "label": labels}), path)
    return path


@pytest.mark.parametrize("spelled", ["int", "float"], ids=["0..3", "0.0..3.0"])
def test_a_table_labelled_with_the_models_integer_classes_is_read_with_their_names(
    models: Path, measured: SimulatedData, measured_features: np.ndarray, tmp_path: Path, spelled: str
) -> None:
    # The reference pipeline's own table: labels 0..3, the model's classes, and --labels naming them;
    # through a pandas round trip they may come back as 0.0..3.0, which fit reads as 0..3 too.
    classes = int_labels(measured.labels)
    table = features_table(
        measured_features,
        classes if spelled == "int" else classes.astype(float),
        tmp_path / "features.parquet",
    )
    out = tmp_path / "imported"
    result = invoke(
        "import",
        models / "reference.onnx",
        "--labels",
        LABELS,
        "--data",
        table,
        "--out",
        out,
        *FEATURES_TABLE,
    )

    assert result.exit_code == 0, result.output
    card = ModelCard.load(out / CARD_FILENAME)
    assert card.labels == CLASSES
    assert card.training.class_counts == dict.fromkeys(CLASSES, 40)
    assert card.reference.class_shares == dict.fromkeys(CLASSES, 0.25)
    predicted = np.asarray(CLASSES)[onnx_labels(models / "reference.onnx", measured_features)]
    assert card.metrics.accuracy == accuracy_score(measured.labels, predicted)
    assert card.metrics.accuracy > 0.5
    given = "0, 1, 2, 3" if spelled == "int" else "0.0, 1.0, 2.0, 3.0"
    read_as = f"data labels {given} read as normal, imbalance, misalignment, bearing_fault"
    assert read_as in " ".join(result.stdout.split())


def test_a_model_whose_classes_are_numbered_from_1_imports(
    models: Path, data: Path, measured: SimulatedData, measured_features: np.ndarray, tmp_path: Path
) -> None:
    model = models / "numbered-from-1.onnx"
    # Its classes 1..4 are its columns: label 1 is the first name.
    expected = np.asarray(CLASSES)[onnx_labels(model, measured_features) - 1]
    numbered = features_table(measured_features, int_labels(measured.labels) + 1, tmp_path / "t.parquet")
    for source, flags in ((data, ()), (numbered, FEATURES_TABLE)):
        out = tmp_path / source.stem
        result = invoke("import", model, "--labels", LABELS, "--data", source, "--out", out, *flags)
        assert result.exit_code == 0, result.output
        card = ModelCard.load(out / CARD_FILENAME)
        assert card.labels == CLASSES
        assert card.training.class_counts == dict.fromkeys(CLASSES, 40)
        assert card.metrics.accuracy == accuracy_score(measured.labels, expected)
    # The last import read the table's labels 1..4 as the names of the model's classes 1..4.
    assert "data labels 1, 2, 3, 4 read as normal, imbalance" in " ".join(result.stdout.split())


NOT_THE_MODELS_LABELS = {
    "a-class-the-model-does-not-have": (
        "reference.onnx",
        lambda labels: int_labels(labels) + 1,
        (
            "holds labels that are neither a --labels name nor one of the model's integer classes: "
            "'4' (40 windows); --labels: normal, imbalance, misalignment, bearing_fault; "
            "its classes, in that order: 0, 1, 2, 3"
        ),
    ),
    "numbered-from-0-for-a-model-from-1": (
        "numbered-from-1.onnx",
        int_labels,
        "holds labels that are neither a --labels name nor one of the model's integer classes: '0' (40",
    ),
    "names-and-numbers": (
        "reference.onnx",
        lambda labels: np.where(labels == "bearing_fault", "3", labels),
        (
            "labels some windows with names ('imbalance', 'misalignment', 'normal') and others with "
            "the model's integer classes ('3'): label every window one way"
        ),
    ),
    "names-and-numbers-through-floats": (
        "reference.onnx",
        lambda labels: np.where(labels == "bearing_fault", "3.0", labels),
        "labels some windows with names ('imbalance', 'misalignment', 'normal') and others with",
    ),
    "one-class-written-twice": (
        "reference.onnx",
        lambda labels: np.where(
            labels == "bearing_fault", "3", np.where(labels == "misalignment", "03", "0")
        ),
        "the labels write one integer in several ways (0, 03, 3): write each once",
    ),
}


@pytest.mark.parametrize("case", NOT_THE_MODELS_LABELS.values(), ids=NOT_THE_MODELS_LABELS.keys())
def test_a_data_label_that_is_neither_a_name_nor_a_class_of_the_model_is_refused_naming_it(
    case: tuple[str, Callable[[np.ndarray], np.ndarray], str],
    models: Path,
    measured: SimulatedData,
    measured_features: np.ndarray,
    tmp_path: Path,
) -> None:
    model, relabel, message = case
    table = features_table(measured_features, relabel(measured.labels.astype(str)), tmp_path / "t.parquet")
    out = tmp_path / "imported"
    result = invoke(
        "import", models / model, "--labels", LABELS, "--data", table, "--out", out, *FEATURES_TABLE
    )
    assert_refused(result, EXIT_BAD_INPUT, message, out)


def test_names_given_out_of_column_order_are_refused_with_the_order_the_data_says(
    models: Path, data: Path, measured: SimulatedData, measured_features: np.ndarray, tmp_path: Path
) -> None:
    # Label output and probabilities agree whatever the names: only the data's labels tell the order.
    swapped = ("imbalance", "normal", "bearing_fault", "misalignment")
    columns = onnx_labels(models / "reference.onnx", measured_features)
    given = accuracy_score(measured.labels, np.asarray(swapped)[columns])
    right = accuracy_score(measured.labels, np.asarray(CLASSES)[columns])
    out = tmp_path / "imported"
    result = invoke(
        "import", models / "reference.onnx", "--labels", ",".join(swapped), "--data", data, "--out", out
    )
    expected = (
        f"its accuracy on the 160 windows of {data} is {given:.4f} with --labels in the order given "
        f"({', '.join(swapped)}) and {right:.4f} in the order {', '.join(CLASSES)}: the names are not in "
        "the order of its probability columns; give --labels in the order of the probability columns "
        "(scikit-learn's classes_ order)"
    )
    assert_refused(result, EXIT_MODEL, expected, out)


def test_a_weak_model_keeps_the_order_it_is_given(models: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    result = invoke("import", models / "weak.onnx", "--labels", LABELS, "--data", data, "--out", out)
    assert result.exit_code == 0, result.output
    assert 0.3 < ModelCard.load(out / CARD_FILENAME).metrics.accuracy < 0.6


@pytest.mark.parametrize("k", [3, 9], ids=["every-order", "greedy"])
def test_the_order_check_refuses_swapped_names_and_keeps_a_weak_order(k: int) -> None:
    labels = tuple(f"c{i}" for i in range(k))
    truth = np.repeat(np.asarray(labels), 20)
    graph = a_graph("string", None)
    # Weak: each class right 8 times in 20, taken for the next class 9 times. Naming each column
    # after the class before it would get 0.45 right, the order given 0.40: not enough to refuse it.
    weak = truth.copy()
    for i, name in enumerate(labels):
        rows = np.flatnonzero(truth == name)
        weak[rows[8:17]] = labels[(i + 1) % k]
        weak[rows[17:]] = labels[(i + 2) % k]
    check_label_order(graph, weak, truth, labels, "data.parquet")
    # The first two names swapped: 2 of k classes wrong, every row of them.
    swapped = np.where(truth == "c0", "c1", np.where(truth == "c1", "c0", truth))
    better = ", ".join(["c1", "c0", *labels[2:]])
    with pytest.raises(ModelImportError, match=rf"is 0\.\d+ with .* and 1\.0000 in the order {better}:"):
        check_label_order(graph, swapped, truth, labels, "data.parquet")


@pytest.mark.parametrize("row", [[np.nan, np.nan], [1.5, -0.5], [0.7, 0.7]], ids=["nan", "outside", "sum"])
def test_scores_that_are_not_probabilities_are_refused(row: list[float]) -> None:
    graph = a_graph("int64", None)
    probabilities = np.array([[0.9, 0.1], row], dtype=np.float32)
    with pytest.raises(ModelImportError, match=r"holds no probabilities: in 1 of 2 rows .* \(row 1: "):
        decode_labels(graph, np.array([0, 0]), probabilities, ("a", "b"))
