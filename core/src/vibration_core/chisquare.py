"""Pearson's chi-square test on binned counts, against a reference that is itself a sample.

Drift compares the counts of a window (features binned at the card's
quantiles, or predicted classes) with the counts a reference leads one to
expect. The reference is a finite sample too: the training set for
features, the node's first windows for the class shares. Its own sampling
noise adds to the window's, so every bin's variance is the window's
expected count plus the variance the reference contributes
(``n**2 * p / m`` for a window of `n` and a reference of `m`: the
two-sample chi-square). Without that term a window of 500 compared with a
training set of 1200 windows a class would look significant ~40 % too often.

Bins whose expected count is below 5 are pooled first (Cochran's rule: the
chi-square law is a poor fit for sparser cells); ordered bins with their
neighbours, categories with each other.

The tail probability is computed here (the regularized upper incomplete
gamma function) rather than taken from `scipy.stats`: every serving pod would
pay for importing that in start time and memory, for one function (see
`vibration_core.fft` for the same trade; serve's start to ready and RSS:
docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

MIN_EXPECTED: Final = 5.0
"""Smallest expected count a pooled bin may have (Cochran's rule)."""

_EPS: Final = 1e-15
_TINY: Final = 1e-300
_MAX_ITERATIONS: Final = 10_000

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def chi2_sf(statistic: float, df: int) -> float:
    """Probability that a chi-square variable with `df` degrees of freedom exceeds `statistic`.

    ``Q(df / 2, statistic / 2)``: a power series below ``a + 1``, a continued
    fraction (modified Lentz) above, as in Numerical Recipes' ``gammq``.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if math.isnan(statistic):
        return math.nan
    if statistic <= 0:
        return 1.0
    a, x = df / 2.0, statistic / 2.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(_MAX_ITERATIONS):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = d if abs(d) >= _TINY else _TINY
        c = b + an / c
        c = c if abs(c) >= _TINY else _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return min(1.0, math.exp(log_front) * h)


def ordered_groups(expected: npt.ArrayLike, min_expected: float = MIN_EXPECTED) -> IntArray:
    """Group index of each ordered bin: neighbours pooled until each group expects `min_expected`.

    Pools left to right; a short last group joins the one before it. Only the
    expected counts decide, never the observed ones, so the test stays valid.
    """
    exp = np.asarray(expected, dtype=np.float64)
    groups = np.zeros(exp.size, dtype=np.intp)
    group, running = 0, 0.0
    for i, value in enumerate(exp):
        groups[i] = group
        running += float(value)
        if running >= min_expected and i < exp.size - 1:
            group, running = group + 1, 0.0
    if group > 0 and running < min_expected:
        groups[groups == group] = group - 1
    return groups


def category_groups(expected: npt.ArrayLike, min_expected: float = MIN_EXPECTED) -> IntArray:
    """Group index of each category: the sparse ones pooled, with the sparsest other if still short.

    Not when that other is the only one left: one group is no test, and a healthy hall's
    baseline (all one class) could then never show a few faults coming.
    """
    exp = np.asarray(expected, dtype=np.float64)
    sparse = exp < min_expected
    groups = np.arange(exp.size, dtype=np.intp)
    if not sparse.any():
        return groups
    pooled = int(np.flatnonzero(sparse)[0])
    groups[sparse] = pooled
    if exp[sparse].sum() < min_expected and np.count_nonzero(~sparse) > 1:
        dense = np.flatnonzero(~sparse)
        groups[sparse] = dense[np.argmin(exp[dense])]
    return np.unique(groups, return_inverse=True)[1].astype(np.intp)


@dataclass(frozen=True)
class ChiSquare:
    """One chi-square test."""

    statistic: float
    df: int
    """Degrees of freedom: pooled groups minus one (0 when fewer than two groups: no test)."""
    p_value: float
    """1.0 when there was nothing to test."""


def binned_chi2(
    observed: npt.ArrayLike, expected: npt.ArrayLike, reference_variance: npt.ArrayLike, groups: IntArray
) -> ChiSquare:
    """Chi-square of `observed` against `expected`, bins pooled by `groups`.

    `reference_variance` is what the reference's own sampling adds to each
    bin's variance (0 for an exactly known reference).
    """
    count = int(groups.max()) + 1 if groups.size else 0
    obs = np.bincount(groups, weights=np.asarray(observed, dtype=np.float64), minlength=count)
    exp = np.bincount(groups, weights=np.asarray(expected, dtype=np.float64), minlength=count)
    var = exp + np.bincount(groups, weights=np.asarray(reference_variance, dtype=np.float64), minlength=count)
    keep = var > 0
    if np.count_nonzero(keep) < 2:  # noqa: PLR2004 - one group is no comparison
        return ChiSquare(0.0, 0, 1.0)
    statistic = float(np.sum(np.square(obs[keep] - exp[keep]) / var[keep]))
    df = int(np.count_nonzero(keep)) - 1
    return ChiSquare(statistic, df, chi2_sf(statistic, df))
