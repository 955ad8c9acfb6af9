"""Whether a features table holds the ten features as the extractor defines them.

A feature table from elsewhere (the reference pipeline's, a historian's
export) is read by column name; nothing else says its numbers mean what the
names say. Three relations hold for every window whatever the signal, so a
table that breaks them was computed otherwise:

- kurtosis is Pearson's, at least 1 (0 for a constant window), where excess
  kurtosis (scipy's default) is 3 less and often negative: any row below 1 is
  refused;
- the crest factor is peak over rms;
- each ratio is its band's energy over the three bands' sum (and so they add
  up to 1);
- the three energies, of the amplitude spectrum ``|rfft(x)| * 2 / n``, add
  up to at most twice the mean square (Parseval): energies of another scaling
  (without ``2 / n``) or unit (m/s² beside an rms in g) break it by far, in
  most windows.

Tables exported with a few digits (energies in g² are often below 1e-4) bend
the last two: a table rounded to a fixed number of decimals gets the slack
its rounding step leaves (found from its values), one rounded to significant
digits a relative slack; the crest factor and the ratios' sum are refused
only where most windows break them, the ratios where a tenth of the windows
do. A swapped or otherwise computed column breaks far more. A model trained on
such a table would be served this extractor's features and answer wrongly
without a word, so `check_feature_table` refuses it, naming the column and the
likely cause.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from vibration_core.features import FEATURE_NAMES
from vibration_train.errors import TrainingDataError

if TYPE_CHECKING:
    import numpy.typing as npt

KURTOSIS_SLACK: Final = 0.05
"""How far below 1 a rounded Pearson kurtosis may read."""
CREST_SLACK: Final = 0.05
"""Relative difference of the crest factor from peak / rms that a rounded table may show."""
RATIO_SUM_SLACK: Final = 0.05
"""How far from 1 the three ratios of a rounded table may add up."""
RATIO_SLACK: Final = 1e-4
"""How far a ratio may differ from its band's share of the energy, plus the two slacks below."""
RATIO_RELATIVE_SLACK: Final = 0.02
"""Relative difference of a ratio from its share that significant-digit rounding may leave."""
ENERGY_BOUND: Final = 4.0
"""The bands' energies add up to at most twice the mean square; a table may show twice that."""
SOME: Final = 0.1
"""The share of the windows that can tell that must break the ratios for the table to be refused."""
MOSTLY: Final = 0.5
"""The share of the checkable windows that must break a relation for the table to be refused."""
_SHOWN: Final = 5
_MAX_DECIMALS: Final = 8


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
        (kurtosis != 0) & (kurtosis < 1 - KURTOSIS_SLACK),
        kurtosis,
        "kurtosis holds values below 1 (Pearson kurtosis, m4 / m2**2, is at least 1): this looks like "
        "excess kurtosis (scipy.stats.kurtosis's default, 3 less); add 3, or compute it with fisher=False",
        share=0.0,
    )
    has_rms = rms > 0
    expected = np.divide(peak, rms, out=np.zeros_like(rms), where=has_rms)
    # Rounding of rms and peak to a fixed number of decimals moves their quotient this much more.
    rounding = expected * (
        np.divide(_quantum(peak), peak, out=np.zeros_like(peak), where=peak > 0)
        + np.divide(_quantum(rms), rms, out=np.zeros_like(rms), where=has_rms)
    )
    _refuse(
        source,
        has_rms & (np.abs(crest - expected) > CREST_SLACK * np.maximum(1.0, expected) + rounding),
        crest,
        "crest_factor is not peak / rms in most windows: the columns are swapped or computed otherwise",
        checkable=has_rms,
    )
    # Parseval: the one-sided amplitude spectrum's energy is 2 * mean(x**2) less the DC and Nyquist
    # terms, so the bands' sum is at most 2 rms². Twice that leaves room for any rounding.
    energy = energies.sum(axis=1)
    _refuse(
        source,
        has_rms & (energy > ENERGY_BOUND * rms * rms + _quantum(energies)),
        energy,
        f"energy_low + energy_mid + energy_high exceed {ENERGY_BOUND:g} x rms² (the spectrum's energy is at "
        "most 2 rms², Parseval) in most windows: the energies are scaled otherwise (the amplitude "
        "spectrum is |rfft(x)| * 2 / n) or in another unit than rms",
        checkable=has_rms,
    )
    total = ratios.sum(axis=1)
    named = total > 0
    _refuse(
        source,
        named & (np.abs(total - 1) > RATIO_SUM_SLACK),
        total,
        "ratio_low, ratio_mid and ratio_high do not add up to 1 in most windows: they are computed otherwise",
        checkable=named,
    )
    # Each ratio against its energy's share, with the slack rounding to a fixed number of
    # decimals leaves (energies in g² often lose most of their digits there).
    counted = named & (energy > 0)
    shares = np.divide(energies, energy[:, None], out=np.zeros_like(energies), where=counted[:, None])
    slack = (
        RATIO_SLACK
        + RATIO_RELATIVE_SLACK * np.maximum(ratios, shares)
        + 3 * np.divide(_quantum(energies), energy, out=np.zeros_like(energy), where=counted)[:, None]
    )
    _refuse(
        source,
        counted & (np.abs(ratios - shares) > slack).any(axis=1),
        energy,
        "ratio_low, ratio_mid and ratio_high are not each band's energy over the three bands' sum: "
        "the energy or ratio columns are swapped or computed otherwise",
        share=SOME,
        checkable=counted,
    )


def _quantum(values: npt.NDArray[np.float64]) -> float:
    """The step of values rounded to a fixed number of decimals (up to 8); 0 when they are not."""
    positive = values[values > 0]
    if not positive.size:
        return 0.0
    for decimals in range(_MAX_DECIMALS + 1):
        if bool((np.abs(np.round(positive, decimals) - positive) <= 1e-6 * positive).all()):
            return float(10.0**-decimals)
    return 0.0


def _refuse(
    source: str,
    bad: npt.NDArray[np.bool_],
    column: npt.NDArray[np.float64],
    why: str,
    *,
    share: float = MOSTLY,
    checkable: npt.NDArray[np.bool_] | None = None,
) -> None:
    """Refuse when more than `share` of the `checkable` rows are `bad` (any bad row for a share of 0)."""
    checked = int(checkable.sum()) if checkable is not None else column.size
    count = int(bad.sum())
    if count == 0 or count <= share * checked:
        return
    rows = np.flatnonzero(bad)
    shown = ", ".join(f"{int(r)} ({column[r]:.4g})" for r in rows[:_SHOWN])
    more = ", ..." if rows.size > _SHOWN else ""
    raise TrainingDataError(source, f"{why}; {count} of {checked} rows, e.g. rows {shown}{more}")
