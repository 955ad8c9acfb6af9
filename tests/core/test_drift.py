"""Drift statistics against the card's reference: PSI, KS, class shares, the rolling monitor."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from vibration_core.drift import (
    DriftMonitor,
    DriftThresholds,
    class_share_psi,
    feature_ks,
    feature_psi,
    reference_bins,
)
from vibration_core.features import FEATURE_NAMES, extract_features
from vibration_core.reference import DEFAULT_QUANTILE_LEVELS, ReferenceDistribution, build_reference
from vibration_train.simulator import CLASSES, Drift, SimulatedData, simulate

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


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"psi": 0.0}, "psi must be > 0"), ({"ks": -1.0}, "ks must be"), ({"min_samples": 0}, "min_samples")],
)
def test_thresholds_that_cannot_work_are_refused(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftThresholds(**fields)  # type: ignore[arg-type]  # the values are the point


def _uniform_reference(features: tuple[str, ...] = ("x", "y")) -> ReferenceDistribution:
    return ReferenceDistribution(
        samples=10_000,
        quantile_levels=LEVELS,
        feature_quantiles=dict.fromkeys(features, UNIFORM),
        class_shares={"a": 0.5, "b": 0.5},
    )


def test_the_monitor_keeps_the_last_window_rows() -> None:
    monitor = DriftMonitor(_uniform_reference(), ("a", "b"), window=100, thresholds=DriftThresholds())
    rng = np.random.default_rng(3)
    monitor.update(rng.random((80, 2)) + 5.0, np.zeros(80, dtype=int))  # way off, then pushed out
    for _ in range(5):
        monitor.update(rng.random((30, 2)), rng.integers(0, 2, 30))
    report = monitor.report()
    assert report.samples == 100
    assert report.max_psi < 0.5
    assert report.max_ks < 0.2
    # a batch larger than the window keeps only its tail
    monitor.update(np.full((250, 2), 0.5), np.zeros(250, dtype=int))
    assert monitor.report().samples == 100
    assert monitor.report().max_ks == pytest.approx(0.5)


def test_the_monitor_calls_nothing_drifted_below_min_samples() -> None:
    monitor = DriftMonitor(
        _uniform_reference(), ("a", "b"), window=500, thresholds=DriftThresholds(min_samples=50)
    )
    monitor.update(np.full((49, 2), 3.0), np.zeros(49, dtype=int))
    assert not monitor.report().drifted
    monitor.update(np.full((1, 2), 3.0), np.zeros(1, dtype=int))
    report = monitor.report()
    assert report.drifted
    assert set(report.exceeded) == {"psi.x", "psi.y", "ks.x", "ks.y", "class_psi"}


def test_an_empty_monitor_reports_only_finite_values() -> None:
    report = DriftMonitor(_uniform_reference(), ("a", "b")).report()
    assert report.samples == 0
    assert not report.drifted
    assert report.as_flat() == {"samples": 0.0}


def test_the_monitor_refuses_a_batch_of_the_wrong_shape() -> None:
    monitor = DriftMonitor(_uniform_reference(), ("a", "b"))
    with pytest.raises(ValueError, match=r"need \(n, 2\) features"):
        monitor.update(np.zeros((3, 3)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="window must be"):
        DriftMonitor(_uniform_reference(), ("a", "b"), window=0)


# --- against the simulator's drift knobs -------------------------------------------------


@pytest.fixture(scope="module")
def training() -> tuple[SimulatedData, ReferenceDistribution]:
    data = simulate(2000, seed=1, window_length=2048)
    features = extract_features(data.windows, data.sample_rate)
    reference = build_reference(features, data.labels, feature_names=FEATURE_NAMES, label_order=CLASSES)
    return data, reference


def _report(
    training: tuple[SimulatedData, ReferenceDistribution], *, seed: int, drift: Drift | None = None
) -> tuple[float, float, bool]:
    data, reference = training
    machines = 8 if drift is not None and drift.new_machine else data.machines
    live = simulate(500, seed=seed, window_length=2048, machines=machines, drift=drift)
    monitor = DriftMonitor(reference, CLASSES, window=500)
    classes = np.array([CLASSES.index(label) for label in live.labels])
    monitor.update(extract_features(live.windows, live.sample_rate), classes)
    report = monitor.report()
    assert report.class_psi < 0.05  # the true labels follow the training mix
    return report.max_psi, report.max_ks, report.drifted


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_fresh_windows_of_the_same_machines_do_not_drift(
    training: tuple[SimulatedData, ReferenceDistribution], seed: int
) -> None:
    max_psi, max_ks, drifted = _report(training, seed=seed)
    assert not drifted
    assert max_psi < 0.12
    assert max_ks < 0.1


@pytest.mark.parametrize(
    "drift",
    [Drift(speed_shift=0.3), Drift(gain_change=-0.3), Drift(noise_scale=3.0), Drift(new_machine=True)],
    ids=["speed", "gain", "noise", "new_machine"],
)
def test_the_simulator_drift_knobs_are_detected(
    training: tuple[SimulatedData, ReferenceDistribution], drift: Drift
) -> None:
    max_psi, _, drifted = _report(training, seed=2, drift=drift)
    assert drifted
    assert max_psi > 0.3


def test_a_changed_class_mix_drifts_the_class_shares(
    training: tuple[SimulatedData, ReferenceDistribution],
) -> None:
    _, reference = training
    monitor = DriftMonitor(reference, CLASSES, window=400, thresholds=DriftThresholds(psi=1e9, ks=1))
    rng = np.random.default_rng(5)
    rows = rng.uniform(0, 1, (400, len(FEATURE_NAMES)))
    monitor.update(rows, np.zeros(400, dtype=int))  # every window "normal"
    report = monitor.report()
    assert report.exceeded == ("class_psi",)
    assert report.as_flat()["class_psi"] > 1.0
