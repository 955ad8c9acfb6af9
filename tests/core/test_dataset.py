"""The parquet contract: round trip, and a named error for each way a file can break it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vibration_core.dataset import WindowSet, read_windows, write_parquet
from vibration_core.errors import DatasetError

if TYPE_CHECKING:
    from pathlib import Path


def window_set(n: int = 6, length: int = 256) -> WindowSet:
    rng = np.random.default_rng(3)
    return WindowSet(
        machine=np.asarray([f"m-{i % 2}" for i in range(n)]),
        timestamp_ns=np.arange(n, dtype=np.int64) * 1_000_000_000 + 1_767_225_600_000_000_000,
        sample_rate=25600.0,
        windows=rng.standard_normal((n, length)).astype(np.float32),
        labels=np.asarray(["normal", "imbalance"] * (n // 2)),
    )


def table(**overrides: Any) -> pa.Table:
    columns: dict[str, Any] = {
        "machine": pa.array(["m-1", "m-2"]),
        "timestamp": pa.array([1, 2], pa.timestamp("ns", tz="UTC")),
        "sample_rate": pa.array([25600.0, 25600.0]),
        "samples": pa.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], pa.list_(pa.float32())),
        "label": pa.array(["normal", "imbalance"]),
    }
    columns.update(overrides)
    return pa.table({name: value for name, value in columns.items() if value is not None})


def test_round_trip_keeps_every_column(tmp_path: Path) -> None:
    data = window_set()
    write_parquet(data, tmp_path / "w.parquet", unit="m/s^2")
    back = read_windows(tmp_path / "w.parquet")
    np.testing.assert_array_equal(back.windows, data.windows)
    np.testing.assert_array_equal(back.timestamp_ns, data.timestamp_ns)
    assert back.labels is not None
    assert back.labels.tolist() == data.labels.tolist()  # type: ignore[union-attr] # labels were given
    assert back.machine.tolist() == data.machine.tolist()
    assert (back.sample_rate, back.window_length, len(back)) == (25600.0, 256, 6)
    assert back.windows.flags.c_contiguous
    assert back.unit == "m/s^2"


def test_unlabelled_data_reads_when_labels_are_not_required(tmp_path: Path) -> None:
    pq.write_table(table(label=None), tmp_path / "u.parquet")
    assert read_windows(tmp_path / "u.parquet", require_labels=False).labels is None
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['label'\]"):
        read_windows(tmp_path / "u.parquet")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"samples": None}, r"missing column\(s\) \['samples'\]; the file has \['machine'"),
        ({"sample_rate": pa.array([25600.0, 51200.0])}, r"mixed sample rates \(25600, 51200 Hz\)"),
        (
            {"samples": pa.array([[0.1, 0.2, 0.3], [0.4, 0.5]], pa.list_(pa.float32()))},
            "row 0 has 3 samples, row 1 has 2",
        ),
        (
            {"samples": pa.array([[0.1, 0.2, 0.3], None], pa.list_(pa.float32()))},
            "'samples' is null in row 1",
        ),
        ({"label": pa.array(["normal", None])}, "'label' is null in row 1"),
        (
            {"samples": pa.array([[0.1, float("nan"), 0.3], [0.4, 0.5, 0.6]], pa.list_(pa.float32()))},
            "row 0 holds NaN or inf",
        ),
        ({"samples": pa.array(["a", "b"])}, "'samples' must be list<float32>, is string"),
        ({"timestamp": pa.array([1, 2])}, "'timestamp' must be timestamp"),
        ({"sample_rate": pa.array([0.0, 0.0])}, "sample_rate must be a positive number"),
    ],
    ids=[
        "missing-column",
        "mixed-rates",
        "ragged",
        "null-samples",
        "null-label",
        "nan",
        "bad-type",
        "bad-ts",
        "zero-rate",
    ],
)
def test_broken_files_are_refused_naming_the_problem(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    pq.write_table(table(**overrides), tmp_path / "bad.parquet")
    with pytest.raises(DatasetError, match=message):
        read_windows(tmp_path / "bad.parquet")


def test_empty_missing_and_non_parquet_files_are_refused(tmp_path: Path) -> None:
    pq.write_table(table().slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(DatasetError, match="holds no rows"):
        read_windows(tmp_path / "empty.parquet")
    with pytest.raises(DatasetError, match="no such file"):
        read_windows(tmp_path / "absent.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="not a readable parquet file"):
        read_windows(tmp_path / "text.parquet")


def test_simulated_windows_round_trip_bit_for_bit(tmp_path: Path) -> None:
    from vibration_train.simulator import simulate  # noqa: PLC0415 - only this test needs the simulator

    data = simulate(12, seed=0, machines=3, window_length=1024)
    write_parquet(data, tmp_path / "sim.parquet", unit="g")
    back = read_windows(tmp_path / "sim.parquet")
    assert back.windows.tobytes() == data.windows.tobytes()
    assert back.labels is not None
    assert back.labels.tolist() == data.labels.tolist()
    assert back.machine.tolist() == data.machine.tolist()
    assert back.timestamp_ns.tolist() == data.timestamp_ns.tolist()
    assert back.sample_rate == data.sample_rate


# --- units and integer counts ----------------------------------------------------------------


def counts(**overrides: Any) -> pa.Table:
    samples = pa.array([[100, -200, 300], [400, 500, -600]], pa.list_(pa.int16()))
    return table(samples=samples, **overrides)


def test_a_file_without_a_unit_reads_as_undeclared(tmp_path: Path) -> None:
    pq.write_table(table(), tmp_path / "plain.parquet")
    assert read_windows(tmp_path / "plain.parquet").unit is None


def test_int16_samples_without_a_scale_are_refused_naming_the_column(tmp_path: Path) -> None:
    pq.write_table(counts(), tmp_path / "counts.parquet")
    with pytest.raises(
        DatasetError, match=r"column 'samples' holds list<int16>: integer counts with no scale"
    ):
        read_windows(tmp_path / "counts.parquet")


def test_int16_samples_take_a_scale_column_or_the_metadata(tmp_path: Path) -> None:
    pq.write_table(counts(scale=pa.array([0.001, 0.002])), tmp_path / "column.parquet")
    np.testing.assert_allclose(
        read_windows(tmp_path / "column.parquet").windows, [[0.1, -0.2, 0.3], [0.8, 1.0, -1.2]], rtol=1e-6
    )
    with_metadata = counts().replace_schema_metadata({b"vibration.scale": b"0.01", b"vibration.unit": b"g"})
    pq.write_table(with_metadata, tmp_path / "metadata.parquet")
    back = read_windows(tmp_path / "metadata.parquet")
    np.testing.assert_allclose(back.windows, [[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]], rtol=1e-6)
    assert back.unit == "g"
    pq.write_table(counts(scale=pa.array([0.001, 0.0])), tmp_path / "zero.parquet")
    with pytest.raises(DatasetError, match=r"the scale of row 1 is 0.0; it must be > 0"):
        read_windows(tmp_path / "zero.parquet")


@pytest.mark.parametrize(("text", "unit"), [(b"g", "g"), (b"m/s^2", "m/s^2"), ("m/s²".encode(), "m/s^2")])
def test_declared_units_are_read(tmp_path: Path, text: bytes, unit: str) -> None:
    pq.write_table(table().replace_schema_metadata({b"vibration.unit": text}), tmp_path / "u.parquet")
    assert read_windows(tmp_path / "u.parquet").unit == unit


def test_an_unknown_unit_is_refused(tmp_path: Path) -> None:
    pq.write_table(table().replace_schema_metadata({b"vibration.unit": b"counts"}), tmp_path / "u.parquet")
    with pytest.raises(DatasetError, match=r"vibration.unit is 'counts'; accepted units are 'g', 'm/s\^2'"):
        read_windows(tmp_path / "u.parquet")


def test_category_columns_read_as_the_strings_they_hold(tmp_path: Path) -> None:
    # pandas writes astype("category") as a dictionary of strings: a valid table of strings.
    categories = {
        "machine": pa.array(["m-1", "m-2"]).dictionary_encode(),
        "label": pa.array(["normal", "imbalance"]).dictionary_encode(),
    }
    pq.write_table(table(**categories), tmp_path / "c.parquet")
    back = read_windows(tmp_path / "c.parquet")
    assert back.machine.tolist() == ["m-1", "m-2"]
    assert back.labels is not None
    assert back.labels.tolist() == ["normal", "imbalance"]
    # Integer classes (the reference pipeline's 0..3) read as their digits: training names them
    # with --labels, a validator refuses them as labels its card does not know.
    pq.write_table(table(label=pa.array([0, 1]).dictionary_encode()), tmp_path / "i.parquet")
    numbered = read_windows(tmp_path / "i.parquet").labels
    assert numbered is not None
    assert numbered.tolist() == ["0", "1"]
    pq.write_table(table(label=pa.array([0.0, 1.0])), tmp_path / "f.parquet")
    with pytest.raises(DatasetError, match="column 'label' must be string, is double"):
        read_windows(tmp_path / "f.parquet")
