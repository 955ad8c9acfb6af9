"""Load a training table: raw windows or precomputed features, with labels.

Two kinds of parquet file are accepted, told apart by their columns:

- raw windows (a ``samples`` column): read by the core's dataset reader,
  which owns that format and its checks (one sample rate, equal lengths, no
  NaN), then turned into features by the one extractor;
- precomputed features: the ten `FEATURE_NAMES` columns as numbers and a
  ``label`` column, optionally ``machine`` and ``timestamp``. Such a table
  does not say what signal its features came from, so the caller passes the
  sample rate and the window length.

Labels are free strings (the card records them), but a model needs at least
two classes, and the split (`vibration_train.split`) at least two windows of
each, one to train on and one to hold out.
Anything unusable raises a `TrainingDataError` that names the problem; the
label, machine and timestamp columns are read by `vibration_train.data_columns`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from vibration_core import dataset
from vibration_core.errors import DatasetError, FeatureInputError
from vibration_core.features import FEATURE_NAMES, band_bins, extract_features
from vibration_core.units import METADATA_UNIT, Unit, accepted
from vibration_train.data_columns import (
    MACHINE_COLUMN,
    TIMESTAMP_COLUMN,
    check_classes,
    read_labels,
    read_machines,
    read_timestamps,
)
from vibration_train.errors import TrainingDataError
from vibration_train.feature_checks import check_feature_table
from vibration_train.simulator import UNIT as SIMULATED_UNIT

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from vibration_train.simulator import SimulatedData

logger = logging.getLogger(__name__)

SAMPLES_COLUMN: Final = "samples"
LABEL_COLUMN: Final = "label"
_FEATURE_BLOCK: Final = 1024  # windows per extractor call: granularity of the progress callback


@dataclass(frozen=True, eq=False)
class TrainingTable:
    """Features and labels of every window, and the signal they came from."""

    source: str
    features: npt.NDArray[np.float32]
    """``(n, 10)`` in `FEATURE_NAMES` order."""
    labels: npt.NDArray[np.str_]
    machines: npt.NDArray[np.str_] | None
    """Machine of each window, None when the table does not say."""
    timestamps_ns: npt.NDArray[np.int64] | None
    """Window start, ns since the Unix epoch (UTC), None when the table does not say."""
    sample_rate: float
    window_length: int
    modified: datetime
    """When the file was last written: the date range of a table without timestamps."""
    unit: Unit
    """Unit of the samples (for a features table: of the samples its features came from)."""

    def date_range(self) -> tuple[datetime, datetime]:
        """Return the earliest and latest window start (the file's time without timestamps)."""
        if self.timestamps_ns is None or self.timestamps_ns.size == 0:
            return self.modified, self.modified
        first, last = int(self.timestamps_ns.min()), int(self.timestamps_ns.max())
        return _from_ns(first), _from_ns(last)

    def machine_ids(self) -> tuple[str, ...]:
        """Return the distinct machines, sorted; empty when the table does not say."""
        if self.machines is None:
            return ()
        return tuple(sorted(set(self.machines.tolist())))

    def class_counts(self) -> dict[str, int]:
        """Return windows per label, labels sorted."""
        values, counts = np.unique(self.labels, return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts, strict=True)}

    @classmethod
    def from_simulated(cls, data: SimulatedData, source: str = "simulated") -> TrainingTable:
        """The table of simulated windows, without a parquet file in between (tests, tools)."""
        return cls(
            source=source,
            features=extract_features(data.windows, data.sample_rate),
            labels=data.labels,
            machines=data.machine,
            timestamps_ns=data.timestamp_ns,
            sample_rate=data.sample_rate,
            window_length=int(data.windows.shape[1]),
            modified=_from_ns(int(data.timestamp_ns.max())),
            unit=SIMULATED_UNIT,
        )


