"""Drift statistics against the card's reference: bins, PSI, KS, the class mix, the tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from vibration_core.drift import (
    class_mix,
    class_share_psi,
    compare_classes,
    compare_feature,
    feature_ks,
    feature_psi,
)
from vibration_core.drift_monitor import DriftMonitor, DriftPolicy, DriftReport
from vibration_core.drift_reference import feature_references, reference_bins
from vibration_core.features import FEATURE_NAMES, extract_features
from vibration_core.reference import DEFAULT_QUANTILE_LEVELS, ReferenceDistribution, build_reference
from vibration_train.data import TrainingTable
from vibration_train.fit import FitConfig, FitResult, fit
from vibration_train.simulator import CLASSES, Drift, MachineProfile, simulate

LEVELS = DEFAULT_QUANTILE_LEVELS
UNIFORM = tuple(LEVELS)  # the quantiles of U(0, 1) are its levels


def test_bins_carry_the_level_differences_and_small_tails() -> None:
    edges, shares = reference_bins(UNIFORM, LEVELS, samples=999)
    assert edges.tolist() == list(UNIFORM)
    assert shares.size == len(LEVELS) + 1
    assert shares.sum() == pytest.approx(1.0)
    assert shares[0] == pytest.approx(shares[-1])
    assert shares[0] == pytest.approx(1e-3, rel=0.01)
    assert shares[1:-1] == pytest.approx(np.full(20, 0.05), rel=0.01)


def test_levels_that_stop_short_of_0_and_1_put_their_rest_in_the_tails() -> None:
    _, shares = reference_bins((1.0, 2.0, 3.0), (0.1, 0.5, 0.9), samples=10)
    assert shares.tolist() == pytest.approx([0.1, 0.4, 0.4, 0.1])


def test_a_repeated_quantile_is_one_edge_with_the_mass_of_the_run() -> None:
    # 40 % of the reference is exactly 0 (a ratio of a silent band, say).
    quantiles = (0.0, 0.0, 0.0, 1.0, 2.0)
    levels = (0.0, 0.2, 0.4, 0.7, 1.0)
    edges, shares = reference_bins(quantiles, levels, samples=1000)
    assert edges.tolist() == [0.0, 1.0, 2.0]
    assert shares[0] == pytest.approx(0.4, rel=0.01)
    rng = np.random.default_rng(0)
    sample = np.where(rng.random(5000) < 0.4, 0.0, rng.uniform(0, 2, 5000))
    sample = np.where((sample > 0) & (sample < 1), sample, np.where(sample > 0, rng.uniform(1, 2, 5000), 0.0))
    assert feature_psi(sample, quantiles, levels, 1000) < 0.05


def test_psi_is_near_zero_for_the_reference_and_large_under_a_shift() -> None:
    rng = np.random.default_rng(1)
    assert feature_psi(rng.random(5000), UNIFORM, LEVELS, 10_000) < 0.02
    assert feature_psi(rng.random(5000) + 0.3, UNIFORM, LEVELS, 10_000) > 1.0


def test_psi_ignores_non_finite_values_and_is_nan_without_data() -> None:
    assert np.isnan(feature_psi([], UNIFORM, LEVELS, 10))
    assert np.isnan(feature_psi([np.nan, np.inf], UNIFORM, LEVELS, 10))


def test_ks_equals_scipy_for_a_reference_that_is_exactly_piecewise_linear() -> None:
    rng = np.random.default_rng(2)
    for shift in (0.0, 0.1, 0.5):
        data = rng.random(700) * 0.9 + shift
        expected = stats.kstest(data, "uniform").statistic
        assert feature_ks(data, UNIFORM, LEVELS) == pytest.approx(expected, abs=1e-12)


def test_ks_sees_a_point_mass_the_reference_does_not_have() -> None:
    # All data at the median: the empirical CDF jumps 0 -> 1 there, the reference is 0.5.
    assert feature_ks(np.full(10, 0.5), UNIFORM, LEVELS) == pytest.approx(0.5)
    # and a reference point mass is matched by a data point mass
    assert feature_ks(np.zeros(10), (0.0, 0.0, 1.0), (0.0, 1.0, 1.0)) == pytest.approx(0.0)


def test_ks_is_nan_without_data() -> None:
    assert np.isnan(feature_ks([], UNIFORM, LEVELS))


def test_class_shares() -> None:
    assert class_share_psi([25, 25, 25, 25], [0.25] * 4) == pytest.approx(0.0)
    assert class_share_psi([97, 1, 1, 1], [0.25] * 4) > 1.0
    assert np.isnan(class_share_psi([0, 0], [0.5, 0.5]))


# --- the class mix --------------------------------------------------------------------------


def _posteriors(x: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Exact posteriors of two unit Gaussians at -1 and +1 under `prior`."""
    likelihood = np.column_stack([np.exp(-0.5 * (x + 1.0) ** 2), np.exp(-0.5 * (x - 1.0) ** 2)]) * prior
    posteriors: np.ndarray = likelihood / likelihood.sum(axis=1, keepdims=True)
    return posteriors


