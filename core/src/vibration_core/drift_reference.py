"""The training reference as drift sees it: each feature's bins and the share of each bin, per class.

The reference quantiles are the edges, the expected mass of a bin is
the difference of its quantile levels. Two tail bins catch values outside
the training range: their expected mass is ``levels[0]`` and
``1 - levels[-1]``, or, where those are 0 (the default levels run from 0 to
1), ``1 / (samples + 1)``, the chance that a fresh draw of the training
distribution lands beyond the extremes of `samples` draws. Repeated
quantiles (a feature with a point mass) collapse into one edge that carries
the mass of all of them. Per-class shares are the class's training counts
with one pseudo-window spread like the pooled mix, so no bin is impossible.

Pure numpy; no I/O, no clock, no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vibration_core.reference import ReferenceDistribution

FloatArray = npt.NDArray[np.float64]


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


@dataclass(frozen=True, eq=False)
class FeatureReference:
    """One feature's bins and what the training data put in them, overall and per class."""

    name: str
    edges: FloatArray
    """Distinct reference quantiles: bin ``j`` is ``(edges[j-1], edges[j]]``, with a tail either side."""
    pooled: FloatArray
    """Expected share of each bin in the pooled training data (`reference_bins`)."""
    samples: int
    """Training windows behind `pooled`."""
    by_class: FloatArray | None
    """``(classes, bins)``: each class's share of each bin; None for a card without per-class counts."""
    class_windows: FloatArray | None
    """``(classes,)``: training windows of each class."""

    def expected(self, per_class: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Expected count of each bin for a window of `per_class` windows of each class, and its variance.

        The variance is the part the reference's own sampling adds: ``n**2 * p / m``
        per class. A class the training data did not hold is expected to look
        like the pooled mix.
        """
        n = float(per_class.sum())
        if self.by_class is None or self.class_windows is None:
            return n * self.pooled, n * n * self.pooled / self.samples
        known = self.class_windows > 0
        counts, shares, windows = per_class[known], self.by_class[known], self.class_windows[known]
        other = float(per_class[~known].sum())
        expected = counts @ shares + other * self.pooled
        variance = (counts * counts / windows) @ shares + other * other * self.pooled / self.samples
        return expected, variance


def feature_references(
    reference: ReferenceDistribution, labels: Sequence[str]
) -> tuple[FeatureReference, ...]:
    """The bins of every feature of `reference`, per class in the order of `labels`."""
    out = []
    counts = reference.class_bin_counts
    for name, quantiles in reference.feature_quantiles.items():
        edges, pooled = reference_bins(quantiles, reference.quantile_levels, reference.samples)
        by_class = windows = None
        if counts is not None:
            raw = np.array(
                [counts[label][name] if label in counts else np.zeros(pooled.size) for label in labels],
                dtype=np.float64,
            )
            windows = raw.sum(axis=1)
            by_class = (raw + pooled) / (windows + 1.0)[:, None]
        out.append(FeatureReference(name, edges, pooled, reference.samples, by_class, windows))
    return tuple(out)
