"""The chi-square tail, the pooling of sparse bins, and the two-sample test drift relies on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from vibration_core.chisquare import (
    MIN_EXPECTED,
    binned_chi2,
    category_groups,
    chi2_sf,
    ordered_groups,
)


@pytest.mark.parametrize("df", [1, 2, 3, 7, 12, 21, 60])
def test_the_tail_probability_is_scipys(df: int) -> None:
    for statistic in (0.001, 0.3, 1.0, df - 0.5, df + 1.0, 2.0 * df, 40.0, 120.0, 400.0):
        expected = stats.chi2.sf(statistic, df)
        assert chi2_sf(statistic, df) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_the_tail_of_nothing_and_of_nan() -> None:
    assert chi2_sf(0.0, 3) == 1.0
    assert chi2_sf(-1.0, 3) == 1.0
    assert np.isnan(chi2_sf(float("nan"), 3))
    with pytest.raises(ValueError, match="degrees of freedom"):
        chi2_sf(1.0, 0)


def test_ordered_bins_pool_with_their_neighbours_until_each_group_expects_enough() -> None:
    expected = np.array([0.1, 3.0, 4.0, 6.0, 1.0, 0.2])
    groups = ordered_groups(expected)
    assert groups.tolist() == [0, 0, 0, 1, 1, 1]  # the short last group joins the one before
    assert all(np.bincount(groups, weights=expected) >= MIN_EXPECTED)
    assert ordered_groups([10.0, 10.0, 10.0]).tolist() == [0, 1, 2]
    assert ordered_groups([1.0, 1.0]).tolist() == [0, 0]
    pairs = ordered_groups(np.full(20, 25.0), min_expected=50.0)
    assert pairs.tolist() == np.repeat(np.arange(10), 2).tolist()


def test_sparse_categories_pool_together_and_then_with_the_sparsest_other() -> None:
    assert category_groups([400.0, 4.0, 3.0, 20.0]).tolist() == [0, 1, 1, 2]
    assert category_groups([490.0, 3.0, 1.0, 6.0]).tolist() == [0, 1, 1, 1]
    assert category_groups([100.0, 50.0]).tolist() == [0, 1]
    assert category_groups([496.0, 2.0, 1.0, 1.0]).tolist() == [0, 1, 1, 1], "one dense: no merge"


def test_one_group_is_no_test() -> None:
    result = binned_chi2([3, 1], [2.0, 2.0], [0.0, 0.0], np.array([0, 0]))
    assert (result.df, result.p_value) == (0, 1.0)


def _rejections(rng: np.random.Generator, *, reference_term: bool, trials: int = 1500) -> float:
    """Share of trials where a window and a reference sample of the same distribution differ at 5 %."""
    p = rng.dirichlet(np.full(12, 5.0))
    n, m = 500, 1000
    rejected = 0
    for _ in range(trials):
        reference = rng.multinomial(m, p) / m
        observed = rng.multinomial(n, p)
        expected = n * reference
        variance = n * expected / m if reference_term else np.zeros_like(expected)
        rejected += binned_chi2(observed, expected, variance, ordered_groups(expected)).p_value < 0.05
    return rejected / trials


def test_the_reference_term_keeps_the_test_at_its_level() -> None:
    # A reference that is a sample of 1000 against windows of 500: without its
    # variance the test calls "different" far more often than 5 % of the time.
    rng = np.random.default_rng(0)
    assert 0.03 <= _rejections(rng, reference_term=True) <= 0.07
    assert _rejections(rng, reference_term=False) > 0.1


def test_a_real_difference_is_significant() -> None:
    rng = np.random.default_rng(1)
    expected = np.full(10, 50.0)
    observed = rng.multinomial(500, np.r_[np.full(5, 0.07), np.full(5, 0.13)])
    result = binned_chi2(observed, expected, expected * 0.5, ordered_groups(expected))
    assert result.df == 9
    assert result.p_value < 1e-4
