"""The promotion gate's rules, as pure functions: the default floor, champion against challenger, latency."""

from __future__ import annotations

import pytest

from vibration_core.gate import REASONS, Figures, Policy, default_floor, judge

LABELS = ("normal", "imbalance", "misalignment", "bearing_fault")
GOOD = Figures(
    version="v1",
    accuracy=0.93,
    macro_f1=0.92,
    class_recall={"normal": 0.95, "imbalance": 0.9, "misalignment": 0.88, "bearing_fault": 0.96},
)


def test_the_default_floor_is_derived_from_chance() -> None:
    assert default_floor(4) == pytest.approx((0.625, 0.4375))
    assert default_floor(2) == pytest.approx((0.75, 0.625))


def test_a_model_no_better_than_chance_misses_the_default_floor_by_a_wide_margin() -> None:
    shuffled = Figures(
        accuracy=0.26,
        macro_f1=0.25,
        class_recall={"normal": 0.3, "imbalance": 0.22, "misalignment": 0.27, "bearing_fault": 0.24},
    )
    verdict = judge(shuffled, None, Policy(), LABELS)
    assert verdict.reason == "BelowFloor"
    assert verdict.failures()[0] == "macro_f1 0.250 < 0.625 (floor)"
    assert len(verdict.failures()) == 5  # macro F1 and all four recalls
    assert judge(GOOD, None, Policy(), LABELS).passed


def test_better_on_average_but_15_points_worse_on_one_class_is_refused_naming_it() -> None:
    candidate = Figures(
        version="v2",
        accuracy=0.95,
        macro_f1=0.94,
        class_recall={"normal": 0.99, "imbalance": 0.99, "misalignment": 0.99, "bearing_fault": 0.81},
    )
    assert candidate.macro_f1 > GOOD.macro_f1
    verdict = judge(candidate, GOOD, Policy(), LABELS)
    assert verdict.reason == "Regressed"
    assert verdict.failures() == ["recall[bearing_fault] 0.810 < 0.860 (regression)"]
    # A per-class override loosens (or tightens) the one class.
    assert judge(candidate, GOOD, Policy(max_regression_per_class={"bearing_fault": 0.2}), LABELS).passed


def test_within_the_allowed_regression_passes_and_the_floor_comes_first() -> None:
    slightly_worse = GOOD.model_copy(
        update={"macro_f1": 0.88, "class_recall": {**GOOD.class_recall, "imbalance": 0.81}}
    )
    assert judge(slightly_worse, GOOD, Policy(), LABELS).passed
    below_both = GOOD.model_copy(update={"macro_f1": 0.5})
    assert judge(below_both, GOOD, Policy(), LABELS).reason == "BelowFloor"


def test_spec_thresholds_replace_the_default_floor() -> None:
    policy = Policy(min_accuracy=0.95, min_macro_f1=0.0, min_class_recall={"normal": 0.99})
    verdict = judge(GOOD, None, policy, LABELS)
    assert verdict.failures() == ["accuracy 0.930 < 0.950 (floor)", "recall[normal] 0.950 < 0.990 (floor)"]


def test_latency_is_a_ceiling() -> None:
    slow = GOOD.model_copy(update={"p99_ms": 3.2})
    verdict = judge(slow, None, Policy(max_p99_ms=2.0), LABELS)
    assert (verdict.reason, verdict.failures()) == ("TooSlow", ["p99_ms 3.200 > 2.000 (ceiling)"])


def test_a_class_the_champion_does_not_know_is_not_compared() -> None:
    champion = GOOD.model_copy(
        update={"class_recall": {k: v for k, v in GOOD.class_recall.items() if k != "bearing_fault"}}
    )
    verdict = judge(GOOD, champion, Policy(), LABELS)
    assert verdict.passed
    assert not any(c.figure == "recall[bearing_fault]" and c.kind == "regression" for c in verdict.checks)


def test_every_reason_code_is_documented() -> None:
    assert set(REASONS) >= {
        "Passed",
        "BelowFloor",
        "Regressed",
        "TooSlow",
        "ShadowDisagreed",
        "AwaitingApproval",
    }
