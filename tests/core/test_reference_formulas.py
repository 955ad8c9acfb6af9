"""Our features against the reference pipeline's formulas, written out here independently.

The people moving to this project bring models and feature tables made by
the reference pipeline: its Python ``extract_features`` and its Node-RED
function node, which compute every feature per window in float64 (JSON
numbers), with kurtosis as ``mean((x - mean)**4) / std**4`` (Pearson). Those
formulas are restated in ``vibration_testkit.reference_pipeline`` from the
reference's own text, not by calling anything in ``vibration_core``, so a
change to our extractor that moves a feature away from the reference fails
here.

Where the reference is undefined (a constant window has no kurtosis, an
all-zero one no crest factor and no band shares: 0/0), it yields NaN and our
extractor its documented value, 0; those entries are checked against our
definition instead.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from vibration_core.features import FEATURE_NAMES, extract_features
from vibration_testkit.reference_pipeline import reference_pipeline_features

RATES_HZ = (12000.0, 20000.0, 25600.0, 48000.0)
N = 4096
RTOL = 1e-6


def windows(sample_rate: float) -> dict[str, npt.NDArray[np.float32]]:
    rng = np.random.default_rng(int(sample_rate))
    t = np.arange(N) / sample_rate
    impacts = np.zeros(N)
    impacts[rng.choice(N, 12, replace=False)] = rng.uniform(4, 9, 12)
    made = {
        "random": rng.standard_normal(N) * 0.7,
        "sinusoidal": 1.3 * np.sin(2 * np.pi * 157.3 * t) + 0.4 * np.sin(2 * np.pi * 3117.0 * t + 0.3),
        "impulsive": 0.05 * rng.standard_normal(N) + impacts,
        "constant": np.full(N, 0.75),
        "all-zero": np.zeros(N),
    }
    return {name: w.astype(np.float32) for name, w in made.items()}


@pytest.mark.parametrize("sample_rate", RATES_HZ)
@pytest.mark.parametrize("kind", ["random", "sinusoidal", "impulsive", "constant", "all-zero"])
def test_features_equal_the_reference_pipelines(sample_rate: float, kind: str) -> None:
    window = windows(sample_rate)[kind]
    ours = extract_features(window, sample_rate)[0].astype(np.float64)
    theirs = np.asarray(reference_pipeline_features(window, sample_rate))
    # A band energy is held to 1e-6 of the window's power as well: a band the
    # signal leaves empty holds only rounding leakage (1e-15 of the power),
    # whose relative error means nothing.
    power = float(np.mean(window.astype(np.float64) ** 2))
    atol = np.array([0, 0, 0, 0, *(3 * [RTOL * power]), 0, 0, 0])
    defined = np.isfinite(theirs)
    for i in np.flatnonzero(defined):
        assert abs(ours[i] - theirs[i]) <= RTOL * abs(theirs[i]) + atol[i], (
            f"{FEATURE_NAMES[i]} of a {kind} window at {sample_rate:g} Hz: ours {ours[i]!r}, "
            f"the reference pipeline's {theirs[i]!r}"
        )
    # Undefined in the reference (0/0): our documented value is 0.
    assert ours[~defined].tolist() == [0.0] * int((~defined).sum())


def test_kurtosis_is_pearson_not_excess() -> None:
    gaussian = np.random.default_rng(3).standard_normal((64, N)).astype(np.float32)
    kurtosis = extract_features(gaussian, 25600.0)[:, FEATURE_NAMES.index("kurtosis")]
    assert float(np.mean(kurtosis)) == pytest.approx(3.0, abs=0.1)
