"""The feature formulas written plainly, one window at a time.

This is the executable specification of `vibration_core.features`: float64,
a loop over windows, one line per formula, no tricks. Tests check the fast
extractor against it and the benchmark measures the fast one beside it.
Nothing in a serving or training path calls it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vibration_core.features import BANDS_HZ, N_FEATURES


def reference_features(windows: npt.ArrayLike, sample_rate: float) -> npt.NDArray[np.float64]:
    """Return the ten features of each window of a 2-D batch, computed plainly."""
    batch = np.atleast_2d(np.asarray(windows, dtype=np.float64))
    out = np.zeros((batch.shape[0], N_FEATURES))
    for i, x in enumerate(batch):
        n = x.size
        rms = np.sqrt(np.mean(x**2))
        peak = np.max(np.abs(x))
        crest = peak / rms if rms > 0 else 0.0
        d = x - x.mean()
        m2 = np.mean(d**2)
        m4 = np.mean(d**4)
        constant = m2 <= 1e-10 * np.mean(x**2)
        kurtosis = 0.0 if constant else m4 / m2**2
        amplitude = np.abs(np.fft.rfft(x)) * 2 / n
        freqs = np.fft.rfftfreq(n, 1 / sample_rate)
        energies = [np.sum(amplitude[(freqs >= lo) & (freqs < hi)] ** 2) for lo, hi in BANDS_HZ]
        if constant:  # nothing above DC: what the FFT leaves in the bands is rounding
            energies = [0.0, 0.0, 0.0]
        total = sum(energies)
        ratios = [e / total if total > 0 else 0.0 for e in energies]
        out[i] = [rms, peak, crest, kurtosis, *energies, *ratios]
    return out
