"""The parquet contract for windows of raw vibration: write and read, strictly.

Columns (`COLUMNS`): ``machine`` (string), ``timestamp`` (timestamp[ns, UTC]),
``sample_rate`` (float64), ``samples`` (list<float32>, or list<int16> counts
with a ``scale``) and ``label`` (string; optional for unlabelled data). The
schema metadata ``vibration.unit`` says the samples' unit (``g`` or
``m/s^2``, `vibration_core.units`); integer samples need a scale, a
``scale`` column (units per count, per row) or the schema metadata
``vibration.scale``, and are read as ``counts * scale``. Training reads this
format, the simulator writes it, and every node's test data is in it.
Reading refuses a file that breaks the contract with a `DatasetError`
naming the column or the row, and builds the window matrix from the list
column's flat values without a Python loop per row. pyarrow is imported
lazily: it is the core's ``parquet`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from vibration_core.errors import DatasetError
from vibration_core.units import METADATA_SCALE, METADATA_UNIT, Unit, accepted, parse_unit

if TYPE_CHECKING:
    from pathlib import Path

REQUIRED_COLUMNS = ("machine", "timestamp", "sample_rate", "samples")
LABEL_COLUMN = "label"
SCALE_COLUMN = "scale"


@dataclass(frozen=True)
class Column:
    """One column of a parquet contract, as the docs list it."""

    name: str
    type: str
    required: bool
    description: str


COLUMNS: tuple[Column, ...] = (
    Column("machine", "string", required=True, description="Machine (or recording) the window came from."),
    Column("timestamp", "timestamp[ns, tz=UTC]", required=True, description="Start of the window."),
    Column("sample_rate", "float64", required=True, description="Hz; one value for the whole file."),
    Column(
        "samples",
        "list<float32> or list<int16>",
        required=True,
        description="One window, equal lengths; floats in the file's unit, integers counts (need a scale).",
    ),
    Column("scale", "float64", required=False, description="Units per count of integer samples, per row."),
    Column(
        "label", "string", required=False, description="Class label; required for training and test data."
    ),
)
"""The raw-window schema, in column order."""


class Windows(Protocol):
    """What `write_parquet` needs: a `WindowSet`, the simulator's output, or alike."""

    @property
    def machine(self) -> npt.NDArray[np.str_]:
        """Machine id per window."""
        ...

    @property
    def timestamp_ns(self) -> npt.NDArray[np.int64]:
        """Window start per window, ns since the epoch."""
        ...

    @property
    def sample_rate(self) -> float:
        """Sample rate of every window, Hz."""
        ...

    @property
    def windows(self) -> npt.NDArray[np.float32]:
        """``(n, window_length)`` samples."""
        ...


@dataclass(frozen=True, eq=False)
class WindowSet:
    """Windows read from a parquet file, one row per window."""

    machine: npt.NDArray[np.str_]
    timestamp_ns: npt.NDArray[np.int64]
    sample_rate: float
    windows: npt.NDArray[np.float32]
    """``(n, window_length)``, C-contiguous."""
    labels: npt.NDArray[np.str_] | None
    unit: Unit | None = None
    """What the file's ``vibration.unit`` metadata declares; None when it declares nothing."""

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    @property
    def window_length(self) -> int:
        """Samples per window."""
        return int(self.windows.shape[1])


def write_parquet(data: Windows, path: Path, *, unit: Unit) -> None:
    """Write windows (and labels, when there are any) in the contract's schema, declaring their unit."""
    import pyarrow as pa  # noqa: PLC0415 - the optional parquet extra
    import pyarrow.parquet as pq  # noqa: PLC0415

    n, length = data.windows.shape
    flat = pa.array(np.ascontiguousarray(data.windows, dtype=np.float32).reshape(-1))
    offsets = pa.array(np.arange(0, (n + 1) * length, length, dtype=np.int32))
    columns: dict[str, Any] = {
        "machine": pa.array(np.asarray(data.machine).astype(str), pa.string()),
        "timestamp": pa.array(np.asarray(data.timestamp_ns, dtype=np.int64), pa.timestamp("ns", tz="UTC")),
        "sample_rate": pa.array(np.full(n, float(data.sample_rate)), pa.float64()),
        "samples": pa.ListArray.from_arrays(offsets, flat),
    }
    labels = getattr(data, "labels", None)
    if labels is not None:
        columns[LABEL_COLUMN] = pa.array(np.asarray(labels).astype(str), pa.string())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table(columns).replace_schema_metadata({METADATA_UNIT: unit.encode()}), tmp)
    tmp.replace(path)


