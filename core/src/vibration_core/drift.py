"""Drift tests: is a window of served data different, by more than chance and by enough to matter?

Two questions, two references:

- **Features** against the training data the card summarises
  (`vibration_core.reference`): has what the machines look like changed? The
  bins are the card's quantiles of each feature. The expected count of a bin
  is what the training windows of each class put there, mixed in the
  proportions of the classes in the window (`class_mix`): a window of 475
  normal windows and 25 faults expects 475 times the normal class's share of
  the bin plus 25 times the faults'. A hall that runs 95 % healthy machines
  against a balanced training set then looks like its training data, which
  the pooled training mix would not (rms PSI near 2 on the simulator). The
  mix is estimated from the model's probabilities, not by counting argmax
  labels: at 95 % normal, false positives make the counted mix ~90 % normal,
  and the test then calls the resulting mismatch drift in a sizeable share
  of stationary windows (measured on one of the simulator's models, on the
  card's 22 bins: 10 % of feature tests below p = 0.01 with the counted mix,
  0.4 % with the estimated one). Cards without per-class counts fall back to
  the pooled mix.
- **Class shares** against the node's own baseline, the predicted classes of
  the first windows after a model starts serving there
  (`vibration_core.drift_monitor`): has the mix of states changed since? The
  training mix is the wrong yardstick (it is whatever the data set happened
  to hold) and is only reported, as ``class_psi_vs_training``.

Each comparison is a test and an effect size, and drift needs both:

- **Significance**: Pearson's chi-square on the bin counts, with the
  reference's own sampling noise in the variance (`vibration_core.chisquare`),
  so its threshold moves with the number of windows: 500 windows need a
  large change to be significant, 50 000 a small one. Chosen over a
  count-aware PSI cut-off because its null distribution is known for every
  bin layout and window size; over KS because it works the same on the
  binned card reference and on categorical classes.
- **Effect size**: the population stability index,
  ``sum((o - e) * ln(o / e))`` over observed and expected shares. It keeps a
  large window from calling a trivial, significant shift drift (and machines
  in the field are never exactly their training set). PSI reads: below 0.1
  no change, 0.1-0.25 some, above 0.25 a lot. On the simulator, 5000 windows
  of an unchanged hall measure about 0.01, a 10 % shaft-speed change 0.06-0.09
  (hence the default floor of 0.05); on a window of `n` rows and `b` bins PSI
  also carries a noise floor of about ``b / n`` (0.02 at 500 rows), which the
  significance test is there to see through.

Both are computed on the card's bins pooled to about deciles of the expected
distribution (neighbours merged until each expects 10 % of the window): the
classic PSI layout, and fewer, fuller bins give the test more power against
the smooth shifts that drift is made of (measured: fewer slow detections of a
10 % speed change than on the card's 22 bins) and the PSI less noise.

The KS distance of each feature to the expected distribution (the same
mixture, piecewise linear between the quantiles) is reported as a figure.
The bins and their expected shares come from `vibration_core.drift_reference`;
empty bins get a floor of ``1e-4`` in PSI so the logarithm stays finite.

Pure numpy; no I/O, no clock, no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt

from vibration_core.chisquare import MIN_EXPECTED, binned_chi2, category_groups, ordered_groups
from vibration_core.drift_reference import reference_bins

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vibration_core.drift_reference import FeatureReference

PSI_FLOOR: Final = 1e-4
"""Smallest share a bin counts with, observed or expected."""
GROUP_SHARE: Final = 0.1
"""Smallest expected share of the pooled bins a feature is tested and measured on: about deciles."""

FloatArray = npt.NDArray[np.float64]


def _as_1d(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _psi(observed: FloatArray, expected: FloatArray) -> float:
    obs = np.maximum(observed, PSI_FLOOR)
    exp = np.maximum(expected, PSI_FLOOR)
    return float(np.sum((obs - exp) * np.log(obs / exp)))


def feature_psi(
    values: npt.ArrayLike, quantiles: Sequence[float], levels: Sequence[float], samples: int
) -> float:
    """PSI of `values` against one feature's reference quantiles; NaN when `values` is empty."""
    data = _as_1d(values)
    if data.size == 0:
        return float("nan")
    edges, expected = reference_bins(quantiles, levels, samples)
    index = np.searchsorted(edges, data, side="left")
    observed = np.bincount(index, minlength=expected.size) / data.size
    return _psi(observed, expected)


def _reference_cdf(
    q: FloatArray, lv: FloatArray, t: FloatArray, side: Literal["left", "right"]
) -> FloatArray:
    """Reference CDF at `t`: its value (``side="right"``) or its left limit (``"left"``).

    Below the first quantile it is 0, beyond the last 1; the mass of
    ``levels[0]`` and ``1 - levels[-1]`` sits at the extreme quantiles.
    """
    k = np.searchsorted(q, t, side=side)
    inside = (k > 0) & (k < q.size)
    lo = np.clip(k - 1, 0, q.size - 1)
    hi = np.clip(k, 0, q.size - 1)
    span = q[hi] - q[lo]
    frac = np.divide(t - q[lo], span, out=np.zeros_like(t), where=span > 0)
    linear = lv[lo] + (lv[hi] - lv[lo]) * frac
    return np.where(inside, linear, np.where(k >= q.size, 1.0, 0.0))


