"""`vibration-train simulate` and `fit` end to end, and every refused input."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

from vibration_core.modelcard import CARD_FILENAME, ModelCard, check_artifact
from vibration_testkit.train_tables import SAMPLE_RATE, WINDOW_LENGTH, write_columns
from vibration_train import cli
from vibration_train.cli import EXIT_PARITY, app
from vibration_train.cli_common import EXIT_BAD_INPUT
from vibration_train.errors import ParityError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


FAST = ("--n-estimators", "10")


def invoke(*args: object) -> Result:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def macro_f1_printed(stdout: str) -> float:
    line = next(line for line in stdout.splitlines() if line.strip().startswith("macro avg"))
    return float(line.split()[-2])


def assert_refused(result: Result, code: int, message: str, out: Path) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.splitlines()[-1].startswith("error: "), result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_simulate_then_fit_writes_a_model_and_its_card(tmp_path: Path) -> None:
    data = tmp_path / "data.parquet"
    args = ("--windows", 240, "--seed", 3, "--window-length", WINDOW_LENGTH, "--machines", 3)
    simulated = invoke("simulate", *args, "--out", data)
    assert simulated.exit_code == 0, simulated.output
    assert "wrote 240 windows" in simulated.stdout
    out = tmp_path / "model"
    fitted = invoke("fit", "--data", data, "--out", out, "--version", "v7", *FAST)
    assert fitted.exit_code == 0, fitted.output
    card = ModelCard.load(out / CARD_FILENAME)
    check_artifact(card, out / "model.onnx")
    assert (card.model_id, card.version, card.format) == ("spindle-classifier", "v7", "onnx")
    n = card.metrics.test_samples
    assert f"parity: labels {n}/{n} identical" in fitted.stdout
    assert macro_f1_printed(fitted.stdout) == round(card.metrics.macro_f1, 4)
    assert card.training.samples == 240
    assert card.training.machines == ("machine-00", "machine-01", "machine-02")
    assert sorted(p.name for p in out.iterdir()) == sorted([CARD_FILENAME, "model.onnx"])
    # Every simulated machine carries every class: one of the three is held out whole.
    held_out = card.metrics.held_out
    assert held_out is not None
    assert (held_out.split, len(held_out.machines)) == ("grouped", 1)
    split_line = (
        f"split: grouped (1 of 3 machines held out whole); held-out windows from {held_out.machines[0]}"
    )
    assert split_line in fitted.stdout
    assert f"recording accuracy {held_out.recording_accuracy:.4f}: " in fitted.stdout


def test_one_machine_per_class_is_split_by_time_and_the_card_says_so(
    feature_table: dict[str, Any], tmp_path: Path
) -> None:
    columns = {**feature_table, "machine": [f"m-{label}" for label in feature_table["label"]]}
    data = write_columns(tmp_path / "one-machine-per-class.parquet", columns)
    out = tmp_path / "model"
    signal = ("--sample-rate", SAMPLE_RATE, "--window-length", WINDOW_LENGTH)
    result = invoke("fit", "--data", data, "--out", out, *FAST, *signal)
    assert result.exit_code == 0, result.output
    held_out = ModelCard.load(out / CARD_FILENAME).metrics.held_out
    assert held_out is not None
    assert held_out.split == "time"
    assert held_out.machines == tuple(sorted(set(columns["machine"])))
    assert held_out.recordings == 4  # one machine of each of the four classes
    assert "split: time (some classes are on one machine only: bearing_fault, imbalance," in result.stdout


def test_fit_takes_a_features_table_with_its_signal(features_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = invoke(
        "fit",
        "--data",
        features_parquet,
        "--out",
        out,
        "--model-id",
        "press-7",
        *FAST,
        "--sample-rate",
        SAMPLE_RATE,
        "--window-length",
        WINDOW_LENGTH,
    )
    assert result.exit_code == 0, result.output
    card = ModelCard.load(out / CARD_FILENAME)
    assert card.model_id == "press-7"
    assert (card.signal.sample_rate, card.signal.window_length) == (SAMPLE_RATE, WINDOW_LENGTH)


def test_a_features_table_without_its_signal_is_refused(features_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = invoke("fit", "--data", features_parquet, "--out", out, *FAST)
    assert_refused(result, EXIT_BAD_INPUT, "pass --sample-rate and --window-length", out)


Columns = dict[str, Any]


def _without(*names: str) -> Callable[[Columns], Columns]:
    def change(columns: Columns) -> Columns:
        return {k: v for k, v in columns.items() if k not in names}

    return change


def _labels(relabel: Callable[[list[str]], list[str]]) -> Callable[[Columns], Columns]:
    def change(columns: Columns) -> Columns:
        return {**columns, "label": relabel(list(columns["label"]))}

    return change


def _float_labels_with_nan(columns: Columns) -> Columns:
    # A float label column (0.0..3.0) whose missing labels are NaN, as pyarrow and polars write them
    # apart from null: a class "nan" was trained.
    classes = sorted(set(columns["label"]))
    labels = np.array([float(classes.index(label)) for label in columns["label"]])
    labels[:3] = np.nan
    return {**columns, "label": labels}


def _nan_feature(columns: Columns) -> Columns:
    kurtosis = np.array(columns["kurtosis"], dtype=np.float32)
    kurtosis[5] = np.nan
    return {**columns, "kurtosis": kurtosis}


def _no_rows(columns: Columns) -> Columns:
    return {k: v[:0] for k, v in columns.items()}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_without("kurtosis", "energy_high"), "missing kurtosis, energy_high); its columns are rms, peak"),
        (_without("label"), "a features table needs a 'label' column"),
        (_labels(lambda labels: ["normal"] * len(labels)), "needs at least 2 classes, found only 'normal'"),
        (_labels(lambda labels: ["rare", *labels[1:]]), "too few: 'rare' (1)"),
        (_labels(lambda labels: ["", *labels[1:]]), "1 row(s) have no label (rows 0)"),
        (_float_labels_with_nan, "3 row(s) have no label (rows 0, 1, 2)"),
        (_nan_feature, "1 row(s) hold NaN, inf or missing features (rows 5; columns kurtosis)"),
        (_no_rows, "holds no rows"),
    ],
    ids=[
        "missing-columns",
        "no-label",
        "single-class",
        "class-of-one",
        "empty-label",
        "nan-label",
        "nan",
        "no-rows",
    ],
)
def test_bad_features_tables_are_refused(
    change: Callable[[Columns], Columns], message: str, feature_table: Columns, tmp_path: Path
) -> None:
    data = write_columns(tmp_path / "table.parquet", change(dict(feature_table)))
    out = tmp_path / "model"
    result = invoke(
        "fit",
        "--data",
        data,
        "--out",
        out,
        *FAST,
        "--sample-rate",
        SAMPLE_RATE,
        "--window-length",
        WINDOW_LENGTH,
    )
    assert_refused(result, EXIT_BAD_INPUT, message, out)


def _mixed_rates(table: pa.Table) -> pa.Table:
    rates = np.full(table.num_rows, SAMPLE_RATE)
    rates[::2] = 51200.0
    return table.set_column(table.schema.get_field_index("sample_rate"), "sample_rate", pa.array(rates))


def _nan_samples(table: pa.Table) -> pa.Table:
    samples = table.column("samples").combine_chunks()
    flat = samples.flatten().to_numpy(zero_copy_only=False).copy()
    flat[3 * WINDOW_LENGTH + 17] = np.nan
    column = pa.ListArray.from_arrays(samples.offsets, pa.array(flat, pa.float32()))
    return table.set_column(table.schema.get_field_index("samples"), "samples", column)


def _no_labels(table: pa.Table) -> pa.Table:
    return table.drop_columns(["label"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_mixed_rates, "mixed sample rates (25600, 51200 Hz)"),
        (_nan_samples, "row 3 holds NaN or inf samples"),
        (_no_labels, "missing column(s) ['label']"),
        (lambda table: table.slice(0, 0), "the file holds no rows"),
    ],
    ids=["mixed-sample-rates", "nan-samples", "no-labels", "no-rows"],
)
def test_bad_raw_windows_are_refused(
    change: Callable[[pa.Table], pa.Table], message: str, small_raw_parquet: Path, tmp_path: Path
) -> None:
    data = tmp_path / "windows.parquet"
    pq.write_table(change(pq.read_table(small_raw_parquet)), data)
    out = tmp_path / "model"
    assert_refused(invoke("fit", "--data", data, "--out", out, *FAST), EXIT_BAD_INPUT, message, out)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty (0 bytes)"), (b"label,rms\nnormal,1.0\n", "is not a readable parquet file")],
    ids=["empty-file", "not-parquet"],
)
def test_files_that_are_no_parquet_are_refused(content: bytes, message: str, tmp_path: Path) -> None:
    data = tmp_path / "table.parquet"
    data.write_bytes(content)
    out = tmp_path / "model"
    assert_refused(invoke("fit", "--data", data, "--out", out), EXIT_BAD_INPUT, message, out)


def test_raw_windows_refuse_another_signal_than_theirs(raw_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = invoke("fit", "--data", raw_parquet, "--out", out, "--sample-rate", 10000)
    assert_refused(
        result, EXIT_BAD_INPUT, "--sample-rate 10000 given, but the windows were sampled at 25600 Hz", out
    )


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert_refused(
        invoke("fit", "--data", tmp_path / "nope.parquet", "--out", out), EXIT_BAD_INPUT, "no such file", out
    )


def test_a_parity_failure_exits_3_and_writes_nothing(
    raw_parquet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disagree(*_args: object) -> None:
        raise ParityError(mismatched_labels=2, max_prob_diff=0.4, total=120, tolerance=1e-5)

    monkeypatch.setattr(cli, "check_parity", disagree)
    out = tmp_path / "model"
    result = invoke("fit", "--data", raw_parquet, "--out", out, "--n-estimators", 1)
    assert_refused(result, EXIT_PARITY, "2/120 labels differ", out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--version", "v 1"), "--version 'v 1' must match"),
        (("--model-id", "Spindle"), "--model-id 'Spindle' must match"),
        (("--learning-rate", "0"), "--learning-rate must be > 0, got 0.0"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(
    args: tuple[str, ...], message: str, raw_parquet: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    assert_refused(invoke("fit", "--data", raw_parquet, "--out", out, *args), EXIT_BAD_INPUT, message, out)


def test_an_out_path_that_is_a_file_is_refused(raw_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.write_text("not a directory", encoding="utf-8")
    result = invoke("fit", "--data", raw_parquet, "--out", out, *FAST)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "exists and is not a directory" in result.stderr


def test_registry_commands_are_mounted() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("simulate", "fit", "publish", "list"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["simulate", "fit", "publish", "list"])
def test_every_command_explains_itself(command: str) -> None:
    # Help text is rich markup: an unescaped "[/prefix]" once crashed publish --help.
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


def test_simulate_takes_a_subset_of_the_classes(tmp_path: Path) -> None:
    data = tmp_path / "three.parquet"
    result = invoke("simulate", "--windows", 30, "--window-length", WINDOW_LENGTH, "--classes",
                    "normal, imbalance,misalignment", "--out", data)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 30 windows (imbalance 10, misalignment 10, normal 10)" in result.stdout


def test_simulate_refuses_an_unknown_class_by_name(tmp_path: Path) -> None:
    out = tmp_path / "bad.parquet"
    result = invoke("simulate", "--windows", 30, "--classes", "normal,gearbox", "--out", out)
    assert_refused(result, EXIT_BAD_INPUT, "--classes: unknown ['gearbox']", out)


# --- units: declared by the data or the flag, recorded in the card ------------------------


def test_the_card_records_the_unit_simulate_wrote(tmp_path: Path) -> None:
    data = tmp_path / "data.parquet"
    args = ("--windows", 120, "--window-length", WINDOW_LENGTH, "--machines", 2, "--unit", "m/s^2")
    simulated = invoke("simulate", *args, "--out", data)
    assert simulated.exit_code == 0, simulated.output
    assert "in m/s^2" in simulated.stdout
    in_g = tmp_path / "g.parquet"
    assert invoke("simulate", *args[:-2], "--out", in_g).exit_code == 0
    ratio = (
        pq.read_table(data).column("samples")[0].values.to_numpy()
        / pq.read_table(in_g).column("samples")[0].values.to_numpy()
    )
    np.testing.assert_allclose(ratio[np.isfinite(ratio)], 9.80665, rtol=1e-6)
    out = tmp_path / "model"
    assert invoke("fit", "--data", data, "--out", out, *FAST).exit_code == 0
    assert ModelCard.load(out / CARD_FILENAME).signal.unit == "m/s^2"


def test_a_features_table_that_does_not_say_its_unit_needs_the_flag(
    feature_table: Columns, tmp_path: Path
) -> None:
    data = write_columns(tmp_path / "reference.parquet", dict(feature_table), unit=None)
    signal = ("--sample-rate", SAMPLE_RATE, "--window-length", WINDOW_LENGTH)
    out = tmp_path / "model"
    refused = invoke("fit", "--data", data, "--out", out, *FAST, *signal)
    assert_refused(refused, EXIT_BAD_INPUT, "does not say the unit of its samples (schema metadata", out)
    assert "pass --unit, one of 'g', 'm/s^2'" in refused.stderr
    fitted = invoke("fit", "--data", data, "--out", out, *FAST, *signal, "--unit", "g")
    assert fitted.exit_code == 0, fitted.output
    assert ModelCard.load(out / CARD_FILENAME).signal.unit == "g"


def test_a_unit_flag_that_contradicts_the_file_is_refused(small_raw_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = invoke("fit", "--data", small_raw_parquet, "--out", out, *FAST, "--unit", "m/s^2")
    assert_refused(
        result, EXIT_BAD_INPUT, "--unit m/s^2 given, but the file declares g (vibration.unit)", out
    )


def test_an_unknown_unit_in_the_file_is_refused(feature_table: Columns, tmp_path: Path) -> None:
    data = write_columns(tmp_path / "counts.parquet", dict(feature_table), unit="mm/s")
    out = tmp_path / "model"
    signal = ("--sample-rate", SAMPLE_RATE, "--window-length", WINDOW_LENGTH)
    result = invoke("fit", "--data", data, "--out", out, *FAST, *signal)
    assert_refused(result, EXIT_BAD_INPUT, "vibration.unit is 'mm/s'; accepted units are 'g'", out)


def test_log_events_go_to_stderr_as_json_lines_with_log_format_json(tmp_path: Path) -> None:
    # A process of its own: in-process, pytest's handlers already own the root logger.
    command = "import sys; from vibration_train.cli import app; sys.exit(app())"
    flags = ["--log-level", "info", "--log-format", "json"]
    simulate = ["simulate", "--windows", "4", "--window-length", "256", "--out", str(tmp_path / "d.parquet")]
    done = subprocess.run(
        [sys.executable, "-c", command, *flags, *simulate],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    steps = [(e["level"], e["logger"], e["event"], e["step"]) for e in logged]
    assert steps == [
        ("info", "vibration_train.cli_common", "step_done", "simulating 4 windows"),
        ("info", "vibration_train.cli_common", "step_done", f"writing {tmp_path / 'd.parquet'}"),
    ]


def test_a_table_labelled_with_integers_needs_its_class_names(feature_table: Columns, tmp_path: Path) -> None:
    # The reference pipeline's tables label windows 0..3: a card of classes "0".."3" alerted on
    # "0" and had no normal class. --labels names them, the i-th name for the i-th smallest.
    names = ("normal", "imbalance", "misalignment", "bearing_fault")
    columns = dict(feature_table)
    columns["label"] = [names.index(str(label)) for label in feature_table["label"]]
    data = write_columns(tmp_path / "reference.parquet", columns)
    signal = ("--sample-rate", SAMPLE_RATE, "--window-length", WINDOW_LENGTH)
    out = tmp_path / "model"
    refused = invoke("fit", "--data", data, "--out", out, *FAST, *signal)
    assert_refused(
        refused, EXIT_BAD_INPUT, "the labels are integers (0, 1, 2, 3): name the classes with", out
    )
    fitted = invoke("fit", "--data", data, "--out", out, *FAST, *signal, "--labels", ",".join(names))
    assert fitted.exit_code == 0, fitted.output
    assert "labels 0, 1, 2, 3 read as normal, imbalance, misalignment, bearing_fault" in fitted.stderr
    assert set(ModelCard.load(out / CARD_FILENAME).labels) == set(names)
    again = tmp_path / "again"
    short = invoke("fit", "--data", data, "--out", again, *FAST, *signal, "--labels", "normal,fault")
    assert_refused(short, EXIT_BAD_INPUT, "--labels gives 2 names for 4 integer classes", again)


def test_raw_windows_labelled_with_integers_take_their_class_names(
    small_raw_parquet: Path, tmp_path: Path
) -> None:
    # The feature table of the reference pipeline's habit, as raw windows: the label column is int64.
    names = ("normal", "imbalance", "misalignment", "bearing_fault")
    table = pq.read_table(small_raw_parquet)
    numbers = pa.array([names.index(label) for label in table.column("label").to_pylist()], pa.int64())
    data = tmp_path / "windows.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", numbers), data)
    out = tmp_path / "model"
    refused = invoke("fit", "--data", data, "--out", out, *FAST)
    assert_refused(refused, EXIT_BAD_INPUT, "the labels are integers (0, 1, 2, 3): name the classes", out)
    fitted = invoke("fit", "--data", data, "--out", out, *FAST, "--labels", ",".join(names))
    assert fitted.exit_code == 0, fitted.output
    assert set(ModelCard.load(out / CARD_FILENAME).labels) == set(names)


def test_integer_timestamps_in_milliseconds_are_read_as_milliseconds(
    feature_table: Columns, tmp_path: Path
) -> None:
    # A historian's or Node-RED's export: ms since the epoch. Read as ns they put the card's
    # training dates in January 1970.
    columns = dict(feature_table)
    stamps_ns = feature_table["timestamp"].cast(pa.int64()).to_numpy()
    columns["timestamp"] = stamps_ns // 10**6
    data = write_columns(tmp_path / "historian.parquet", columns)
    out = tmp_path / "model"
    fitted = invoke(
        "fit",
        "--data",
        data,
        "--out",
        out,
        *FAST,
        "--sample-rate",
        SAMPLE_RATE,
        "--window-length",
        WINDOW_LENGTH,
    )
    assert fitted.exit_code == 0, fitted.output
    card = ModelCard.load(out / CARD_FILENAME)
    assert int(card.training.start.timestamp()) == int(stamps_ns.min()) // 10**9
