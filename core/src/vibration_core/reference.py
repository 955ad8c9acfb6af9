"""The reference distribution a model card carries for drift checks.

Training summarises its data as per-feature quantiles and class shares;
serving compares what it sees against them. Quantiles rather than a sample
keep the card small and say nothing about individual windows.
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
        return self


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
    return ReferenceDistribution(
        samples=matrix.shape[0],
        quantile_levels=tuple(float(level) for level in levels),
        feature_quantiles={
            name: tuple(float(v) for v in quantiles[:, i]) for i, name in enumerate(feature_names)
        },
        class_shares={label: count / matrix.shape[0] for label, count in counts.items()},
    )
