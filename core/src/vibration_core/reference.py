"""The reference distribution a model card carries for drift checks.

Training summarises its data as per-feature quantiles and class shares;
serving compares what it sees against them. Quantiles rather than a sample
keep the card small and say nothing about individual windows.

The card also counts, per class, the training windows in each bin between
the quantiles (`class_bin_counts`). A hall that runs 95 % healthy machines
against a balanced training set has feature distributions far from the
training mix (an rms PSI near 2 on the simulator) without anything having
changed: comparing each window's features with the training windows *of its
predicted class* separates a changed class mix (the class-share check's
business) from changed machines. Cards written before the field existed
lack it; serving then compares with the pooled training mix.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(21))
"""0, 5 %, ..., 100 %: twenty bins of equal reference mass for PSI."""


class ReferenceDistribution(BaseModel):
    """Per-feature quantiles and class shares of the training data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(ge=1, description="Windows the summary was computed from.")
    quantile_levels: tuple[float, ...] = Field(
        min_length=3, description="Increasing probabilities in [0, 1], the same for every feature."
    )
    feature_quantiles: dict[str, tuple[float, ...]] = Field(
        description="Per feature, its quantile at each level, in input order."
    )
    class_shares: dict[str, float] = Field(
        description="Share of each class label, in output order; sums to 1."
    )
    class_bin_counts: dict[str, dict[str, tuple[int, ...]]] | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description=(
            "Per class label and feature, the training windows of that class in each bin of the "
            "feature's quantiles: `(-inf, q0]`, then `(q[i-1], q[i]]` over the distinct quantiles, "
            "then `(q[-1], inf)`; absent in cards from before it existed."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        levels = self.quantile_levels
        if any(b <= a for a, b in itertools.pairwise(levels)) or levels[0] < 0 or levels[-1] > 1:
            msg = f"quantile_levels must increase within [0, 1], got {list(levels)}"
            raise ValueError(msg)
        for name, values in self.feature_quantiles.items():
            if len(values) != len(levels):
                msg = f"feature_quantiles.{name} has {len(values)} values for {len(levels)} levels"
                raise ValueError(msg)
            if not all(math.isfinite(v) for v in values) or any(b < a for a, b in itertools.pairwise(values)):
                msg = f"feature_quantiles.{name} must be finite and non-decreasing"
                raise ValueError(msg)
        shares = self.class_shares.values()
        if any(s < 0 for s in shares) or not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
            msg = f"class_shares must be non-negative and sum to 1, got {dict(self.class_shares)}"
            raise ValueError(msg)
        if self.class_bin_counts is not None:
            self._check_bin_counts(self.class_bin_counts)
        return self

    def _check_bin_counts(self, counts: dict[str, dict[str, tuple[int, ...]]]) -> None:
        if set(counts) != set(self.class_shares):
            msg = f"class_bin_counts covers {sorted(counts)}, class_shares {sorted(self.class_shares)}"
            raise ValueError(msg)
        for label, by_feature in counts.items():
            if set(by_feature) != set(self.feature_quantiles):
                msg = f"class_bin_counts.{label} covers {sorted(by_feature)}, not the features"
                raise ValueError(msg)
            totals = set()
            for name, bins in by_feature.items():
                expected = len(set(self.feature_quantiles[name])) + 1
                if len(bins) != expected or any(c < 0 for c in bins):
                    msg = f"class_bin_counts.{label}.{name} must be {expected} counts >= 0, got {len(bins)}"
                    raise ValueError(msg)
                totals.add(sum(bins))
            total = totals.pop() if len(totals) == 1 else -1
            if total < 0 or not math.isclose(total, self.class_shares[label] * self.samples, abs_tol=0.5):
                msg = (
                    f"class_bin_counts.{label} must count the class's "
                    f"{self.class_shares[label] * self.samples:.0f} windows in every feature"
                )
                raise ValueError(msg)


def build_reference(
    features: npt.NDArray[np.floating],
    labels: Sequence[str] | npt.NDArray[np.str_],
    *,
    feature_names: Sequence[str],
    label_order: Sequence[str],
    levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
) -> ReferenceDistribution:
    """Summarise a feature matrix and its labels for a model card."""
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(feature_names) or matrix.shape[0] == 0:  # noqa: PLR2004
        msg = f"features must be (n > 0, {len(feature_names)}), got {matrix.shape}"
        raise ValueError(msg)
    label_array = np.asarray(labels).astype(str)
    if label_array.shape != (matrix.shape[0],):
        msg = f"need one label per row: {label_array.shape[0]} labels for {matrix.shape[0]} rows"
        raise ValueError(msg)
    unknown = sorted(set(label_array.tolist()) - set(label_order))
    if unknown:
        msg = f"labels {unknown} are not in the label order {list(label_order)}"
        raise ValueError(msg)
    quantiles = np.quantile(matrix, np.asarray(levels), axis=0)
    counts = {label: int(np.count_nonzero(label_array == label)) for label in label_order}
    # The bins are the ones drift uses: distinct quantiles as right-closed edges, a tail on either side.
    edges = [np.unique(quantiles[:, i]) for i in range(len(feature_names))]
    bins = [np.searchsorted(edges[i], matrix[:, i], side="left") for i in range(len(feature_names))]
    return ReferenceDistribution(
        samples=matrix.shape[0],
        quantile_levels=tuple(float(level) for level in levels),
        feature_quantiles={
            name: tuple(float(v) for v in quantiles[:, i]) for i, name in enumerate(feature_names)
        },
        class_shares={label: count / matrix.shape[0] for label, count in counts.items()},
        class_bin_counts={
            label: {
                name: tuple(
                    int(c) for c in np.bincount(bins[i][label_array == label], minlength=edges[i].size + 1)
                )
                for i, name in enumerate(feature_names)
            }
            for label in label_order
        },
    )
