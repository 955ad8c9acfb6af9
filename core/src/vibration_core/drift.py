"""Drift statistics against a model card's reference distribution.

The card summarises the training data as per-feature quantiles and class
shares (`vibration_core.reference`); serving compares a rolling window of
what it sees against that summary:

- **PSI per feature**: the reference quantiles are the bin edges, the
  expected mass of a bin is the difference of its quantile levels. Two tail
  bins catch values outside the training range: their expected mass is
  ``levels[0]`` and ``1 - levels[-1]``, or, where those are 0 (the default
  levels run from 0 to 1), ``1 / (samples + 1)``, the chance that a fresh
  draw of the training distribution lands beyond the extremes of `samples`
  draws. Repeated quantiles (a feature with a point mass) collapse into one
  edge that carries the mass of all of them.
- **KS per feature**: the largest distance between the empirical CDF and the
  reference CDF, which is piecewise linear through the points
  ``(quantile, level)``; evaluated exactly at every jump of either.
- **PSI on class shares**: predicted labels (categorical, so no KS) against
  ``reference.class_shares``.

PSI reads: below 0.1 no change, 0.1-0.25 some, above 0.25 a lot. Empty bins
get a floor of ``1e-4`` so the logarithm stays finite. Note the class-share
reference is the *training* mix: a line that runs mostly healthy machines
against a balanced training set shows class drift by design, which is why
its threshold is a separate setting.

Pure numpy; no I/O, no clock, safe to call from any thread (`DriftMonitor`
guards its buffers with a lock).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vibration_core.reference import ReferenceDistribution

PSI_FLOOR: Final = 1e-4
"""Smallest share a bin counts with, observed or expected."""

FloatArray = npt.NDArray[np.float64]


def _as_1d(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _psi(observed: FloatArray, expected: FloatArray) -> float:
    obs = np.maximum(observed, PSI_FLOOR)
    exp = np.maximum(expected, PSI_FLOOR)
    return float(np.sum((obs - exp) * np.log(obs / exp)))


def reference_bins(
    quantiles: Sequence[float], levels: Sequence[float], samples: int
) -> tuple[FloatArray, FloatArray]:
    """Return the bin edges and the expected share of each bin.

    Bin ``0`` is ``(-inf, edges[0]]``, bin ``j`` is ``(edges[j-1], edges[j]]``
    and the last bin is ``(edges[-1], inf)``, so there are ``len(edges) + 1``
    shares; they sum to 1.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.float64)
    edges, first = np.unique(q, return_index=True)
    # The reference CDF is right-continuous: at a repeated quantile it takes
    # the highest level of the run.
    last = np.append(first[1:], q.size) - 1
    cdf = lv[last]
    tail = 1.0 / (samples + 1)
    # Bin 0 holds the mass at and below the first quantile: the point mass of
    # a repeated minimum, or the tail when the minimum is level 0.
    low = max(float(cdf[0]), tail) if lv[0] == 0 else float(cdf[0])
    high = 1.0 - float(lv[-1]) if lv[-1] < 1 else tail
    shares = np.concatenate(([low], np.diff(cdf), [high]))
    return edges, shares / shares.sum()


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


def feature_ks(values: npt.ArrayLike, quantiles: Sequence[float], levels: Sequence[float]) -> float:
    """KS distance of `values` to the piecewise-linear reference CDF; NaN when empty."""
    data = np.sort(_as_1d(values))
    if data.size == 0:
        return float("nan")
    q = np.asarray(quantiles, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.float64)
    # Between two jumps of either CDF their difference is monotone, so the
    # supremum is a value or a left limit at one of the jumps.
    points = np.union1d(data, q)
    n = data.size
    emp_right = np.searchsorted(data, points, side="right") / n
    emp_left = np.searchsorted(data, points, side="left") / n
    ref_right = _reference_cdf(q, lv, points, "right")
    ref_left = _reference_cdf(q, lv, points, "left")
    return float(max(np.max(np.abs(emp_right - ref_right)), np.max(np.abs(emp_left - ref_left))))


def class_share_psi(counts: npt.ArrayLike, reference_shares: Sequence[float]) -> float:
    """PSI of predicted class counts (in label order) against the reference shares."""
    observed = np.asarray(counts, dtype=np.float64)
    total = observed.sum()
    if total <= 0:
        return float("nan")
    return _psi(observed / total, np.asarray(reference_shares, dtype=np.float64))


@dataclass(frozen=True)
class DriftThresholds:
    """When a window of observations counts as drifted."""

    psi: float = 0.2
    """Largest per-feature PSI still considered stable."""
    ks: float = 0.2
    """Largest per-feature KS distance still considered stable."""
    class_psi: float = 0.2
    """Largest PSI of the predicted class shares still considered stable."""
    min_samples: int = 200
    """Rows needed in the window before anything is called drifted."""

    def __post_init__(self) -> None:
        """Refuse thresholds that could never or always fire."""
        for name in ("psi", "ks", "class_psi"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"drift threshold {name} must be > 0, got {value!r}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")


