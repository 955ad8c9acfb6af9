"""The one feature extractor: ten features of a raw vibration window.

Training, serving and validation all call `extract_features`; nothing else in
the project computes a feature. The definitions (population moments, the
amplitude spectrum `|rfft(x)| * 2 / n`) follow the reference pipeline:

========== ==============================================================
rms        ``sqrt(mean(x**2))``
peak       ``max(|x|)``
crest      ``peak / rms``; 0 for an all-zero window
kurtosis   Pearson kurtosis from population moments, ``m4 / m2**2``
           (``scipy.stats.kurtosis(x, fisher=False)``: about 3 for Gaussian
           noise, 1.5 for a sine; NOT excess kurtosis, so that the reference
           pipeline's models and feature tables read the same numbers); 0 for
           a constant window
energy_*   sum of the squared amplitude spectrum ``(|rfft(x)| * 2 / n)**2``
           over the bins with ``lo <= f < hi``: low 10-200 Hz, mid
           200-2000 Hz, high 2000-10000 Hz
ratio_*    each band energy over the sum of the three; 0 when the sum is 0
========== ==============================================================

Sample rates. The spectrum only reaches Nyquist (``sample_rate / 2``), so a
band whose upper edge lies above Nyquist ends there, Nyquist bin included:
at 10 kHz the high band is 2000-5000 Hz, at 25.6 kHz 2000-10000 Hz. A
sample rate whose Nyquist lies at or below 2000 Hz leaves the high band
empty and is refused, as is a window too short for its frequency resolution
to put one bin into the low band.

Errors. NaN or inf samples are refused with a `FeatureInputError` that names
the offending windows: a feature of a broken window is not a number anyone
should act on.
"""

from __future__ import annotations

import functools
import math
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.fft import rfftfreq  # at import, not at a pod's first window (numpy loads it lazily)

from vibration_core.errors import FeatureInputError
from vibration_core.fft import rfft

EXTRACTOR_VERSION: Final = "2.0.1"
"""Bumped whenever a definition changes; the model card records it.

2.0.0: kurtosis is Pearson (``m4 / m2**2``), as the reference pipeline computes
it; 1.x computed excess kurtosis (3 less). A card of another major version is refused.
2.0.1: a band edge that falls on a bin is placed as ``rfftfreq`` places it (at
some lengths, 25 kHz and 3000 samples among them, the edge bin went to the other
band), and a constant window's band energies and ratios are 0, not FFT rounding.
"""