def test_the_mix_is_estimated_from_probabilities_not_counted_from_labels() -> None:
    rng = np.random.default_rng(4)
    balanced = np.array([0.5, 0.5])
    x = np.r_[rng.normal(-1.0, 1.0, 1900), rng.normal(1.0, 1.0, 100)]  # 95 % class 0
    probabilities = _posteriors(x, balanced)  # a model trained on a balanced set
    counted = np.bincount(np.argmax(probabilities, axis=1), minlength=2) / x.size
    assert counted[0] < 0.85  # argmax: the false positives land on the rare class
    assert class_mix(probabilities, balanced) == pytest.approx([0.95, 0.05], abs=0.02)


def test_the_mix_leaves_a_class_the_training_never_saw_at_zero() -> None:
    probabilities = np.array([[0.7, 0.3, 0.0], [0.2, 0.8, 0.0]])
    mix = class_mix(probabilities, np.array([0.5, 0.5, 0.0]))
    assert mix[2] == 0.0
    assert mix.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"need \(n > 0, 3\) probabilities"):
        class_mix(np.zeros((0, 3)), np.array([0.5, 0.5, 0.0]))


# --- the tests ----------------------------------------------------------------------------


def _two_class_reference() -> tuple[np.ndarray, np.ndarray]:
    """A balanced training set: class a uniform on (0, 1), class b on (1, 2)."""
    rng = np.random.default_rng(6)
    features = np.r_[rng.uniform(0, 1, 2000), rng.uniform(1, 2, 2000)][:, None]
    labels = np.array(["a"] * 2000 + ["b"] * 2000)
    return features, labels


def test_features_are_compared_with_the_training_data_in_the_windows_class_mix() -> None:
    features, labels = _two_class_reference()
    reference = build_reference(features, labels, feature_names=("x",), label_order=("a", "b"))
    (by_class,) = feature_references(reference, ("a", "b"))
    (pooled,) = feature_references(reference.model_copy(update={"class_bin_counts": None}), ("a", "b"))
    rng = np.random.default_rng(7)
    window = np.r_[rng.uniform(0, 1, 475), rng.uniform(1, 2, 25)]  # 95 % a: a new mix, nothing else
    mix = np.array([0.95, 0.05])
    same = compare_feature(window, mix, by_class)
    assert same.p_value > 0.01
    assert same.psi < 0.05
    assert same.ks < 0.1
    # The pooled training mix calls the new class mix feature drift.
    wrong = compare_feature(window, mix, pooled)
    assert wrong.p_value < 1e-10
    assert wrong.psi > 0.5
    # and a change within the classes is drift either way
    moved = compare_feature(window * 1.15, mix, by_class)
    assert moved.p_value < 1e-4
    assert moved.psi > 0.05


