"""The reference pipeline, restated for tests: its feature formulas and its model recipe.

The people moving to this project bring models and feature tables made by
the reference pipeline: its Python ``extract_features`` and its Node-RED
function node compute every feature per window in float64 (JSON numbers),
with kurtosis as ``mean((x - mean)**4) / std**4`` (Pearson); its training
fits scikit-learn's ``GradientBoostingClassifier(n_estimators=150,
max_depth=5, learning_rate=0.1, random_state=42)`` on the ten feature
columns, with the classes as int64 0..3 (normal, imbalance, misalignment,
bearing_fault), and converts it with skl2onnx, ``zipmap`` off, target opset
13, input ``features`` float [None, 10].

Both are written out here from the reference's own text, without calling
anything in ``vibration_core`` or ``vibration_train``, so that a test holding
our code to them fails when our code moves away from the reference. The
recipe takes fewer stages where a test only needs a model of its shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier

if TYPE_CHECKING:
    import numpy.typing as npt

CLASSES = ("normal", "imbalance", "misalignment", "bearing_fault")
"""The reference pipeline's classes, in the order of its int64 labels 0..3."""
SAMPLE_RATE = 25600.0
WINDOW_LENGTH = 4096
"""The reference pipeline's example signal: 4096 samples at 25.6 kHz."""
RECIPE = {"n_estimators": 150, "max_depth": 5, "learning_rate": 0.1, "random_state": 42}
TARGET_OPSET = 13


def reference_pipeline_features(x: npt.NDArray[np.floating], sample_rate: float) -> list[float]:
    """The reference pipeline's ten features of one window, as its code writes them."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        rms = np.sqrt(np.mean(x**2))
        peak = np.max(np.abs(x))
        crest_factor = peak / rms
        mean = np.mean(x)
        std = np.std(x)
        kurtosis = (np.sum((x - mean) ** 4) / n) / std**4
        spectrum = np.abs(np.fft.rfft(x)) * 2 / n
        freqs = np.fft.rfftfreq(n, d=1 / sample_rate)
        bands = ((10, 200), (200, 2000), (2000, 10000))
        energies = [np.sum(spectrum[(freqs >= lo) & (freqs < hi)] ** 2) for lo, hi in bands]
        total = sum(energies)
        ratios = [e / total for e in energies]
    return [rms, peak, crest_factor, kurtosis, *energies, *ratios]


def reference_features(windows: npt.NDArray[np.floating], sample_rate: float) -> npt.NDArray[np.float64]:
    """``(n, 10)`` float64: the reference's features of each window, one window at a time as it does."""
    return np.array(
        [reference_pipeline_features(window, sample_rate) for window in windows], dtype=np.float64
    )


def reference_model(
    features: npt.NDArray[np.floating],
    labels: npt.ArrayLike,
    *,
    n_estimators: int = 30,
    zipmap: bool = False,
    raw_scores: bool = False,
) -> bytes:
    """The reference recipe's ONNX model of `features` and `labels` (int64 0..3, or strings).

    `raw_scores`: the boosting's scores in place of probabilities (skl2onnx's option), a model a
    user may have exported by mistake.
    """
    recipe: dict[str, Any] = {**RECIPE, "n_estimators": n_estimators}
    estimator = GradientBoostingClassifier(**recipe).fit(features, np.asarray(labels))
    proto = convert_sklearn(
        estimator,
        initial_types=[("features", FloatTensorType([None, features.shape[1]]))],
        options={id(estimator): {"zipmap": zipmap, "raw_scores": raw_scores}},
        target_opset=TARGET_OPSET,
    )
    data: bytes = proto.SerializeToString()
    return data
