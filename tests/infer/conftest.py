"""Fixtures of the inference tests: tiny real models trained at test time, node data, settings.

Nothing binary is committed: `vibration_testkit.tiny_models` trains the models
and simulates the node's test data. That module imports the training stack,
which takes seconds; the fixtures import it when they first run, so a test
that needs no model (the codec, the link, the metrics) collects without it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from vibration_infer.settings import ValidateSettings

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from vibration_testkit.cards import TinyModel
    from vibration_train.data import TrainingTable
    from vibration_train.simulator import SimulatedData


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The settings read VIBRATION_* and NODE_NAME; a developer's shell must not leak in.
    for name in list(os.environ):
        if name.startswith("VIBRATION_") or name == "NODE_NAME":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def train_table() -> TrainingTable:
    from vibration_testkit import tiny_models

    return tiny_models.train_table()


@pytest.fixture(scope="session")
def node_data() -> SimulatedData:
    from vibration_testkit import tiny_models

    return tiny_models.simulated(192, seed=11)


@pytest.fixture(scope="session")
def test_parquet(node_data: SimulatedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vibration_core import dataset

    path = tmp_path_factory.mktemp("node") / "test-windows.parquet"
    dataset.write_parquet(node_data, path, unit="g")
    return path


@pytest.fixture(scope="session")
def onnx_model(train_table: TrainingTable) -> TinyModel:
    from vibration_testkit import tiny_models

    return tiny_models.onnx_model(train_table)


@pytest.fixture(scope="session")
def tflite_model(train_table: TrainingTable, onnx_model: TinyModel) -> TinyModel:
    """A float TFLite softmax regression on the standardised features, with its card."""
    from vibration_testkit import tiny_models

    return tiny_models.tflite_model(train_table, onnx_model)


@pytest.fixture(scope="session")
def int8_model(train_table: TrainingTable, onnx_model: TinyModel) -> TinyModel:
    """A full-integer softmax regression on transformed features; see `tiny_models.int8_model`."""
    from vibration_testkit import tiny_models

    return tiny_models.int8_model(train_table, onnx_model)


@pytest.fixture
def make_settings(tmp_path: Path, test_parquet: Path) -> Callable[..., ValidateSettings]:
    """Settings for one validation: a per-test cache and termination file, short timeouts."""

    def make(**overrides: Any) -> ValidateSettings:
        values: dict[str, Any] = {
            "test_data": test_parquet,
            "cache_dir": tmp_path / "cache",
            "termination_log": tmp_path / "termination-log",
            # Patient enough for moto and http.server on a loaded runner; the hung-registry
            # tests set their own short timeouts.
            "connect_timeout_s": 2.0,
            "read_timeout_s": 5.0,
            "retries": 1,
            "backoff_s": 0.05,
            "node_name": "node-a",
        }
        values.update(overrides)
        return ValidateSettings(**values)

    return make