def test_the_test_needs_more_evidence_from_fewer_windows() -> None:
    features, labels = _two_class_reference()
    reference = build_reference(features, labels, feature_names=("x",), label_order=("a", "b"))
    (ref,) = feature_references(reference, ("a", "b"))
    rng = np.random.default_rng(8)
    mix = np.array([0.5, 0.5])
    small = compare_feature(np.r_[rng.uniform(0, 1, 50), rng.uniform(1.05, 2.05, 50)], mix, ref)
    large = compare_feature(np.r_[rng.uniform(0, 1, 5000), rng.uniform(1.05, 2.05, 5000)], mix, ref)
    assert small.p_value > 0.01  # the same 5 % shift of one class: chance at 100 windows
    assert large.p_value < 1e-6  # not at 10 000


def test_class_counts_are_compared_with_the_baseline() -> None:
    baseline = np.array([1900, 40, 30, 30])
    assert compare_classes([475, 10, 8, 7], baseline).p_value > 0.1
    shifted = compare_classes([400, 40, 30, 30], baseline)
    assert shifted.p_value < 1e-6
    assert shifted.psi > 0.1
    assert np.isnan(compare_classes([0, 0, 0, 0], baseline).psi)


# --- measured on the simulator, with a real model: fast versions of `make drift-eval` -----------

NORMAL_SHARE = 0.95
HALL_MIX = {label: NORMAL_SHARE if label == "normal" else (1 - NORMAL_SHARE) / 3 for label in CLASSES}
POLICY = DriftPolicy(baseline_windows=1000)
"""The default policy with a shorter baseline, to keep these tests to seconds."""


