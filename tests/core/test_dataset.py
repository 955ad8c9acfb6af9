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
    write_parquet(data, tmp_path / "w.parquet")
    back = read_windows(tmp_path / "w.parquet")
    np.testing.assert_array_equal(back.windows, data.windows)
    np.testing.assert_array_equal(back.timestamp_ns, data.timestamp_ns)
    assert back.labels is not None
    assert back.labels.tolist() == data.labels.tolist()  # type: ignore[union-attr] # labels were given
    assert back.machine.tolist() == data.machine.tolist()
    assert (back.sample_rate, back.window_length, len(back)) == (25600.0, 256, 6)
    assert back.windows.flags.c_contiguous


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
    write_parquet(data, tmp_path / "sim.parquet")
    back = read_windows(tmp_path / "sim.parquet")
    assert back.windows.tobytes() == data.windows.tobytes()
    assert back.labels is not None
    assert back.labels.tolist() == data.labels.tolist()
    assert back.machine.tolist() == data.machine.tolist()
    assert back.timestamp_ns.tolist() == data.timestamp_ns.tolist()
    assert back.sample_rate == data.sample_rate
