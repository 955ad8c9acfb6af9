"""Fixtures of the training tests: small simulated tables and one tiny trained model.

Everything is built at test time in temporary directories (no committed
binaries). Windows are 1024 samples at 25.6 kHz and the model has 20 stages,
which keeps the whole training suite to seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from vibration_core import dataset
from vibration_testkit.train_tables import (
    FIGURE_PROPERTY,
    N_WINDOWS,
    SAMPLE_RATE,
    TINY,
    WINDOW_LENGTH,
    Trained,
    feature_columns,
    write_columns,
)
from vibration_train.card import build_card
from vibration_train.data import load_table
from vibration_train.fit import fit
from vibration_train.onnx_export import check_parity, to_onnx
from vibration_train.simulator import SimulatedData, simulate

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="session")
def simulated() -> SimulatedData:
    return simulate(N_WINDOWS, seed=7, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH, machines=4)


@pytest.fixture(scope="session")
def raw_parquet(simulated: SimulatedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "windows.parquet"
    dataset.write_parquet(simulated, path, unit="g")
    return path


@pytest.fixture(scope="session")
def small_raw_parquet(simulated: SimulatedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 windows: enough for the reader's checks, cheap to rewrite."""
    n = 40
    path = tmp_path_factory.mktemp("small") / "windows.parquet"
    subset = dataset.WindowSet(
        simulated.machine[:n],
        simulated.timestamp_ns[:n],
        simulated.sample_rate,
        simulated.windows[:n],
        simulated.labels[:n],
    )
    dataset.write_parquet(subset, path, unit="g")
    return path


@pytest.fixture(scope="session")
def feature_table(simulated: SimulatedData) -> dict[str, Any]:
    """The columns of `simulated` as a features table; copy before changing."""
    return feature_columns(simulated)


@pytest.fixture(scope="session")
def features_parquet(feature_table: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_columns(tmp_path_factory.mktemp("features") / "features.parquet", feature_table)


@pytest.fixture(scope="session")
def trained(raw_parquet: Path) -> Trained:
    table = load_table(raw_parquet)
    result = fit(table, TINY)
    model = to_onnx(result.estimator, table.features.shape[1])
    parity = check_parity(result.estimator, model, result.x_test)
    card = build_card(
        table=table, result=result, config=TINY, model=model, model_id="spindle-classifier", version="v1"
    )
    return Trained(table, result, model, parity, card)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures tests recorded (the INT8 accuracy gap), whatever the output capture."""
    figures = [
        str(value)
        for report in terminalreporter.stats.get("passed", [])
        for name, value in getattr(report, "user_properties", [])
        if name == FIGURE_PROPERTY
    ]
    if figures:
        terminalreporter.section("figures")
        for figure in figures:
            terminalreporter.write_line(figure)
