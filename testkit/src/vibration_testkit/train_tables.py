"""The training tests' small world: 480 windows of 1024 samples at 25.6 kHz, a 20-stage model.

`Trained` bundles one model taken through every library step; the feature
table helpers write what the reference pipeline's feature tables look like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from vibration_core.features import FEATURE_NAMES, extract_features
from vibration_core.units import METADATA_UNIT
from vibration_train.fit import FitConfig

if TYPE_CHECKING:
    from pathlib import Path

    from vibration_core.modelcard import ModelCard
    from vibration_train.data import TrainingTable
    from vibration_train.fit import FitResult
    from vibration_train.onnx_export import OnnxModel, ParityReport
    from vibration_train.simulator import SimulatedData

FIGURE_PROPERTY = "figure"
"""A test's `record_property` name for a figure the test run's summary prints."""

SAMPLE_RATE = 25600.0
WINDOW_LENGTH = 1024
N_WINDOWS = 480
TINY = FitConfig(n_estimators=20)


@dataclass(frozen=True)
class Trained:
    """One model taken through every library step."""

    table: TrainingTable
    result: FitResult
    model: OnnxModel
    parity: ParityReport
    card: ModelCard


def feature_columns(data: SimulatedData) -> dict[str, Any]:
    """The columns of a features table computed from simulated windows."""
    features = extract_features(data.windows, data.sample_rate)
    columns: dict[str, Any] = {name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    columns["label"] = data.labels.tolist()
    columns["machine"] = data.machine.tolist()
    columns["timestamp"] = pa.array(data.timestamp_ns, type=pa.timestamp("ns", tz="UTC"))
    return columns


def write_columns(path: Path, columns: dict[str, Any], unit: str | None = "g") -> Path:
    """A parquet of `columns`, declaring `unit` in its schema metadata (nothing when None)."""
    table = pa.table(columns)
    if unit is not None:
        table = table.replace_schema_metadata({METADATA_UNIT: unit.encode()})
    pq.write_table(table, path)
    return path
