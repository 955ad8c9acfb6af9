"""The simulator: determinism, parameters, and physics seen through spectra and features."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy.signal import hilbert
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.model_selection import train_test_split

from vibration_core.errors import SimulationParameterError, VibrationCoreError
from vibration_core.features import FEATURE_NAMES, extract_features
from vibration_train.simulator import (
    CLASSES,
    DEFAULT_START,
    Drift,
    MachineProfile,
    make_machines,
    simulate,
    simulate_machine_stream,
)
from vibration_train.simulator_signals import bpfi, bpfo

FS = 25600.0
# A deep-groove bearing (the SKF 6205 of the CWRU data set) on a 40 Hz shaft,
# with a resonance well inside the high band.
PROFILE = MachineProfile(
    id="bench-01",
    shaft_hz=40.0,
    load=0.7,
    n_balls=9,
    ball_diameter_mm=7.94,
    pitch_diameter_mm=39.04,
    contact_angle_deg=0.0,
    resonance_hz=4500.0,
    damping_ratio=0.05,
    residual_g=0.04,
    sensor_gain=1.0,
    noise_level=0.008,
)


def feature(data: Any, name: str) -> np.ndarray:
    return extract_features(data.windows, data.sample_rate)[:, FEATURE_NAMES.index(name)]


def amplitude(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed amplitude spectra and their frequencies."""
    n = windows.shape[1]
    spectrum = np.abs(np.fft.rfft(windows * np.hanning(n), axis=1)) * 2 / n
    return np.fft.rfftfreq(n, 1 / FS), spectrum


def line(windows: np.ndarray, freq: float, tolerance: float = 0.03) -> np.ndarray:
    """Per window, the largest amplitude within `tolerance` (relative) of `freq`."""
    f, spectrum = amplitude(windows)
    near = np.abs(f - freq) <= max(tolerance * freq, 1.5 * f[1])
    peaks: np.ndarray = spectrum[:, near].max(axis=1)
    return peaks


def stream(labels: list[str], seed: int = 7, **kwargs: Any) -> Any:
    return simulate_machine_stream(PROFILE, labels, seed=seed, **kwargs)


# --- determinism, shapes, parameters -----------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_does_not() -> None:
    first, again, other = simulate(48, seed=3), simulate(48, seed=3), simulate(48, seed=4)
    assert first.windows.tobytes() == again.windows.tobytes()
    assert first.labels.tolist() == again.labels.tolist()
    assert first.machine.tolist() == again.machine.tolist()
    assert first.machines == again.machines
    assert first.windows.tobytes() != other.windows.tobytes()
    assert first.machines != other.machines


def test_shapes_dtypes_and_layout() -> None:
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    data = simulate(
        10, seed=1, machines=3, sample_rate=10000.0, window_length=2048, start=start, window_period_s=0.5
    )
    assert len(data) == 10
    assert data.windows.shape == (10, 2048)
    assert data.windows.dtype == np.float32
    assert data.windows.flags.c_contiguous
    assert not data.windows.flags.writeable
    assert data.sample_rate == 10000.0
    assert data.timestamp_ns.dtype == np.int64
    assert set(data.labels.tolist()) <= set(CLASSES)
    # Round robin over the machines; each machine's windows one period apart.
    assert data.machine.tolist()[:4] == ["machine-00", "machine-01", "machine-02", "machine-00"]
    start_ns = int(start.timestamp()) * 10**9
    assert data.timestamp_ns.tolist()[:4] == [start_ns, start_ns, start_ns, start_ns + 500_000_000]
    assert np.isfinite(data.windows).all()


def test_class_shares_are_met_exactly_up_to_rounding() -> None:
    equal = simulate(40, seed=0)
    assert {c: int((equal.labels == c).sum()) for c in CLASSES} == dict.fromkeys(CLASSES, 10)
    skewed = simulate(9, seed=0, class_shares={"normal": 3, "bearing_fault": 1.0})
    # 6.75 and 2.25 windows: the larger remainder gets the odd one.
    assert sorted(skewed.labels.tolist()) == ["bearing_fault"] * 2 + ["normal"] * 7


