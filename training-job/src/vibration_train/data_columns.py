"""The label, machine and timestamp columns of a training table, read into arrays and checked.

Each reader refuses what a model card cannot record or the split cannot use
(an empty label, a missing machine, a timestamp that is no time) with a
`TrainingDataError` that names the rows or the column. Integer timestamps
are ns since the epoch by the contract, but exports in s, ms or us are read
by their size (`_EPOCH_UNITS`). `check_classes` refuses labels no model
can be trained and held out on.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from vibration_train.errors import TrainingDataError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

logger = logging.getLogger("vibration_train.data")  # its events kept their logger when they moved

MACHINE_COLUMN: Final = "machine"
TIMESTAMP_COLUMN: Final = "timestamp"


def read_labels(source: str, values: Sequence[object] | npt.NDArray[Any]) -> npt.NDArray[np.str_]:
    """Return the labels as strings; refuse a row without one."""
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    # A float column's NaN is no label either: pyarrow and polars write it apart from null.
    empty = [
        i
        for i, label in enumerate(items)
        if label is None or (isinstance(label, float) and math.isnan(label)) or not str(label).strip()
    ]
    if empty:
        shown = ", ".join(str(i) for i in empty[:10]) + (", ..." if len(empty) > 10 else "")  # noqa: PLR2004
        raise TrainingDataError(source, f"{len(empty)} row(s) have no label (rows {shown})")
    return np.asarray([str(label) for label in items], dtype=str)


def read_machines(source: str, table: pa.Table) -> npt.NDArray[np.str_] | None:
    """Return each row's machine, None without the column; refuse a missing value."""
    if MACHINE_COLUMN not in table.column_names:
        return None
    values = table.column(MACHINE_COLUMN).to_pylist()
    if any(value is None for value in values):
        raise TrainingDataError(source, f"column {MACHINE_COLUMN!r} has missing values")
    return np.asarray([str(value) for value in values], dtype=str)


def read_timestamps(source: str, table: pa.Table) -> npt.NDArray[np.int64] | None:
    """Return each row's window start in ns since the epoch, None without the column."""
    if TIMESTAMP_COLUMN not in table.column_names:
        return None
    column = table.column(TIMESTAMP_COLUMN)
    if column.null_count:
        raise TrainingDataError(
            source, f"column {TIMESTAMP_COLUMN!r} has {column.null_count} missing value(s)"
        )
    if pa.types.is_timestamp(column.type):
        # A zone-less timestamp is read as UTC, the zone every window start is stated in.
        return np.asarray(column.cast(pa.timestamp("ns", tz=column.type.tz)).to_numpy().astype(np.int64))
    if pa.types.is_integer(column.type):
        return _integer_ns(source, np.asarray(column.to_numpy(), dtype=np.int64))
    raise TrainingDataError(
        source,
        f"column {TIMESTAMP_COLUMN!r} must hold timestamps or integers since the epoch (ns; s, ms, us "
        "by their size), "
        f"it holds {column.type}",
    )


_EPOCH_UNITS: Final = ((1e11, "s", 10**9), (1e14, "ms", 10**6), (1e17, "us", 10**3))
"""Integer timestamps below each bound, read as that unit: 1e11 s, 1e14 ms, 1e17 us all lie past 5138,
and 1e17 ns is 1973; a table of this century's windows is unambiguous."""


def _integer_ns(source: str, values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Integer timestamps as ns since the epoch: ns as the contract says, or s, ms, us by their size.

    A historian's or Node-RED's export (ms since the epoch) read as ns put the card's training
    dates in January 1970; the order of the windows, which the split uses, is the same either way.
    """
    largest = int(np.abs(values).max()) if values.size else 0
    for bound, unit, factor in _EPOCH_UNITS:
        if 0 < largest < bound:
            if largest * factor > np.iinfo(np.int64).max:  # past 2262: ns since the epoch cannot hold it
                detail = (
                    f"column {TIMESTAMP_COLUMN!r} holds {largest}, past 2262 read as {unit} since the epoch"
                )
                raise TrainingDataError(source, detail)
            logger.warning(
                "timestamps_read_as",
                extra={
                    "source": source,
                    "unit": unit,
                    "detail": f"integers up to {largest} read as {unit} since the epoch",
                },
            )
            return values * factor
    return values


def check_classes(source: str, counts: Mapping[str, int]) -> None:
    """Refuse labels a model cannot learn from: one class, or a class of one window."""
    if len(counts) < 2:  # noqa: PLR2004 - a classifier needs two classes
        only = next(iter(counts), "")
        raise TrainingDataError(source, f"needs at least 2 classes, found only {only!r}")
    scarce = {label: count for label, count in counts.items() if count < 2}  # noqa: PLR2004
    if scarce:
        listed = ", ".join(f"{label!r} ({count})" for label, count in scarce.items())
        raise TrainingDataError(
            source,
            f"every class needs at least 2 windows, one to train on and one to hold out; too few: {listed}",
        )