def read_windows(path: Path, *, require_labels: bool = True) -> WindowSet:
    """Read and check a parquet file of windows; see the module docstring for the contract."""
    table = _read_table(path)
    where = str(path)
    if table.num_rows == 0:
        raise DatasetError(where, "the file holds no rows")
    wanted = REQUIRED_COLUMNS + ((LABEL_COLUMN,) if require_labels else ())
    missing = [name for name in wanted if name not in table.column_names]
    if missing:
        raise DatasetError(where, f"missing column(s) {missing}; the file has {table.column_names}")
    machine = _strings(table, "machine", where)
    timestamps = _timestamps(table, where)
    sample_rate = _sample_rate(table, where)
    windows = _windows(table, where)
    labels = _labels(table, where) if LABEL_COLUMN in table.column_names else None
    return WindowSet(machine, timestamps, sample_rate, windows, labels, declared_unit(table.schema, where))


def declared_unit(schema: Any, where: str) -> Unit | None:  # noqa: ANN401 - a pyarrow Schema
    """The unit a parquet schema's ``vibration.unit`` metadata declares, None without one."""
    raw = (schema.metadata or {}).get(METADATA_UNIT)
    if raw is None:
        return None
    text = raw.decode("utf-8", errors="replace")
    unit = parse_unit(text)
    if unit is None:
        raise DatasetError(
            where, f"schema metadata {METADATA_UNIT.decode()} is {text!r}; accepted units are {accepted()}"
        )
    return unit


def _read_table(path: Path) -> Any:  # noqa: ANN401 - a pyarrow Table; pyarrow ships no types
    import pyarrow as pa  # noqa: PLC0415 - the optional parquet extra
    import pyarrow.parquet as pq  # noqa: PLC0415

    if not path.is_file():
        raise DatasetError(str(path), "no such file")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(str(path), f"not a readable parquet file ({exc})") from exc


def _first_null(column: Any) -> int | None:  # noqa: ANN401 - a pyarrow ChunkedArray
    if column.null_count == 0:
        return None
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def _strings(table: Any, name: str, where: str) -> npt.NDArray[np.str_]:  # noqa: ANN401
    import pyarrow as pa  # noqa: PLC0415

    column = table.column(name)
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DatasetError(where, f"column {name!r} must be string, is {column.type}")
    if pa.types.is_dictionary(column.type):  # pandas' category: strings, stored once each
        column = column.cast(kind)
    null = _first_null(column)
    if null is not None:
        raise DatasetError(where, f"column {name!r} is null in row {null}")
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=str)


def _labels(table: Any, where: str) -> npt.NDArray[np.str_]:  # noqa: ANN401 - a pyarrow Table
    """The label column as text; integer classes (the reference pipeline's 0..3) as their digits.

    Training names integer classes with --labels; a test set labelled so is refused by the
    validator as labels the card does not know, by name.
    """
    import pyarrow as pa  # noqa: PLC0415

    column = table.column(LABEL_COLUMN)
    if pa.types.is_integer(column.type):
        table = table.set_column(
            table.schema.get_field_index(LABEL_COLUMN), LABEL_COLUMN, column.cast(pa.string())
        )
    return _strings(table, LABEL_COLUMN, where)