@dataclass(frozen=True)
class DriftReport:
    """Drift statistics of one window of observations."""

    samples: int
    feature_psi: dict[str, float]
    feature_ks: dict[str, float]
    class_psi: float
    drifted: bool
    exceeded: tuple[str, ...] = field(default=())
    """Which statistics are over their threshold, e.g. ``("psi.rms", "class_psi")``."""

    @property
    def max_psi(self) -> float:
        """Largest per-feature PSI (NaN without samples)."""
        return max(self.feature_psi.values(), default=float("nan"))

    @property
    def max_ks(self) -> float:
        """Largest per-feature KS distance (NaN without samples)."""
        return max(self.feature_ks.values(), default=float("nan"))

    def as_flat(self) -> dict[str, float]:
        """Finite statistics by name (``psi.<feature>``, ``ks.<feature>``, ``class_psi``, ...).

        NaN values (no samples yet) are left out: JSON and `ModelStatus` refuse them.
        """
        flat = {"samples": float(self.samples)}
        flat.update({f"psi.{name}": value for name, value in self.feature_psi.items()})
        flat.update({f"ks.{name}": value for name, value in self.feature_ks.items()})
        flat.update({"class_psi": self.class_psi, "psi_max": self.max_psi, "ks_max": self.max_ks})
        return {name: round(value, 6) for name, value in flat.items() if np.isfinite(value)}


class DriftMonitor:
    """The last `window` feature rows and predicted classes, and their drift.

    `update` is called by the serving loop once per batch and `report` by
    whoever publishes status, from any thread.
    """

    def __init__(
        self,
        reference: ReferenceDistribution,
        labels: Sequence[str],
        *,
        window: int = 500,
        thresholds: DriftThresholds | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"drift window must be >= 1 row, got {window}")
        self._reference = reference
        self._names = tuple(reference.feature_quantiles)
        self._labels = tuple(labels)
        self._shares = [reference.class_shares.get(label, 0.0) for label in self._labels]
        self._thresholds = thresholds or DriftThresholds()
        self._rows = np.zeros((window, len(self._names)), dtype=np.float64)
        self._classes = np.zeros(window, dtype=np.intp)
        self._next = 0
        self._filled = 0
        self._lock = threading.Lock()

    @property
    def thresholds(self) -> DriftThresholds:
        """The thresholds `report` applies."""
        return self._thresholds

    def update(self, features: npt.ArrayLike, classes: npt.ArrayLike) -> None:
        """Add a batch: feature rows ``(n, n_features)`` and predicted class indices ``(n,)``."""
        rows = np.asarray(features, dtype=np.float64)
        picked = np.asarray(classes, dtype=np.intp)
        if rows.ndim != 2 or rows.shape[1] != len(self._names) or picked.shape != (rows.shape[0],):  # noqa: PLR2004
            raise ValueError(
                f"need (n, {len(self._names)}) features and (n,) classes, got {rows.shape} and {picked.shape}"
            )
        size = self._rows.shape[0]
        if rows.shape[0] > size:
            rows, picked = rows[-size:], picked[-size:]
        n = rows.shape[0]
        with self._lock:
            index = (self._next + np.arange(n)) % size
            self._rows[index] = rows
            self._classes[index] = picked
            self._next = (self._next + n) % size
            self._filled = min(size, self._filled + n)

    def report(self) -> DriftReport:
        """Compute the statistics of the current window."""
        with self._lock:
            rows = self._rows[: self._filled].copy()
            classes = self._classes[: self._filled].copy()
        ref = self._reference
        levels = ref.quantile_levels
        psi = {}
        ks = {}
        for i, name in enumerate(self._names):
            quantiles = ref.feature_quantiles[name]
            psi[name] = feature_psi(rows[:, i], quantiles, levels, ref.samples)
            ks[name] = feature_ks(rows[:, i], quantiles, levels)
        counts = np.bincount(classes, minlength=len(self._labels))[: len(self._labels)]
        class_psi = class_share_psi(counts, self._shares)
        t = self._thresholds
        exceeded: list[str] = []
        if rows.shape[0] >= t.min_samples:
            exceeded += [f"psi.{name}" for name, value in psi.items() if value > t.psi]
            exceeded += [f"ks.{name}" for name, value in ks.items() if value > t.ks]
            if class_psi > t.class_psi:
                exceeded.append("class_psi")
        return DriftReport(
            samples=rows.shape[0],
            feature_psi=psi,
            feature_ks=ks,
            class_psi=class_psi,
            drifted=bool(exceeded),
            exceeded=tuple(exceeded),
        )