def feature_ks(values: npt.ArrayLike, quantiles: npt.ArrayLike, levels: npt.ArrayLike) -> float:
    """KS distance of `values` to the piecewise-linear reference CDF; NaN when empty."""
    data = np.sort(_as_1d(values))
    if data.size == 0:
        return float("nan")
    q = np.asarray(quantiles, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.float64)
    # Between two jumps of either CDF their difference is monotone, so the
    # supremum is a value or a left limit at one of the jumps. Not np.union1d:
    # a repeated point changes no maximum, and np.unique imports numpy.ma
    # (7 MB of a serving pod's memory, 35 ms at its first drift evaluation).
    points = np.concatenate((data, q))
    n = data.size
    emp_right = np.searchsorted(data, points, side="right") / n
    emp_left = np.searchsorted(data, points, side="left") / n
    ref_right = _reference_cdf(q, lv, points, "right")
    ref_left = _reference_cdf(q, lv, points, "left")
    return float(max(np.max(np.abs(emp_right - ref_right)), np.max(np.abs(emp_left - ref_left))))


def class_share_psi(counts: npt.ArrayLike, reference_shares: npt.ArrayLike) -> float:
    """PSI of predicted class counts (in label order) against the reference shares."""
    observed = np.asarray(counts, dtype=np.float64)
    total = observed.sum()
    if total <= 0:
        return float("nan")
    return _psi(observed / total, np.asarray(reference_shares, dtype=np.float64))


@dataclass(frozen=True)
class Comparison:
    """One feature's, or the class shares', comparison with its reference."""

    psi: float
    """Population stability index: the effect size."""
    p_value: float
    """Of the chi-square test; 1.0 when there was nothing to test."""
    statistic: float
    df: int
    ks: float = float("nan")
    """KS distance to the expected distribution (features only)."""


NOT_COMPARED: Final = Comparison(psi=float("nan"), p_value=float("nan"), statistic=float("nan"), df=0)


def class_mix(
    probabilities: npt.ArrayLike, prior: npt.ArrayLike, *, iterations: int = 200, tolerance: float = 1e-6
) -> FloatArray:
    """The share of each class among a window's rows, estimated from the model's probabilities.

    The model's probabilities assume the training mix (`prior`); in a hall
    whose mix differs they overstate the rare classes, and counting argmax
    labels overstates them further (a 95 % normal hall reads as ~90 %: the
    false positives of four classes land on the rare ones). EM under label
    shift (Saerens, Latinne and Decaestecker, 2002) re-weights the
    probabilities by the ratio of the current estimate to the prior until the
    mix they imply is the mix it assumed. Classes the training never saw keep
    share 0.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    base = np.asarray(prior, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != base.size or probs.shape[0] == 0:  # noqa: PLR2004
        raise ValueError(f"need (n > 0, {base.size}) probabilities, got {probs.shape}")
    known = base > 0
    ratio_base = np.where(known, base, 1.0)
    mix = np.where(known, base, 0.0)
    for _ in range(iterations):
        weighted = probs * (mix / ratio_base)
        totals = weighted.sum(axis=1, keepdims=True)
        weighted = np.divide(weighted, totals, out=np.zeros_like(weighted), where=totals > 0)
        new = weighted.mean(axis=0)
        if new.sum() <= 0:
            return np.where(known, base, 0.0)
        new /= new.sum()
        done = float(np.max(np.abs(new - mix))) < tolerance
        mix = new
        if done:
            break
    return mix


def compare_feature(values: npt.ArrayLike, mix: npt.ArrayLike, ref: FeatureReference) -> Comparison:
    """Compare one feature's values with the training data re-mixed to the window's class mix.

    `mix` is the share of each class in the window (`class_mix`); for a card
    without per-class counts it is not used and the pooled training mix is
    the reference.
    """
    data = _as_1d(values)
    if data.size == 0:
        return NOT_COMPARED
    shares = np.asarray(mix, dtype=np.float64)
    expected, variance = ref.expected(data.size * shares / shares.sum())
    observed = np.bincount(np.searchsorted(ref.edges, data, side="left"), minlength=ref.edges.size + 1)
    groups = ordered_groups(expected, max(MIN_EXPECTED, GROUP_SHARE * data.size))
    test = binned_chi2(observed, expected, variance, groups)
    bins = expected / expected.sum()
    pooled_observed = np.bincount(groups, weights=observed) / data.size
    return Comparison(
        psi=_psi(pooled_observed, np.bincount(groups, weights=bins).astype(np.float64)),
        p_value=test.p_value,
        statistic=test.statistic,
        df=test.df,
        ks=feature_ks(data, ref.edges, np.cumsum(bins)[:-1]),
    )


def compare_classes(counts: npt.ArrayLike, baseline: npt.ArrayLike) -> Comparison:
    """Compare predicted class counts of a window with the counts of a baseline (both in label order).

    The 2 x k contingency chi-square of the two samples: each class's expected share comes
    from both together, so a class the baseline never saw (a healthy hall's baseline is
    often all one class) counts when the window has it. Expected from the baseline alone,
    it had none, and a hall whose machines all began to fail never showed drift. Classes
    either sample would expect fewer than `MIN_EXPECTED` windows of are pooled.
    """
    observed = np.asarray(counts, dtype=np.float64)
    reference = np.asarray(baseline, dtype=np.float64)
    n, m = float(observed.sum()), float(reference.sum())
    if n <= 0 or m <= 0:
        return NOT_COMPARED
    shares = reference / m
    pooled = (observed + reference) / (n + m)
    expected = n * pooled
    # sum (o - n p)^2 / (n p) + (b - m p)^2 / (m p) = sum (o - n p)^2 / (n p m / (n + m)),
    # as b - m p = -(o - n p): binned_chi2's variance, exp + this term, is n p m / (n + m).
    variance = -expected * n / (n + m)
    test = binned_chi2(observed, expected, variance, category_groups(min(n, m) * pooled))
    return Comparison(
        psi=_psi(observed / n, shares), p_value=test.p_value, statistic=test.statistic, df=test.df
    )