@dataclass(frozen=True, eq=False)
class Hall:
    """A model trained on a balanced simulated set, its card's reference, and its machines."""

    result: FitResult
    reference: ReferenceDistribution
    machines: tuple[MachineProfile, ...]

    def stream(self, n: int, seed: int, drift: Drift | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features and class probabilities of `n` windows of the hall: same machines, 95 % normal."""
        machines = 8 if drift is not None and drift.new_machine else self.machines
        data = simulate(
            n, seed=seed, window_length=2048, machines=machines, class_shares=HALL_MIX, drift=drift
        )
        features = extract_features(data.windows, data.sample_rate)
        return features, np.asarray(self.result.estimator.predict_proba(features), dtype=np.float64)

    def monitor(self, policy: DriftPolicy = POLICY, *, by_class: bool = True) -> DriftMonitor:
        pooled = self.reference.model_copy(update={"class_bin_counts": None})
        reference = self.reference if by_class else pooled
        return DriftMonitor(reference, self.result.labels, policy)


@pytest.fixture(scope="module")
def hall() -> Hall:
    data = simulate(4000, seed=1, window_length=2048)
    table = TrainingTable.from_simulated(data)
    result = fit(table, FitConfig(n_estimators=30, max_depth=3))
    reference = build_reference(
        table.features, table.labels, feature_names=FEATURE_NAMES, label_order=result.labels
    )
    return Hall(result, reference, data.machines)


def _feed(monitor: DriftMonitor, features: np.ndarray, probabilities: np.ndarray) -> list[DriftReport]:
    """One report per evaluation stride."""
    stride = monitor.policy.stride
    reports = []
    for start in range(0, features.shape[0] - stride + 1, stride):
        monitor.update(features[start : start + stride], probabilities[start : start + stride])
        reports.append(monitor.report())
    return reports


def test_a_stationary_95_percent_normal_hall_does_not_drift(hall: Hall) -> None:
    features, probabilities = hall.stream(3000, seed=11)
    reports = _feed(hall.monitor(), features, probabilities)
    assert not any(r.drifted for r in reports)
    assert sum(bool(r.flagged) for r in reports) <= 1
    last = reports[-1]
    assert last.baseline_windows == POLICY.baseline_windows
    assert last.class_psi_vs_training > 1.0  # against the training mix the hall looks drifted
    assert last.classes.psi < POLICY.class_psi  # against its own baseline it does not
    # and against the pooled training mix its features do: the per-class reference is what prevents it
    assert any(r.drifted for r in _feed(hall.monitor(by_class=False), features, probabilities))


@pytest.mark.parametrize(
    "drift", [Drift(speed_shift=0.1), Drift(gain_change=-0.3)], ids=["speed+10%", "gain-30%"]
)
def test_a_shift_is_flagged_within_2000_windows(hall: Hall, drift: Drift) -> None:
    monitor = hall.monitor()
    assert not any(r.drifted for r in _feed(monitor, *hall.stream(1500, seed=12)))
    reports = _feed(monitor, *hall.stream(2000, seed=13, drift=drift))
    assert any(r.drifted for r in reports)


@pytest.mark.parametrize(
    "drift",
    [Drift(speed_shift=0.3), Drift(gain_change=0.3), Drift(noise_scale=3.0), Drift(new_machine=True)],
    ids=["speed", "gain", "noise", "new_machine"],
)
def test_every_simulator_knob_is_flagged_in_one_window(hall: Hall, drift: Drift) -> None:
    monitor = hall.monitor(DriftPolicy(min_samples=POLICY.window, evaluate_every=POLICY.window))
    (report,) = _feed(monitor, *hall.stream(POLICY.window, seed=17, drift=drift))
    assert report.flagged
    assert report.max_psi > 0.2


def test_a_single_noisy_evaluation_does_not_flip_the_verdict(hall: Hall) -> None:
    # Evaluations of disjoint windows: one window of shifted data is exactly one noisy evaluation.
    policy = DriftPolicy(baseline_windows=1000, evaluate_every=POLICY.window)
    monitor = hall.monitor(policy)
    clean = hall.stream(3000, seed=14)
    noisy = hall.stream(policy.window, seed=15, drift=Drift(gain_change=-0.3))
    reports = _feed(monitor, clean[0][:1500], clean[1][:1500])
    reports += _feed(monitor, *noisy)
    assert reports[-1].flagged  # the noisy evaluation is flagged ...
    reports += _feed(monitor, clean[0][1500:], clean[1][1500:])
    assert not any(r.drifted for r in reports)  # ... and does not make the verdict
    sustained = _feed(monitor, *hall.stream(3 * policy.window, seed=16, drift=Drift(gain_change=-0.3)))
    assert [r.drifted for r in sustained] == [False, False, True]


def test_a_class_the_baseline_never_saw_is_drift_when_it_comes() -> None:
    # A healthy hall's baseline: every window normal. A third of the hall then bears a fault.
    baseline = np.array([2000, 0, 0, 0])
    failing = compare_classes([140, 0, 0, 60], baseline)
    assert failing.p_value < 1e-6
    assert failing.df == 1
    assert compare_classes([200, 0, 0, 0], baseline).p_value == 1.0
    # A few: the faults together expect fewer than MIN_EXPECTED windows, and had been pooled
    # with normal, the only class left: one group, no test, p = 1 (scipy's test: 2.7e-19).
    few = compare_classes([480, 10, 5, 5], baseline)
    assert (few.df, few.p_value < 1e-12) == (1, True)
    assert compare_classes([198, 0, 0, 2], np.array([1990, 0, 0, 10])).p_value > 0.1, "chance"
    # As scipy's contingency test, without Yates' correction, where no class is pooled.
    counts, reference = np.array([400, 40, 30, 30]), np.array([1900, 40, 30, 30])
    expected = stats.chi2_contingency(np.vstack([counts, reference]), correction=False)
    ours = compare_classes(counts, reference)
    assert ours.statistic == pytest.approx(expected.statistic)
    assert ours.p_value == pytest.approx(expected.pvalue)
