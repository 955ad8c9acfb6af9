"""A features table from elsewhere must hold the ten features as the extractor defines them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from vibration_core.features import FEATURE_NAMES, extract_features
from vibration_testkit.train_tables import SAMPLE_RATE, WINDOW_LENGTH, feature_columns, write_columns
from vibration_train.data import load_table
from vibration_train.errors import TrainingDataError
from vibration_train.simulator import simulate

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


@pytest.fixture(scope="module")
def columns() -> dict[str, Any]:
    return feature_columns(simulate(120, seed=3, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH))


def load(path: Path) -> None:
    load_table(path, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH)


def excess_kurtosis(c: dict[str, Any]) -> None:
    c["kurtosis"] = c["kurtosis"] - 3  # scipy.stats.kurtosis's default


def swapped_energies(c: dict[str, Any]) -> None:
    c["energy_mid"], c["energy_high"] = c["energy_high"], c["energy_mid"]


def crest_over_peak(c: dict[str, Any]) -> None:
    c["crest_factor"] = c["rms"] / np.maximum(c["peak"], 1e-12)


def rounded(c: dict[str, Any]) -> None:
    for name in FEATURE_NAMES:  # a table exported with four decimals: energies in g² lose most digits
        c[name] = np.round(c[name].astype(np.float64), 4)


def three_digits(c: dict[str, Any]) -> None:
    for name in FEATURE_NAMES:
        c[name] = np.array([float(f"{v:.3g}") for v in c[name]])


def quiet_machine_four_decimals(c: dict[str, Any]) -> None:
    scale = 0.005  # rms about 0.4 mg: four decimals keep one or two digits of rms, none of the energies
    for name in ("rms", "peak"):
        c[name] = c[name] * scale
    for name in ("energy_low", "energy_mid", "energy_high"):
        c[name] = c[name] * scale**2
    rounded(c)


def energies_without_two_over_n(c: dict[str, Any]) -> None:
    for name in ("energy_low", "energy_mid", "energy_high"):  # |rfft(x)|**2, not (|rfft(x)| * 2 / n)**2
        c[name] = c[name] * (WINDOW_LENGTH / 2) ** 2


def energies_in_ms2_beside_rms_in_g(c: dict[str, Any]) -> None:
    for name in ("energy_low", "energy_mid", "energy_high"):
        c[name] = c[name] * 9.80665**2


def constant_window(c: dict[str, Any]) -> None:
    c["kurtosis"] = c["kurtosis"].copy()
    c["kurtosis"][0] = 0.0  # a constant window's kurtosis


@pytest.mark.parametrize(
    "change",
    [None, rounded, three_digits, quiet_machine_four_decimals, constant_window],
    ids=["as-extracted", "four-decimals", "three-digits", "quiet-four-decimals", "constant"],
)
def test_a_table_of_the_extractors_features_loads(
    tmp_path: Path, columns: dict[str, Any], change: Callable[[dict[str, Any]], None] | None
) -> None:
    table = dict(columns)
    if change is not None:
        change(table)
    load(write_columns(tmp_path / "features.parquet", table))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (excess_kurtosis, r"kurtosis holds values below 1 .* excess kurtosis .* add 3"),
        (swapped_energies, r"ratio_low, ratio_mid and ratio_high are not each band.s energy over the three"),
        (crest_over_peak, r"crest_factor is not peak / rms in most windows"),
        (energies_without_two_over_n, r"energy_low \+ energy_mid \+ energy_high exceed 4 x rms² .* 2 / n"),
        (energies_in_ms2_beside_rms_in_g, r"exceed 4 x rms² .* in another unit than rms"),
    ],
    ids=["excess-kurtosis", "swapped-energies", "crest", "energies-unscaled", "energies-other-unit"],
)
def test_a_table_computed_otherwise_is_refused_naming_the_column(
    tmp_path: Path, columns: dict[str, Any], change: Callable[[dict[str, Any]], None], message: str
) -> None:
    table = dict(columns)
    change(table)
    with pytest.raises(TrainingDataError, match=message) as info:
        load(write_columns(tmp_path / "features.parquet", table))
    assert "rows, e.g. rows" in str(info.value)


def test_swapped_energies_of_broadband_windows_are_refused(tmp_path: Path) -> None:
    # White noise spreads its energy over every band: no band dominates, every ratio counts.
    noise = np.random.default_rng(5).standard_normal((60, WINDOW_LENGTH)).astype(np.float32)
    features = extract_features(noise, SAMPLE_RATE)
    columns: dict[str, Any] = {name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    columns["label"] = ["normal", "imbalance"] * 30
    load(write_columns(tmp_path / "noise.parquet", columns))
    columns["energy_low"], columns["energy_mid"] = columns["energy_mid"], columns["energy_low"]
    with pytest.raises(TrainingDataError, match="are not each band's energy over the three bands' sum"):
        load(write_columns(tmp_path / "swapped.parquet", columns))
