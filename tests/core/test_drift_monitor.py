"""The drift monitor's state: the rolling window, evaluations by count, the class baseline, hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from vibration_core.drift_monitor import CLASSES, DriftMonitor, DriftPolicy, Hysteresis
from vibration_core.reference import ReferenceDistribution, build_reference

LABELS = ("a", "b")


def _reference() -> ReferenceDistribution:
    """Two features uniform on (0, 1) in both classes, half the windows each."""
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(10_000) < 0.5, "a", "b")
    return build_reference(rng.random((10_000, 2)), labels, feature_names=("x", "y"), label_order=LABELS)


def _probabilities(n: int, rng: np.random.Generator, share_a: float = 0.5) -> np.ndarray:
    """Confident probabilities with about `share_a` of the windows predicted a."""
    a = rng.random(n) < share_a
    return np.column_stack([np.where(a, 0.9, 0.1), np.where(a, 0.1, 0.9)])


def _clean(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((n, 2)), _probabilities(n, rng)


def _shifted(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((n, 2)) * 0.6 + 0.4, _probabilities(n, rng)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"feature_psi": 0.0}, "feature_psi must be > 0"),
        ({"class_psi": float("nan")}, "class_psi must be > 0"),
        ({"p_value": 1.0}, r"p_value must lie in \(0, 1\)"),
        ({"p_value": 0.0}, "p_value must lie"),
        ({"window": 0}, "window must be >= 1"),
        ({"baseline_windows": 0}, "baseline_windows must be"),
        ({"raise_after": 0}, "raise_after must be"),
        ({"clear_after": 0}, "clear_after must be"),
        ({"evaluate_every": 0}, "evaluate_every must be"),
    ],
)
def test_policies_that_cannot_work_are_refused(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftPolicy(**fields)  # type: ignore[arg-type]  # the values are the point


def test_an_evaluation_every_quarter_window_unless_told() -> None:
    assert DriftPolicy(window=500).stride == 125
    assert DriftPolicy(window=500, evaluate_every=40).stride == 40


def test_hysteresis_raises_after_a_run_and_clears_after_a_run() -> None:
    h = Hysteresis(raise_after=3, clear_after=2)
    assert [h.observe(flagged=f) for f in (True, True, False, True, True)] == [False] * 5
    assert h.observe(flagged=True)  # the third flagged evaluation in a row
    assert h.observe(flagged=False)  # one clean evaluation does not clear it
    assert h.observe(flagged=True)
    assert h.observe(flagged=False)
    assert not h.observe(flagged=False)
    assert (h.flagged_in_a_row, h.clean_in_a_row) == (0, 2)


def test_the_monitor_keeps_the_last_window_rows_and_evaluates_by_count() -> None:
    policy = DriftPolicy(window=100, min_samples=50, evaluate_every=30)
    monitor = DriftMonitor(_reference(), LABELS, policy)
    rng = np.random.default_rng(1)
    monitor.update(*_clean(40, rng))
    assert monitor.report().evaluations == 0  # below min_samples
    monitor.update(*_clean(20, rng))
    first = monitor.report()
    assert (first.evaluations, first.samples) == (1, 60)
    monitor.update(*_clean(29, rng))
    assert monitor.report().evaluations == 1  # 29 new windows: not yet
    monitor.update(*_clean(1, rng))
    assert monitor.report().evaluations == 2
    monitor.update(*_clean(250, rng))  # more than the window: only its tail stays
    report = monitor.report()
    assert (report.evaluations, report.samples) == (3, 100)


def test_a_window_smaller_than_min_samples_is_still_evaluated_once_full() -> None:
    # spec.drift.window may be 50; min_samples keeps its default of 200, which a ring of 100
    # rows never holds: the monitor evaluates once the window is full instead of never.
    policy = DriftPolicy(window=100, baseline_windows=50)
    assert policy.min_samples == 200
    monitor = DriftMonitor(_reference(), LABELS, policy)
    rng = np.random.default_rng(3)
    monitor.update(*_clean(99, rng))
    assert monitor.report().evaluations == 0
    for _ in range(20):  # the pod asks for a report at each status (every few seconds)
        monitor.update(*_shifted(25, rng))
        report = monitor.report()
    assert report.evaluations > 3
    assert report.drifted


def test_the_window_holds_exactly_the_last_rows_whatever_the_batch_sizes() -> None:
    # One row a batch at a hall's load, 64 in a flood, more than the window after a stall.
    policy = DriftPolicy(window=100, min_samples=50, evaluate_every=30)
    monitor = DriftMonitor(_reference(), LABELS, policy)
    rng = np.random.default_rng(2)
    seen = 0
    for size in [1, 1, 64, 99, 1, 250, 7, 100, 3, *rng.integers(1, 130, size=40).tolist()]:
        features, probabilities = _clean(size, rng)
        features[:, 0] = np.arange(seen, seen + size)  # each row carries its arrival number
        monitor.update(features, probabilities)
        seen += size
        kept = sorted(monitor._rows[: min(seen, 100), 0].astype(int).tolist())  # the ring, in any order
        assert kept == list(range(max(0, seen - 100), seen))


def test_class_shares_wait_for_the_baseline_and_say_so() -> None:
    policy = DriftPolicy(window=100, min_samples=50, evaluate_every=50, baseline_windows=300)
    monitor = DriftMonitor(_reference(), LABELS, policy)
    rng = np.random.default_rng(2)
    monitor.update(*_clean(200, rng))
    early = monitor.report()
    assert (early.baseline_windows, early.as_flat()["baseline_needed"]) == (200, 300)
    assert "class_p" not in early.as_flat()
    assert "class_psi_vs_training" in early.as_flat()
    monitor.update(*_clean(100, rng))
    assert monitor.report().baseline_windows == 300
    monitor.update(rng.random((100, 2)), _probabilities(100, rng, share_a=0.97))
    later = monitor.report()
    assert later.baseline_windows == 300  # the baseline is the first 300, not the last
    assert later.classes.p_value < 1e-6
    assert CLASSES in later.flagged


def test_one_noisy_evaluation_does_not_flip_the_verdict_a_run_does() -> None:
    policy = DriftPolicy(window=200, min_samples=200, evaluate_every=200, raise_after=3, clear_after=3)
    monitor = DriftMonitor(_reference(), LABELS, policy)
    rng = np.random.default_rng(3)
    verdicts, flags = [], []
    for batch in ("clean", "shifted", "clean", "shifted", "shifted", "shifted", "clean", "clean", "clean"):
        monitor.update(*(_shifted if batch == "shifted" else _clean)(200, rng))
        report = monitor.report()
        verdicts.append(report.drifted)
        flags.append(bool(report.flagged))
    assert flags == [False, True, False, True, True, True, False, False, False]
    assert verdicts == [False, False, False, False, False, True, True, True, False]


def test_the_flat_figures_carry_the_verdict_the_tests_and_the_policy() -> None:
    policy = DriftPolicy(window=200, min_samples=200, evaluate_every=200, raise_after=1)
    monitor = DriftMonitor(_reference(), LABELS, policy)
    rng = np.random.default_rng(4)
    monitor.update(*_shifted(200, rng))
    flat = monitor.report().as_flat()
    assert flat["flagged.x"] == flat["flagged.y"] == 1.0
    assert flat["p.x"] < 1e-10  # kept with its exponent, not rounded to 0
    assert flat["psi.x"] > policy.feature_psi
    assert flat["threshold.p_per_test"] == pytest.approx(policy.p_value / 3, rel=1e-5)
    assert (flat["tests"], flat["threshold.raise_after"], flat["flagged_in_a_row"]) == (3.0, 1.0, 1.0)
    assert all(np.isfinite(value) for value in flat.values())


def test_an_empty_monitor_reports_only_what_it_knows() -> None:
    report = DriftMonitor(_reference(), LABELS).report()
    assert (report.samples, report.drifted, report.evaluations) == (0, False, 0)
    flat = report.as_flat()
    assert flat["samples"] == 0.0
    assert not any(name.startswith(("psi.", "p.", "class_")) for name in flat)


def test_the_monitor_refuses_a_batch_of_the_wrong_shape() -> None:
    monitor = DriftMonitor(_reference(), LABELS)
    with pytest.raises(ValueError, match=r"need \(n, 2\) features and \(n, 2\) probabilities"):
        monitor.update(np.zeros((3, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="probabilities"):
        monitor.update(np.zeros((3, 2)), np.zeros(3))
