"""Whether a features table holds the ten features as the extractor defines them.

A feature table from elsewhere (the reference pipeline's, a historian's
export) is read by column name; nothing else says its numbers mean what the
names say. Three relations hold for every window whatever the signal, so a
table that breaks one was computed otherwise: kurtosis is Pearson's, at least
1 (0 for a constant window), where excess kurtosis (scipy's default) is 3
less and often negative; the crest factor is peak over rms; each ratio is its
band's energy over the three bands' sum. A model trained on such a table
would be served this extractor's features and answer wrongly without a word,
so `check_feature_table` refuses it, naming the column and the likely cause.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from vibration_core.features import FEATURE_NAMES
from vibration_train.errors import TrainingDataError

if TYPE_CHECKING:
    import numpy.typing as npt

TOLERANCE: Final = 1e-3
"""Relative slack of each relation: a table written in float32 (or rounded to a few digits) still fits."""
_SHOWN: Final = 5


def check_feature_table(source: str, features: npt.NDArray[np.float32]) -> None:
    """Refuse a table (rows of `FEATURE_NAMES`) whose columns break a relation every window keeps."""
    values = features.astype(np.float64)
    rms, peak, crest, kurtosis = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    energies, ratios = values[:, 4:7], values[:, 7:10]
    negative = [name for i, name in enumerate(FEATURE_NAMES) if i != 3 and bool((values[:, i] < 0).any())]  # noqa: PLR2004 - kurtosis
    if negative:
        raise TrainingDataError(
            source, f"columns {', '.join(negative)} hold negative values, which no window has"
        )
    _refuse(
        source,
        (kurtosis != 0) & (kurtosis < 1 - TOLERANCE),
        kurtosis,
        "kurtosis holds values below 1 (Pearson kurtosis, m4 / m2**2, is at least 1): this looks like "
        "excess kurtosis (scipy.stats.kurtosis's default, 3 less); add 3, or compute it with fisher=False",
    )
    expected_crest = np.divide(peak, rms, out=np.zeros_like(rms), where=rms > 0)
    _refuse(
        source,
        np.abs(crest - expected_crest) > TOLERANCE * np.maximum(1.0, expected_crest),
        crest,
        "crest_factor is not peak / rms: the columns are swapped or computed otherwise",
    )
    total = energies.sum(axis=1, keepdims=True)
    expected_ratios = np.divide(energies, total, out=np.zeros_like(energies), where=total > 0)
    off = np.abs(ratios - expected_ratios) > TOLERANCE
    for band in range(3):
        name = FEATURE_NAMES[7 + band]
        energy = FEATURE_NAMES[4 + band]
        _refuse(
            source,
            off[:, band],
            ratios[:, band],
            f"{name} is not {energy} over the sum of the three band energies: "
            "the energy or ratio columns are swapped or computed otherwise",
        )


def _refuse(source: str, bad: npt.NDArray[np.bool_], column: npt.NDArray[np.float64], why: str) -> None:
    if not bad.any():
        return
    rows = np.flatnonzero(bad)
    shown = ", ".join(f"{int(r)} ({column[r]:.4g})" for r in rows[:_SHOWN]) + (
        ", ..." if rows.size > _SHOWN else ""
    )
    raise TrainingDataError(source, f"{why}; {rows.size} of {column.size} rows, e.g. rows {shown}")