def test_explicit_profiles_and_machine_stream() -> None:
    data = simulate(6, seed=0, machines=[PROFILE])
    assert data.machine.tolist() == ["bench-01"] * 6
    assert data.machines == (PROFILE,)
    labels = ["normal", "normal", "bearing_fault"]
    run = stream(labels, start=DEFAULT_START + timedelta(seconds=10))
    assert run.labels.tolist() == labels
    assert np.diff(run.timestamp_ns).tolist() == [10**9, 10**9]


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: simulate(0, seed=0), "n_windows"),
        (lambda: simulate(4, seed=0, sample_rate=4000.0), "sample_rate"),
        (lambda: simulate(4, seed=0, sample_rate=float("nan")), "sample_rate"),
        (lambda: simulate(4, seed=0, window_length=64), "window_length"),
        (lambda: simulate(4, seed=0, class_shares={"broken_gear": 1.0}), "class_shares"),
        (lambda: simulate(4, seed=0, class_shares={"normal": -1.0, "imbalance": 2.0}), "class_shares"),
        (lambda: simulate(4, seed=0, class_shares={"normal": 0.0}), "class_shares"),
        (lambda: simulate(4, seed=0, machines=0), "machines"),
        (lambda: simulate(4, seed=0, machines=[]), "machines"),
        (lambda: simulate(4, seed=0, start=datetime(2026, 1, 1)), "start"),  # noqa: DTZ001 - the naive one is the point
        (lambda: simulate(4, seed=0, window_period_s=0.0), "window_period_s"),
        (lambda: simulate(4, seed=0, machines=[PROFILE], drift=Drift(new_machine=True)), "drift.new_machine"),
        (lambda: Drift(speed_shift=-1.0), "drift.speed_shift"),
        (lambda: Drift(gain_change=float("inf")), "drift.gain_change"),
        (lambda: Drift(noise_scale=-0.5), "drift.noise_scale"),
        (lambda: dataclasses.replace(PROFILE, ball_diameter_mm=50.0), "bench-01.ball_diameter_mm"),
        (lambda: stream(["normal", "on_fire"]), "labels"),
    ],
)
def test_bad_parameters_are_refused_by_name(call: Any, parameter: str) -> None:
    with pytest.raises(SimulationParameterError) as caught:
        call()
    assert caught.value.parameter == parameter
    assert parameter in str(caught.value)
    assert isinstance(caught.value, VibrationCoreError)
    assert isinstance(caught.value, ValueError)


# --- physics -----------------------------------------------------------------------------------


def test_defect_frequencies_match_the_hand_computed_values() -> None:
    # CWRU drive-end bearing at 1797 rpm: 3.5848 x and 5.4152 x shaft rate.
    shaft = 1797 / 60
    assert bpfo(shaft, 9, 7.94, 39.04, 0.0) == pytest.approx(107.36, abs=0.01)
    assert bpfi(shaft, 9, 7.94, 39.04, 0.0) == pytest.approx(162.19, abs=0.01)
    # A contact angle shortens the ball's lever: cos(60 deg) = 0.5.
    assert bpfo(10.0, 10, 10.0, 50.0, 60.0) == pytest.approx(5 * 10 * (1 - 0.2 * 0.5))
    assert PROFILE.bpfo_hz == pytest.approx(bpfo(40.0, 9, 7.94, 39.04, 0.0))


def test_imbalance_grows_the_1x_component() -> None:
    data = stream(["normal"] * 24 + ["imbalance"] * 24)
    one_x = line(data.windows, PROFILE.shaft_hz)
    assert np.median(one_x[24:]) > 2 * np.median(one_x[:24])


def test_misalignment_shows_a_dominant_2x_peak() -> None:
    data = stream(["normal"] * 24 + ["misalignment"] * 24)
    one_x, two_x = line(data.windows, PROFILE.shaft_hz), line(data.windows, 2 * PROFILE.shaft_hz)
    assert np.median(two_x[24:]) > 3 * np.median(two_x[:24])
    assert np.median(two_x[24:] / one_x[24:]) > 1.5


def test_bearing_faults_raise_high_band_energy_and_kurtosis() -> None:
    data = simulate(160, seed=5, class_shares={"normal": 1, "bearing_fault": 1})
    fault = data.labels == "bearing_fault"
    high, kurtosis = feature(data, "energy_high"), feature(data, "kurtosis")
    assert np.median(high[fault]) > 3 * np.median(high[~fault])
    assert kurtosis[fault].mean() > kurtosis[~fault].mean() + 1.0