def _timestamps(table: Any, where: str) -> npt.NDArray[np.int64]:  # noqa: ANN401
    import pyarrow as pa  # noqa: PLC0415

    column = table.column("timestamp")
    if not pa.types.is_timestamp(column.type):
        raise DatasetError(where, f"column 'timestamp' must be timestamp[ns, tz=UTC], is {column.type}")
    null = _first_null(column)
    if null is not None:
        raise DatasetError(where, f"column 'timestamp' is null in row {null}")
    return np.asarray(column.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy(), dtype=np.int64)


def _sample_rate(table: Any, where: str) -> float:  # noqa: ANN401
    import pyarrow as pa  # noqa: PLC0415

    column = table.column("sample_rate")
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise DatasetError(where, f"column 'sample_rate' must be a number, is {column.type}")
    null = _first_null(column)
    if null is not None:
        raise DatasetError(where, f"column 'sample_rate' is null in row {null}")
    rates = np.unique(column.to_numpy().astype(np.float64))
    if rates.size > 1:
        shown = ", ".join(f"{rate:g}" for rate in rates[:10])
        raise DatasetError(where, f"mixed sample rates ({shown} Hz); one file holds one sample rate")
    rate = float(rates[0])
    if not np.isfinite(rate) or rate <= 0:
        raise DatasetError(where, f"sample_rate must be a positive number of Hz, is {rate}")
    return rate


def _windows(table: Any, where: str) -> npt.NDArray[np.float32]:  # noqa: ANN401
    import pyarrow as pa  # noqa: PLC0415

    column = table.column("samples")
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) or not (
        pa.types.is_floating(column.type.value_type) or pa.types.is_integer(column.type.value_type)
    ):
        raise DatasetError(where, f"column 'samples' must be list<float32>, is {column.type}")
    null = _first_null(column)
    if null is not None:
        raise DatasetError(where, f"column 'samples' is null in row {null}")
    combined = column.combine_chunks()
    lengths = combined.value_lengths().to_numpy()
    if lengths[0] < 2:  # noqa: PLR2004 - the shortest window with a spectrum
        raise DatasetError(where, f"row 0 holds {lengths[0]} samples; a window needs at least 2")
    odd = np.flatnonzero(lengths != lengths[0])
    if odd.size:
        row = int(odd[0])
        raise DatasetError(
            where, f"windows differ in length: row 0 has {lengths[0]} samples, row {row} has {lengths[row]}"
        )
    flat = combined.flatten().to_numpy(zero_copy_only=False)
    windows = np.ascontiguousarray(flat, dtype=np.float32).reshape(len(lengths), int(lengths[0]))
    if pa.types.is_integer(column.type.value_type):
        windows *= _scales(table, where, f"list<{column.type.value_type}>")
    finite = np.isfinite(windows).all(axis=1)
    if not finite.all():
        raise DatasetError(where, f"row {int(np.argmin(finite))} holds NaN or inf samples")
    return windows


def _scales(table: Any, where: str, samples_type: str) -> npt.NDArray[np.float32]:  # noqa: ANN401
    """Units per count of integer samples: ``(n, 1)``, from the scale column or the metadata."""
    import pyarrow as pa  # noqa: PLC0415

    n = table.num_rows
    if SCALE_COLUMN in table.column_names:
        column = table.column(SCALE_COLUMN)
        if not pa.types.is_floating(column.type) or column.null_count:
            raise DatasetError(where, f"column 'scale' must be a float without nulls, is {column.type}")
        scales: npt.NDArray[np.float32] = column.to_numpy().astype(np.float32).reshape(n, 1)
    else:
        raw = (table.schema.metadata or {}).get(METADATA_SCALE)
        if raw is None:
            raise DatasetError(
                where,
                f"column 'samples' holds {samples_type}: integer counts with no scale; add a float column "
                f"'scale' (units per count, per row) or the schema metadata {METADATA_SCALE.decode()}",
            )
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        scales = np.full((n, 1), value, dtype=np.float32)
    bad = np.flatnonzero(~(np.isfinite(scales[:, 0]) & (scales[:, 0] > 0)))
    if bad.size:
        raise DatasetError(where, f"the scale of row {int(bad[0])} is {scales[bad[0], 0]}; it must be > 0")
    return scales
