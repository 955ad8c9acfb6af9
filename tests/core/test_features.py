"""The feature extractor against its formulas, its golden vectors and its edge cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import scipy.fft

from vibration_core import features as module
from vibration_core import fft
from vibration_core.errors import FeatureInputError
from vibration_core.features import BANDS_HZ, FEATURE_NAMES, band_bins, extract_features
from vibration_core.features_reference import reference_features

if TYPE_CHECKING:
    from collections.abc import Callable

GOLDEN = Path(__file__).with_name("golden_features.json")
FS = 25600.0
N = 4096


def tone(freq: float, amplitude: float = 1.0, fs: float = FS, n: int = N) -> np.ndarray:
    t = np.arange(n) / fs
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def golden_windows() -> np.ndarray:
    """Fixed inputs built from formulas, so the golden file never depends on the simulator."""
    rng = np.random.default_rng(20261124)
    noise = rng.standard_normal((4, N)).astype(np.float32)
    impacts = np.zeros(N, dtype=np.float32)
    impacts[::300] = 8.0
    return np.stack(
        [
            tone(50.0, 0.3) + 0.05 * noise[0],
            tone(100.0, 1.0) + tone(200.0, 0.6) + tone(300.0, 0.2) + 0.05 * noise[1],
            tone(3500.0, 0.2) + impacts + 0.1 * noise[2],
            noise[3] + 2.0,
        ]
    )


def test_feature_names_are_the_contract_order() -> None:
    assert FEATURE_NAMES == (
        "rms",
        "peak",
        "crest_factor",
        "kurtosis",
        "energy_low",
        "energy_mid",
        "energy_high",
        "ratio_low",
        "ratio_mid",
        "ratio_high",
    )


def test_golden_vectors_pin_the_output() -> None:
    actual = extract_features(golden_windows(), FS)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({"sample_rate": FS, "features": actual.tolist()}, indent=1) + "\n")
    expected = np.asarray(json.loads(GOLDEN.read_text())["features"])
    np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=1e-9)


@pytest.mark.parametrize("fs", [10000.0, 12800.0, 20000.0, 25600.0, 51200.0])
@pytest.mark.parametrize("n", [1024, 4096, 4097])
def test_fast_extractor_matches_the_plain_formulas(fs: float, n: int) -> None:
    rng = np.random.default_rng(int(fs) + n)
    windows = rng.standard_normal((70, n)).astype(np.float32) * rng.uniform(0.01, 10, (70, 1)).astype(
        np.float32
    )
    windows[::7, ::50] += 6.0  # impulsive rows, so kurtosis is not near 0 everywhere
    windows[3] += 1.5  # a DC offset
    fast, plain = extract_features(windows, fs), reference_features(windows, fs)
    np.testing.assert_allclose(fast, plain, rtol=2e-5, atol=1e-9)


def test_a_pure_tone_has_its_textbook_features() -> None:
    freq = 100 * FS / N  # exactly on bin 100 (625 Hz, mid band)
    rms, peak, crest, kurtosis, low, mid, high, r_low, r_mid, r_high = extract_features(tone(freq, 2.0), FS)[
        0
    ]
    assert rms == pytest.approx(2.0 / np.sqrt(2), rel=1e-5)
    assert peak == pytest.approx(2.0, rel=1e-3)
    assert crest == pytest.approx(np.sqrt(2), rel=1e-3)
    assert kurtosis == pytest.approx(1.5, abs=1e-4)  # Pearson: a sine's m4 / m2**2 is 3/2
    assert mid == pytest.approx(4.0, rel=1e-4)  # amplitude 2 -> (|X| * 2 / n)**2 = 4
    assert (low, high) == pytest.approx((0.0, 0.0), abs=1e-8)
    assert (r_low, r_mid, r_high) == pytest.approx((0.0, 1.0, 0.0), abs=1e-6)


@pytest.mark.parametrize(
    ("freq", "band"), [(10.0, 0), (190.0, 0), (200.0, 1), (1990.0, 1), (2000.0, 2), (9990.0, 2)]
)
def test_band_edges_are_lower_inclusive(freq: float, band: int) -> None:
    fs, n = 20480.0, 2048  # 10 Hz bins: every edge falls on a bin
    ratios = extract_features(tone(freq, 1.0, fs, n), fs)[0, 7:]
    assert int(np.argmax(ratios)) == band
    assert ratios[band] > 0.99


@pytest.mark.parametrize(("fs", "freq"), [(10000.0, 4800.0), (12000.0, 5900.0), (16000.0, 7900.0)])
def test_high_band_ends_at_nyquist_when_nyquist_is_inside_it(fs: float, freq: float) -> None:
    window = tone(freq, 1.0, fs, 4096)
    assert extract_features(window, fs)[0, 9] > 0.99
    _start, stop = band_bins(4096, fs)[2]
    assert stop == 4096 // 2 + 1  # the Nyquist bin is the last bin of the band


@pytest.mark.parametrize(
    ("fs", "n", "edge"), [(25000.0, 3000, 200.0), (10000.0, 2400, 2000.0), (50000.0, 6000, 2000.0)]
)
def test_an_edge_on_a_bin_goes_where_rfftfreq_puts_it(fs: float, n: int, edge: float) -> None:
    # At these lengths rfftfreq makes the edge's bin a hair below the edge (199.99999999999997
    # Hz), so `freqs >= lo`, `< hi` put it in the lower band; lo / resolution alone said the upper.
    freqs = np.fft.rfftfreq(n, 1 / fs)
    for (start, stop), (lo, hi) in zip(band_bins(n, fs), BANDS_HZ, strict=True):
        assert (start, stop) == (int(np.sum(freqs < lo)), int(np.sum(freqs < hi)))
    window = tone(edge, 1.0, fs, n)
    np.testing.assert_allclose(
        extract_features(window, fs), reference_features(window, fs), rtol=2e-5, atol=1e-9
    )


@pytest.mark.parametrize("n", [4000, 4095, 25600])
def test_a_constant_window_of_any_length_has_no_band_energy(n: int) -> None:
    # Lengths that are not a power of two leave rounding in every bin of a constant window's
    # spectrum: its ratios were that noise (0.75 / 0.23 / 0.02 at 4000 samples).
    features = extract_features(np.full(n, 3.3, dtype=np.float32), 25600.0)[0]
    assert features[4:].tolist() == [0.0] * 6
    np.testing.assert_allclose(features, reference_features(np.full(n, 3.3), 25600.0)[0], rtol=1e-5)


def test_band_bins_at_the_default_signal() -> None:
    # 6.25 Hz resolution: 12.5..193.75 Hz, 200..1993.75 Hz, 2000..9993.75 Hz
    assert band_bins(4096, 25600.0) == ((2, 32), (32, 320), (320, 1600))
    assert [lo for lo, _ in BANDS_HZ] == [10.0, 200.0, 2000.0]


def test_window_too_short_for_the_low_band_is_refused() -> None:
    with pytest.raises(
        FeatureInputError, match=r"too coarse to resolve the low band .* at least 129 samples"
    ):
        extract_features(np.ones((2, 64), dtype=np.float32), FS)
    assert extract_features(np.ones((1, 129), dtype=np.float32), FS).shape == (1, 10)


def test_sample_rate_below_the_high_band_is_refused() -> None:
    with pytest.raises(
        FeatureInputError, match=r"Nyquist \(1500 Hz\) at or below the start of the high band"
    ):
        extract_features(np.zeros(4096, dtype=np.float32), 3000.0)


@pytest.mark.parametrize("fs", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sample_rate_is_refused(fs: float) -> None:
    with pytest.raises(FeatureInputError, match="sample_rate must be a positive number"):
        extract_features(np.zeros(4096, dtype=np.float32), fs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_windows_are_named(bad: float) -> None:
    windows = np.zeros((100, N), dtype=np.float32)
    windows[7, 123] = bad
    windows[80, 0] = bad
    with pytest.raises(FeatureInputError, match=r"windows 7, 80 hold NaN or inf") as info:
        extract_features(windows, FS)
    assert info.value.windows == (7, 80)


def test_overflowing_samples_are_refused_not_returned_as_inf() -> None:
    windows = np.zeros((3, N), dtype=np.float32)
    windows[1, :10] = 3e38
    with pytest.raises(FeatureInputError, match="window 1 overflows float32") as info:
        extract_features(windows, FS)
    assert info.value.windows == (1,)


def test_all_zero_window_has_all_zero_features() -> None:
    assert extract_features(np.zeros(N, dtype=np.float32), FS).tolist() == [[0.0] * 10]


@pytest.mark.parametrize("value", [1.0, -3.5, 1e-3])
def test_constant_window_is_defined(value: float) -> None:
    rms, peak, crest, kurtosis, *spectral = extract_features(np.full(N, value, dtype=np.float32), FS)[0]
    assert rms == pytest.approx(abs(value), rel=1e-5)
    assert peak == pytest.approx(abs(value))
    assert crest == pytest.approx(1.0, rel=1e-5)
    assert kurtosis == 0.0
    assert spectral == pytest.approx([0.0] * 6, abs=1e-9)  # DC lies below every band


def varied_windows(n_samples: int, count: int = 120) -> np.ndarray:
    """Noise at many scales, DC offsets, tones, impacts, heavy tails, constants and zeros."""
    rng = np.random.default_rng(n_samples)
    t = np.arange(n_samples)
    kinds: list[Callable[[], np.ndarray]] = [
        lambda: rng.standard_normal(n_samples) * rng.uniform(1e-4, 1e3),
        lambda: rng.standard_normal(n_samples) * 1e-3 + rng.uniform(-50, 50),
        lambda: np.sin(t * rng.uniform(0.01, 3.0)) * rng.uniform(0.1, 100),
        lambda: np.where(t % rng.integers(50, 500) == 0, rng.uniform(1, 1e4), 0.0),
        lambda: rng.standard_t(3, n_samples) * rng.uniform(1e-3, 10),
        lambda: rng.standard_normal(n_samples) * rng.uniform(1e5, 1e7),  # across the quiet bound
        lambda: np.full(n_samples, rng.uniform(-5, 5)),
        lambda: np.zeros(n_samples),
        lambda: -np.zeros(n_samples),
    ]
    return np.stack([kinds[i % len(kinds)]() for i in range(count)]).astype(np.float32)


@pytest.mark.parametrize(("n_samples", "sample_rate"), [(N, FS), (1001, 10000.0), (2560, 25600.0)])
def test_one_window_gets_the_features_of_a_batch_bit_for_bit(n_samples: int, sample_rate: float) -> None:
    # A window alone has a path of its own (`_extract_one`, for a hall's load); a model must
    # see the same numbers whichever way its windows came. Bits, so that -0.0 counts too.
    windows = varied_windows(n_samples)
    batch = extract_features(windows, sample_rate)
    alone = np.vstack([extract_features(window, sample_rate) for window in windows])
    assert np.array_equal(batch.view(np.uint32), alone.view(np.uint32))
    assert not np.signbit(batch).any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30])
def test_one_window_is_refused_as_in_a_batch(bad: float) -> None:
    good = golden_windows()[1]
    window = good.copy()
    window[7] = bad
    with pytest.raises(FeatureInputError) as alone:
        extract_features(window, FS)
    with pytest.raises(FeatureInputError) as batch:
        extract_features(np.stack([window, good]), FS)
    assert (str(alone.value), alone.value.windows) == (str(batch.value), (0,))


def test_a_tiny_impulse_is_refused_without_a_warning_on_both_paths() -> None:
    # Its variance squares to 0 in float32: the kurtosis divides by zero, and the window is
    # refused by the check on the output, with no RuntimeWarning (warnings fail the tests).
    window = np.zeros(N, dtype=np.float32)
    window[100] = 1e-10
    with pytest.raises(FeatureInputError) as alone:
        extract_features(window, FS)
    with pytest.raises(FeatureInputError) as batch:
        extract_features(np.stack([window, golden_windows()[1]]), FS)
    assert (str(alone.value), alone.value.windows) == (str(batch.value), (0,))
    assert "window 0 underflows float32 in its features (largest sample 1e-10)" in str(alone.value)


def test_other_dtypes_give_the_float32_result() -> None:
    ints = (golden_windows()[1] * 1000).astype(np.int16)
    np.testing.assert_allclose(
        extract_features(ints, FS), extract_features(ints.astype(np.float32), FS), rtol=1e-6
    )
    as_list = golden_windows()[:2].astype(np.float64).tolist()
    assert extract_features(as_list, FS).dtype == np.float32


def test_float32_batch_is_not_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = golden_windows()
    seen: list[np.ndarray] = []
    original = module._extract_block

    def spy(block: np.ndarray, bins: tuple[tuple[int, int], ...], out: np.ndarray) -> None:
        seen.append(block)
        original(block, bins, out)

    monkeypatch.setattr(module, "_extract_block", spy)
    extract_features(batch, FS)
    assert all(np.shares_memory(block, batch) for block in seen)


def test_batch_is_not_modified() -> None:
    batch = golden_windows()
    before = batch.copy()
    extract_features(batch, FS)
    np.testing.assert_array_equal(batch, before)


def test_empty_batch_gives_empty_features() -> None:
    assert extract_features(np.zeros((0, N), dtype=np.float32), FS).shape == (0, 10)


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        (np.zeros((2, 3, N)), r"1-D \(one window\) or 2-D \(a batch\), got shape \(2, 3, 4096\)"),
        (np.array(["a", "b"]), "must hold real numbers"),
        (np.zeros(N, dtype=np.complex64), "must hold real numbers"),
        (np.zeros(1), "at least 2 samples"),
    ],
)
def test_malformed_batches_are_refused(windows: np.ndarray, message: str) -> None:
    with pytest.raises(FeatureInputError, match=message):
        extract_features(windows, FS)


def test_the_fft_is_scipys_pocketfft_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    for shape in [(1, 4096), (64, 4096), (3, 2560), (5, 1001)]:
        block = rng.standard_normal(shape).astype(np.float32)
        expected = scipy.fft.rfft(block, axis=1, workers=1)
        assert np.array_equal(fft.rfft(block), expected)
    assert fft.backend() == "pocketfft"


def test_extracting_features_does_not_import_scipy() -> None:
    # Serving pods pay for every import at start and in RSS (vibration_core.fft says why).
    code = (
        "import sys, numpy as np\n"
        "from vibration_core.features import extract_features\n"
        "extract_features(np.ones((2, 4096), dtype=np.float32), 25600.0)\n"
        "print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_a_pocketfft_that_cannot_be_loaded_falls_back_to_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ImportError("no pypocketfft here")

    monkeypatch.setattr(fft, "_load_pocketfft", broken)
    block = np.random.default_rng(3).standard_normal((4, 4096)).astype(np.float32)
    fft.transform.cache_clear()
    try:
        assert np.array_equal(fft.rfft(block), scipy.fft.rfft(block, axis=1, workers=1))
        assert fft.backend() == "scipy.fft"
    finally:
        fft.transform.cache_clear()  # the next test loads pocketfft again