FEATURE_NAMES: Final = (
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
N_FEATURES: Final = len(FEATURE_NAMES)

BANDS_HZ: Final = ((10.0, 200.0), (200.0, 2000.0), (2000.0, 10000.0))
"""Lower (inclusive) and upper (exclusive) edge of each band, in Hz."""

# Windows per block: a block of float32 windows and its spectrum stay in the
# L2 cache, which is worth about a third of the run time at 4096 samples.
_BLOCK: Final = 64
# A window whose variance is below this share of its mean square is constant
# up to rounding; its kurtosis would be rounding noise.
_CONSTANT_RTOL: Final = 1e-10

Windows = npt.NDArray[np.floating]


def band_bins(n_samples: int, sample_rate: float) -> tuple[tuple[int, int], ...]:
    """Return the half-open rfft bin range ``[start, stop)`` of each band.

    Raises `FeatureInputError` when the window is too short to put a bin into
    the low band or the sample rate leaves the high band empty.
    """
    if not math.isfinite(sample_rate) or sample_rate <= 0:
        raise FeatureInputError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    if n_samples < 2:  # noqa: PLR2004 - two samples is the shortest spectrum
        raise FeatureInputError(f"a window needs at least 2 samples, got {n_samples}")
    nyquist = sample_rate / 2
    if nyquist <= BANDS_HZ[2][0]:
        raise FeatureInputError(
            f"sample_rate {sample_rate:g} Hz puts Nyquist ({nyquist:g} Hz) at or below the "
            f"start of the high band ({BANDS_HZ[2][0]:g} Hz); at least "
            f"{2 * BANDS_HZ[2][0]:g} Hz is needed, real sensors run at 10-51.2 kHz"
        )
    ranges = _bins(n_samples, sample_rate)
    resolution = sample_rate / n_samples
    low_start, low_stop = ranges[0]
    if low_stop <= low_start:
        needed = math.floor(sample_rate / BANDS_HZ[0][1]) + 1
        raise FeatureInputError(
            f"a window of {n_samples} samples at {sample_rate:g} Hz has a frequency resolution of "
            f"{resolution:g} Hz, too coarse to resolve the low band "
            f"({BANDS_HZ[0][0]:g}-{BANDS_HZ[0][1]:g} Hz); it needs at least {needed} samples"
        )
    return tuple(ranges)


@functools.lru_cache(maxsize=32)
def _bins(n_samples: int, sample_rate: float) -> tuple[tuple[int, int], ...]:
    # The bins of ``freqs >= lo`` and ``freqs < hi`` with numpy's own ``rfftfreq``, as the
    # definition reads: where an edge falls on a bin, computing ``lo / resolution`` apart would
    # round it to the other side at some lengths (25 kHz and 3000 samples put 200 Hz on bin 24,
    # which rfftfreq makes 199.99999999999997 Hz). Cached: a hall has one or two signals.
    freqs = rfftfreq(n_samples, 1 / sample_rate)
    return tuple(
        (int(np.searchsorted(freqs, lo, side="left")), int(np.searchsorted(freqs, hi, side="left")))
        for lo, hi in BANDS_HZ
    )


def edge_bins_moved(n_samples: int, sample_rate: float) -> bool:
    """Whether extractor 2.0.0 put a band-edge bin of this signal in another band than 2.0.1 does.

    2.0.0 placed each edge at ``ceil(edge / resolution)``; where an edge falls exactly on a bin,
    ``rfftfreq`` can make that bin a hair below the edge (25 kHz and 3000 samples, 10 kHz and
    2400, ...). A model trained on 2.0.0's features there is served slightly different ones.
    """
    resolution = sample_rate / n_samples
    last_bin = n_samples // 2
    legacy = []
    for lo, hi in BANDS_HZ:
        start = math.ceil(lo / resolution)
        legacy.append((start, max(start, min(math.ceil(hi / resolution), last_bin + 1))))
    return tuple(legacy) != _bins(n_samples, sample_rate)


def extract_features(windows: npt.ArrayLike, sample_rate: float) -> npt.NDArray[np.float32]:
    """Return the ten features of each window, shape ``(n, 10)``, float32.

    `windows` is a 2-D batch ``(n, samples)`` or one 1-D window (treated as a
    batch of one). float32 input is used as it is (no copy for a C-contiguous
    array); other real dtypes are converted to float32 once.
    """
    batch = _as_batch(windows)
    n, n_samples = batch.shape
    bins = band_bins(n_samples, sample_rate)
    out = np.empty((n, N_FEATURES), dtype=np.float32)
    if n == 0:
        return out
    # NaN, inf, overflow and a variance that squares to 0 propagate silently here and are
    # refused, with the windows named, by the check on the output.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if n == 1:
            _extract_one(batch[0], bins, out)
        else:
            for start in range(0, n, _BLOCK):
                _extract_block(batch[start : start + _BLOCK], bins, out[start : start + _BLOCK])
    _check_finite(batch, out)
    return out


def _as_batch(windows: npt.ArrayLike) -> npt.NDArray[np.float32]:
    array = np.asarray(windows)
    if array.dtype.kind not in "fiu":
        raise FeatureInputError(f"windows must hold real numbers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[np.newaxis, :]
    elif array.ndim != 2:  # noqa: PLR2004 - a batch is 2-D
        raise FeatureInputError(f"windows must be 1-D (one window) or 2-D (a batch), got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_finite(batch: npt.NDArray[np.float32], features: npt.NDArray[np.float32]) -> None:
    # Checked on the output: a NaN or inf sample makes its window's spectrum,
    # and so its features, non-finite, and ten values per window are far
    # cheaper to scan than every sample. One window's ten are checked as
    # Python floats: two numpy calls on them cost more than the test itself.
    if features.size <= N_FEATURES:
        if all(map(math.isfinite, features.ravel().tolist())):
            return
    elif np.isfinite(features).all():
        return
    broken = np.flatnonzero(~np.isfinite(features).all(axis=1))
    bad = tuple(int(i) for i in broken if not np.isfinite(batch[i]).all())
    if bad:
        shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")  # noqa: PLR2004
        raise FeatureInputError(f"windows {shown} hold NaN or inf samples", windows=bad)
    first = int(broken[0])
    largest = float(np.abs(batch[first]).max())
    # Too large, a moment passes float32's 3.4e38; too small (a lone 1e-10), the variance
    # squares to 0 and the kurtosis divides by it. Either way, not physical units.
    way = "overflows" if largest >= 1 else "underflows"
    raise FeatureInputError(
        f"window {first} {way} float32 in its features (largest sample {largest:.3g}); "
        "samples must be physical units such as g or m/s^2",
        windows=tuple(int(i) for i in broken),
    )


def _extract_block(
    block: npt.NDArray[np.float32],
    bins: tuple[tuple[int, int], ...],
    out: npt.NDArray[np.float32],
) -> None:
    # float32 throughout: numpy's pairwise summation keeps the relative error
    # near 1e-6 at these lengths, and float64 accumulation doubles the cost.
    n = block.shape[1]
    spectrum = rfft(block)
    power = spectrum.real**2 + spectrum.imag**2
    # (|X| * 2 / n)**2 = |X|**2 * 4 / n**2
    scale = np.float32(4.0 / (n * n))
    energies = out[:, 4:7]  # written in place: a batch is often one window, where each numpy call counts
    for column, (lo, hi) in enumerate(bins):
        np.multiply(power[:, lo:hi].sum(axis=1), scale, out=energies[:, column])
    total = energies.sum(axis=1, keepdims=True)

    # The mean and the variance come from the spectrum (Parseval): bin 0 is
    # the sum of the window, the other bins its variance, with no
    # cancellation when a sensor adds a DC offset. Bins 1..n/2-1 stand for
    # two conjugate bins each, the Nyquist bin of an even n for one.
    mean = spectrum[:, 0].real / np.float32(n)
    ac_power = np.float32(2) * power[:, 1:].sum(axis=1)
    if n % 2 == 0:
        ac_power -= power[:, n // 2]
    m2 = ac_power / np.float32(n * n)
    mean_square = m2 + mean * mean
    rms = np.sqrt(mean_square)
    peak = np.maximum(block.max(axis=1), -block.min(axis=1))
    peak += np.float32(0)  # an all-zero window's peak is 0, not the -0.0 of -min
    centred = block - mean[:, np.newaxis]
    np.square(centred, out=centred)
    np.square(centred, out=centred)
    # numpy's pairwise sum, not einsum's running one: an impulsive window's
    # fourth powers span many decades, and a running float32 sum drifts to
    # 2e-6 of the reference's kurtosis where pairwise stays near 2e-7.
    m4 = centred.sum(axis=1) / np.float32(n)

    out[:, 0] = rms
    out[:, 1] = peak
    out[:, 2] = np.divide(peak, rms, out=np.zeros_like(rms), where=rms > 0)
    constant = m2 <= _CONSTANT_RTOL * mean_square
    safe_m2 = np.where(constant, np.float32(1), m2)
    out[:, 3] = np.where(constant, np.float32(0), m4 / (safe_m2 * safe_m2))
    # A constant window has no energy above DC: what the FFT leaves in the bands is rounding,
    # and its ratios would be noise (a stuck sensor's windows of 4000 samples).
    energies[constant] = 0
    total[constant] = 0
    out[:, 7:10] = np.divide(energies, total, out=np.zeros_like(energies), where=total > 0)


def _extract_one(
    window: npt.NDArray[np.float32],
    bins: tuple[tuple[int, int], ...],
    out: npt.NDArray[np.float32],
) -> None:
    # One window, as a pod mostly gets them at a hall's load: `_extract_block`'s operations in
    # the same order, with float32 scalars where the block has one-element arrays. numpy's
    # fixed cost per call on those was most of the block's 48 us for one window (this: 28 us).
    # Bit for bit the block's result (tests/core/test_features.py compares them). The ufuncs'
    # own reductions, not the methods: ``a.sum()`` is ``np.add.reduce(a)`` behind two Python
    # calls (numpy's _methods), a few k instructions each time, seven times a window.
    n = window.shape[0]
    spectrum = rfft(window[np.newaxis, :])[0]
    power = spectrum.real**2 + spectrum.imag**2
    scale = np.float32(4.0 / (n * n))
    add = np.add.reduce
    energies = [add(power[lo:hi]) * scale for lo, hi in bins]
    total = energies[0] + energies[1] + energies[2]
    mean = spectrum[0].real / np.float32(n)
    ac_power = np.float32(2) * add(power[1:])
    if n % 2 == 0:
        ac_power -= power[n // 2]
    m2 = ac_power / np.float32(n * n)
    mean_square = m2 + mean * mean
    rms = np.sqrt(mean_square)
    zero = np.float32(0)
    peak = max(np.maximum.reduce(window), -np.minimum.reduce(window)) + zero
    centred = window - mean
    np.square(centred, out=centred)
    np.square(centred, out=centred)
    m4 = add(centred) / np.float32(n)
    crest = peak / rms if rms > 0 else zero
    if m2 <= _CONSTANT_RTOL * mean_square:  # a constant window: see `_extract_block`
        kurtosis, energies, total = zero, [zero, zero, zero], zero
    else:
        kurtosis = m4 / (m2 * m2)
    ratios = [energy / total for energy in energies] if total > 0 else [zero, zero, zero]
    out[0] = (rms, peak, crest, kurtosis, *energies, *ratios)
