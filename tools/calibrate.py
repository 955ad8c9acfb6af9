"""Check the simulator's difficulty against the seed's model.

Simulates windows, extracts the features, fits the reference pipeline's
model (GradientBoosting, 150 trees of depth 5) on a stratified 80/20 split
and prints its classification report and one summary line:

    calibration: accuracy=0.9xxx macro_f1=0.9xxx windows=N seed=S

The simulator's severity ranges are tuned so that this lands near 0.95 on
6000 windows: hard enough to be realistic, separable enough to be useful.
With ``--drift`` the fitted model is also scored on fresh windows under each
drift knob, which should cost it accuracy. Dev tooling: scikit-learn comes
from the workspace's dev group, never from the core package.

    uv run python tools/calibrate.py --windows 6000 --seed 0 [--drift]
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import accuracy_score, classification_report, f1_score
from sklearn.model_selection import train_test_split

from vibration_core.features import extract_features
from vibration_train.simulator import CLASSES, Drift, simulate

if TYPE_CHECKING:
    from collections.abc import Iterator

DRIFTS = {
    "speed_shift=+0.25": Drift(speed_shift=0.25),
    "speed_shift=-0.25": Drift(speed_shift=-0.25),
    "gain_change=-0.4": Drift(gain_change=-0.4),
    "noise_scale=3": Drift(noise_scale=3.0),
    "new_machine": Drift(new_machine=True),
}


@contextmanager
def step(name: str) -> Iterator[None]:
    """Print how long the block took."""
    start = time.perf_counter()
    yield
    print(f"  {name:<10} {time.perf_counter() - start:6.2f} s")


def features_of(n: int, seed: int, drift: Drift | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Simulate `n` windows and return their features and labels."""
    data = simulate(n, seed=seed, drift=drift)
    return extract_features(data.windows, data.sample_rate), data.labels


def main() -> None:
    """Parse the flags, run the calibration and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=6000, help="windows to simulate (default 6000)")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    parser.add_argument("--drift", action="store_true", help="also score the model under each drift knob")
    args = parser.parse_args()

    print("timings:")
    with step("simulate"):
        data = simulate(args.windows, seed=args.seed)
    with step("features"):
        features = extract_features(data.windows, data.sample_rate)
    x_train, x_test, y_train, y_test = train_test_split(
        features, data.labels, test_size=0.2, stratify=data.labels, random_state=42
    )
    model = GradientBoostingClassifier(n_estimators=150, max_depth=5, learning_rate=0.1, random_state=42)
    with step("fit"):
        model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    print(classification_report(y_test, predicted, labels=list(CLASSES), digits=4))
    accuracy = accuracy_score(y_test, predicted)
    macro_f1 = f1_score(y_test, predicted, average="macro")
    summary = f"accuracy={accuracy:.4f} macro_f1={macro_f1:.4f} windows={args.windows} seed={args.seed}"
    print(f"calibration: {summary}")

    if args.drift:
        n_eval = max(400, args.windows // 5)
        baseline, labels = features_of(n_eval, args.seed + 1)
        print(f"drift: accuracy on {n_eval} fresh windows (seed {args.seed + 1}), median feature shift")
        print(f"  {'none':<18} accuracy={accuracy_score(labels, model.predict(baseline)):.4f}")
        for name, drift in DRIFTS.items():
            shifted, labels = features_of(n_eval, args.seed + 1, drift)
            shift = np.median(shifted, axis=0) / np.median(baseline, axis=0)
            moved = ", ".join(
                f"{n}x{s:.2f}" for n, s in zip(("rms", "e_low", "e_high"), shift[[0, 4, 6]], strict=True)
            )
            print(f"  {name:<18} accuracy={accuracy_score(labels, model.predict(shifted)):.4f}  ({moved})")


if __name__ == "__main__":
    main()
