"""The reference distribution a card carries for drift checks."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from vibration_core.reference import DEFAULT_QUANTILE_LEVELS, ReferenceDistribution, build_reference


def test_quantiles_and_shares_summarise_the_data() -> None:
    features = np.column_stack([np.arange(101.0), np.arange(101.0) * 2])
    labels = ["a"] * 25 + ["b"] * 76
    ref = build_reference(features, labels, feature_names=("x", "y"), label_order=("b", "a"))
    assert ref.samples == 101
    assert ref.quantile_levels == DEFAULT_QUANTILE_LEVELS
    assert ref.feature_quantiles["x"][10] == pytest.approx(50.0)  # the median
    assert ref.feature_quantiles["y"][-1] == pytest.approx(200.0)
    assert list(ref.class_shares) == ["b", "a"]
    assert ref.class_shares["a"] == pytest.approx(25 / 101)


def test_a_class_missing_from_the_data_has_share_zero() -> None:
    ref = build_reference(np.ones((4, 1)), ["a"] * 4, feature_names=("x",), label_order=("a", "b"))
    assert ref.class_shares == {"a": 1.0, "b": 0.0}


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.ones((3, 2)), ["a"] * 3, r"features must be \(n > 0, 1\)"),
        (np.ones((0, 1)), [], r"features must be"),
        (np.ones((3, 1)), ["a"] * 2, "need one label per row"),
        (np.ones((3, 1)), ["a", "a", "z"], r"labels \['z'\] are not in the label order"),
    ],
)
def test_bad_inputs_are_refused(features: np.ndarray, labels: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_reference(features, labels, feature_names=("x",), label_order=("a",))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"quantile_levels": (0.0, 0.6, 0.5)}, "must increase"),
        ({"feature_quantiles": {"x": (1.0, 0.0, 2.0)}}, "non-decreasing"),
        ({"feature_quantiles": {"x": (1.0, 2.0)}}, "has 2 values for 3 levels"),
        ({"class_shares": {"a": 0.5, "b": 0.6}}, "sum to 1"),
    ],
)
def test_inconsistent_references_are_refused(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "samples": 10,
        "quantile_levels": (0.0, 0.5, 1.0),
        "feature_quantiles": {"x": (0.0, 1.0, 2.0)},
        "class_shares": {"a": 0.5, "b": 0.5},
    }
    with pytest.raises(ValidationError, match=message):
        ReferenceDistribution.model_validate({**base, **fields})


def test_each_class_is_counted_in_the_bins_between_the_quantiles() -> None:
    features = np.column_stack([np.arange(100.0), np.r_[np.zeros(60), np.ones(40)]])
    labels = ["a"] * 50 + ["b"] * 50
    ref = build_reference(features, labels, feature_names=("x", "y"), label_order=("a", "b"))
    counts = ref.class_bin_counts
    assert counts is not None
    # x: 21 distinct quantiles, so 22 bins; class a holds the low half of the values
    assert len(counts["a"]["x"]) == 22
    assert sum(counts["a"]["x"]) == sum(counts["b"]["x"]) == 50
    assert sum(counts["a"]["x"][:11]) == 50
    # y: a point mass at 0 (60 windows) collapses the low quantiles into one edge, bin 0 = (-inf, 0]
    assert len(counts["a"]["y"]) == len(set(ref.feature_quantiles["y"])) + 1
    assert (counts["a"]["y"][0], counts["b"]["y"][0], sum(counts["b"]["y"])) == (50, 10, 50)


def test_a_card_from_before_the_class_counts_reads_and_writes_as_it_was() -> None:
    old = {
        "samples": 10,
        "quantile_levels": (0.0, 0.5, 1.0),
        "feature_quantiles": {"x": (0.0, 1.0, 2.0)},
        "class_shares": {"a": 0.5, "b": 0.5},
    }
    ref = ReferenceDistribution.model_validate(old)
    assert ref.class_bin_counts is None
    assert "class_bin_counts" not in ref.model_dump_json()


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"a": {"x": (1, 2, 1, 1)}}, r"class_bin_counts covers \['a'\]"),
        ({"a": {"y": (1, 2, 1, 1)}, "b": {"y": (1, 2, 1, 1)}}, r"class_bin_counts.a covers \['y'\]"),
        ({"a": {"x": (1, 2, 2)}, "b": {"x": (1, 2, 1, 1)}}, r"class_bin_counts.a.x must be 4 counts"),
        ({"a": {"x": (1, 2, 1, -1)}, "b": {"x": (1, 2, 1, 1)}}, r"a.x must be 4 counts >= 0"),
        ({"a": {"x": (1, 2, 1, 2)}, "b": {"x": (1, 2, 1, 1)}}, r"must count the class's 5 windows"),
    ],
)
def test_inconsistent_class_counts_are_refused(counts: dict[str, object], message: str) -> None:
    reference = {
        "samples": 10,
        "quantile_levels": (0.0, 0.5, 1.0),
        "feature_quantiles": {"x": (0.0, 1.0, 2.0)},
        "class_shares": {"a": 0.5, "b": 0.5},
        "class_bin_counts": counts,
    }
    with pytest.raises(ValidationError, match=message):
        ReferenceDistribution.model_validate(reference)