def test_envelope_spectrum_of_a_bearing_fault_peaks_at_a_defect_frequency() -> None:
    # Long windows for a fine frequency resolution; the strongest faults,
    # whose envelope is not buried in noise.
    data = stream(["bearing_fault"] * 24, seed=11, window_length=16384)
    strongest = np.argsort(feature(data, "kurtosis"))[-8:]
    spectrum = np.fft.rfft(data.windows[strongest], axis=1)
    f = np.fft.rfftfreq(data.windows.shape[1], 1 / FS)
    spectrum[:, f < 2000] = 0  # the resonance band, where the impacts ring
    envelope = np.abs(hilbert(np.fft.irfft(spectrum, axis=1), axis=1))
    env_f, env_spectrum = amplitude(envelope - envelope.mean(axis=1, keepdims=True))
    band = (env_f > 20) & (env_f < 1000)
    peaks = env_f[band][np.argmax(env_spectrum[:, band], axis=1)]
    defects = np.array([PROFILE.bpfo_hz, PROFILE.bpfi_hz])
    error = np.min(np.abs(peaks[:, None] - defects[None, :]) / defects[None, :], axis=1)
    assert np.mean(error < 0.03) >= 0.75, (peaks, defects)


# --- drift -------------------------------------------------------------------------------------


def test_speed_shift_moves_the_1x_peak() -> None:
    labels = ["imbalance"] * 8
    base = stream(labels, window_length=16384)
    fast = stream(labels, window_length=16384, drift=Drift(speed_shift=0.2))
    f, spectrum = amplitude(base.windows)
    _, fast_spectrum = amplitude(fast.windows)
    low = (f > 10) & (f < 200)
    peak, fast_peak = f[low][spectrum[:, low].argmax(axis=1)], f[low][fast_spectrum[:, low].argmax(axis=1)]
    np.testing.assert_allclose(peak, PROFILE.shaft_hz, rtol=0.04)
    # Peak picking is good to a bin or so (1.6 Hz here): the median of the ratios.
    assert np.median(fast_peak / peak) == pytest.approx(1.2, rel=0.015)


def test_gain_change_scales_the_whole_window() -> None:
    base = simulate(32, seed=2)
    low = simulate(32, seed=2, drift=Drift(gain_change=-0.3))
    np.testing.assert_allclose(low.windows, 0.7 * base.windows, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(feature(low, "rms") / feature(base, "rms"), 0.7, rtol=1e-4)


def test_noise_scale_raises_the_noise_floor() -> None:
    base = stream(["normal"] * 16)
    noisy = stream(["normal"] * 16, drift=Drift(noise_scale=3.0))
    f, spectrum = amplitude(base.windows)
    _, noisy_spectrum = amplitude(noisy.windows)
    # Far from the resonance and the shaft lines the spectrum is the floor alone.
    floor = (f > 9000) & (f < 12000)
    ratio = np.median(noisy_spectrum[:, floor]) / np.median(spectrum[:, floor])
    assert ratio == pytest.approx(3.0, rel=0.05)


def test_new_machine_draws_from_a_shifted_population() -> None:
    usual = make_machines(40, np.random.default_rng(0))
    new = simulate(8, seed=0, machines=40, drift=Drift(new_machine=True)).machines
    assert all(m.id.startswith("machine-new-") for m in new)
    assert np.mean([m.shaft_hz for m in new]) > np.mean([m.shaft_hz for m in usual]) + 10
    assert np.mean([m.resonance_hz for m in new]) > np.mean([m.resonance_hz for m in usual]) + 3000


def test_a_small_model_separates_the_classes() -> None:
    # The full calibration (6000 windows, 150 trees) is tools/calibrate.py;
    # this only guards against a simulator that stopped being learnable.
    data = simulate(800, seed=0, window_length=2048)
    features = extract_features(data.windows, data.sample_rate)
    x_train, x_test, y_train, y_test = train_test_split(
        features, data.labels, test_size=0.25, stratify=data.labels, random_state=42
    )
    model = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=42).fit(x_train, y_train)
    assert (model.predict(x_test) == y_test).mean() > 0.8