def load_table(
    path: Path,
    *,
    sample_rate: float | None = None,
    window_length: int | None = None,
    unit: Unit | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainingTable:
    """Read `path` and return its features and labels.

    `sample_rate` and `window_length` are required for a features table; for
    raw windows they are optional and, when given, must match the file.
    `unit` is required when the file does not declare one, and must match it
    when it does.
    `on_progress(done, total)` follows the feature extraction of raw windows.
    """
    source = str(path)
    schema = _read_schema(path)
    try:
        declared = dataset.declared_unit(schema, source)
    except DatasetError as exc:
        raise TrainingDataError(source, exc.detail) from exc
    resolved = _unit(source, declared, unit)
    if SAMPLES_COLUMN in schema.names:
        table = _load_raw(path, sample_rate, window_length, resolved, on_progress)
    elif set(FEATURE_NAMES) <= set(schema.names):
        table = _load_features(path, schema, sample_rate, window_length, resolved)
    else:
        missing = [name for name in FEATURE_NAMES if name not in schema.names]
        raise TrainingDataError(
            source,
            f"has neither a {SAMPLES_COLUMN!r} column (raw windows) nor all ten feature columns "
            f"(missing {', '.join(missing)}); its columns are {', '.join(schema.names) or 'none'}",
        )
    check_classes(source, table.class_counts())
    logger.info(
        "training_table_loaded",
        extra={
            "source": source,
            "windows": table.labels.size,
            "classes": len(table.class_counts()),
            "sample_rate": table.sample_rate,
            "window_length": table.window_length,
        },
    )
    return table


def _unit(source: str, declared: Unit | None, given: Unit | None) -> Unit:
    """The table's unit: the file's declaration, the caller's, and never two that disagree."""
    if declared is not None and given is not None and declared != given:
        raise TrainingDataError(
            source, f"--unit {given} given, but the file declares {declared} ({METADATA_UNIT.decode()})"
        )
    unit = declared or given
    if unit is None:
        raise TrainingDataError(
            source,
            f"does not say the unit of its samples (schema metadata {METADATA_UNIT.decode()}): "
            f"pass --unit, one of {accepted()}; the model card records it and nodes hold inputs to it",
        )
    return unit


def _read_schema(path: Path) -> pa.Schema:
    if not path.is_file():
        raise TrainingDataError(str(path), "no such file")
    if path.stat().st_size == 0:
        raise TrainingDataError(str(path), "is empty (0 bytes)")
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise TrainingDataError(str(path), f"is not a readable parquet file: {exc}") from exc


def _load_raw(
    path: Path,
    sample_rate: float | None,
    window_length: int | None,
    unit: Unit,
    on_progress: Callable[[int, int], None] | None,
) -> TrainingTable:
    source = str(path)
    try:
        windows = dataset.read_windows(path, require_labels=True)
    except DatasetError as exc:
        raise TrainingDataError(source, exc.detail) from exc
    if windows.labels is None:  # refused by the reader already; kept for the type checker
        raise TrainingDataError(source, f"has no {LABEL_COLUMN!r} column; training needs labelled windows")
    n, length = (int(size) for size in windows.windows.shape)
    if sample_rate is not None and sample_rate != windows.sample_rate:
        raise TrainingDataError(
            source,
            f"--sample-rate {sample_rate:g} given, "
            f"but the windows were sampled at {windows.sample_rate:g} Hz",
        )
    if window_length is not None and window_length != length:
        raise TrainingDataError(
            source, f"--window-length {window_length} given, but the windows hold {length} samples"
        )
    features = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    for start in range(0, n, _FEATURE_BLOCK):
        stop = min(start + _FEATURE_BLOCK, n)
        try:
            features[start:stop] = extract_features(windows.windows[start:stop], windows.sample_rate)
        except FeatureInputError as exc:
            # The extractor counts windows within its batch; name the file's rows.
            rows = ", ".join(str(start + i) for i in exc.windows[:10])
            raise TrainingDataError(source, exc.reason + (f" (file rows {rows})" if rows else "")) from exc
        if on_progress is not None:
            on_progress(stop, n)
    return TrainingTable(
        source=source,
        features=features,
        labels=read_labels(source, windows.labels),
        machines=windows.machine,
        timestamps_ns=windows.timestamp_ns,
        sample_rate=windows.sample_rate,
        window_length=length,
        modified=_modified(path),
        unit=unit,
    )


def _load_features(
    path: Path, schema: pa.Schema, sample_rate: float | None, window_length: int | None, unit: Unit
) -> TrainingTable:
    source = str(path)
    if LABEL_COLUMN not in schema.names:
        raise TrainingDataError(
            source,
            f"a features table needs a {LABEL_COLUMN!r} column; its columns are {', '.join(schema.names)}",
        )
    if sample_rate is None or window_length is None:
        raise TrainingDataError(
            source,
            "a features table does not say what signal it came from: "
            "pass --sample-rate and --window-length (the model card records them)",
        )
    try:
        band_bins(window_length, sample_rate)
    except FeatureInputError as exc:
        raise TrainingDataError(source, f"--sample-rate/--window-length: {exc.reason}") from exc
    for name in FEATURE_NAMES:
        field_type = schema.field(name).type
        if not (pa.types.is_floating(field_type) or pa.types.is_integer(field_type)):
            raise TrainingDataError(
                source, f"feature column {name!r} must hold numbers, it holds {field_type}"
            )
    columns = [*FEATURE_NAMES, LABEL_COLUMN]
    columns += [name for name in (MACHINE_COLUMN, TIMESTAMP_COLUMN) if name in schema.names]
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise TrainingDataError(source, f"cannot be read: {exc}") from exc
    if table.num_rows == 0:
        raise TrainingDataError(source, "holds no rows")
    features = np.column_stack(
        [table.column(name).to_numpy(zero_copy_only=False).astype(np.float32) for name in FEATURE_NAMES]
    )
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        cols = [FEATURE_NAMES[i] for i in np.flatnonzero(bad.any(axis=0))]
        shown = ", ".join(str(r) for r in rows[:10]) + (", ..." if rows.size > 10 else "")  # noqa: PLR2004
        raise TrainingDataError(
            source,
            f"{rows.size} row(s) hold NaN, inf or missing features (rows {shown}; columns {', '.join(cols)})",
        )
    check_feature_table(source, features)
    return TrainingTable(
        source=source,
        features=np.ascontiguousarray(features),
        labels=read_labels(source, table.column(LABEL_COLUMN).to_pylist()),
        machines=read_machines(source, table),
        timestamps_ns=read_timestamps(source, table),
        sample_rate=float(sample_rate),
        window_length=int(window_length),
        modified=_modified(path),
        unit=unit,
    )


def _modified(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)


def _from_ns(value: int) -> datetime:
    seconds, ns = divmod(value, 10**9)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=ns // 1000)
