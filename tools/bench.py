"""Benchmarks with figures, each beside its baseline measured in the same run.

Not a test: it prints figures and the targets they are meant to meet, and
exits 0 either way (a shared, noisy machine is no place for timed asserts).
Runs pinned to one core. Sections: the feature extractor, training; serving
and the operator add theirs.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vibration_core.features import BANDS_HZ, extract_features

if TYPE_CHECKING:
    from collections.abc import Callable


def seed_style_features(windows: np.ndarray, sample_rate: float) -> np.ndarray:
    """The plain per-window numpy code of the reference pipeline, for comparison."""
    rows = []
    for x in windows:
        rms = np.sqrt(np.mean(x**2))
        peak = np.max(np.abs(x))
        amplitude = np.abs(np.fft.rfft(x)) * 2 / len(x)
        freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
        energies = [np.sum(amplitude[(freqs >= lo) & (freqs < hi)] ** 2) for lo, hi in BANDS_HZ]
        total = sum(energies)
        d = x - x.mean()
        kurtosis = np.mean(d**4) / np.mean(d**2) ** 2 - 3
        rows.append([rms, peak, peak / rms, kurtosis, *energies, *(e / total for e in energies)])
    return np.asarray(rows)


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Best wall time of `repeats` calls, in seconds (the least disturbed run)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_features(repeats: int) -> None:
    """Print the extractor's cost per window beside the seed-style loop."""
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((256, 4096)).astype(np.float32)
    fast = best_of(repeats, lambda: extract_features(windows, 25600.0)) / 256 * 1e6
    plain = best_of(max(3, repeats // 10), lambda: seed_style_features(windows, 25600.0)) / 256 * 1e6
    print("## feature extractor: 256 float32 windows x 4096 samples, one core")
    print(f"  vibration_core.extract_features   {fast:8.1f} us/window   (target <= 15 us)")
    print(f"  seed-style per-window numpy       {plain:8.1f} us/window   (baseline)")
    print(f"  speed-up                          {plain / fast:8.1f} x")


def bench_training(windows: int) -> None:
    """Time `vibration-train simulate` + `fit` with the reference hyper-parameters, as a user runs them."""
    train = str(Path(sys.executable).parent / "vibration-train")
    with tempfile.TemporaryDirectory(prefix="vibration-bench-") as tmp:
        data, out = Path(tmp) / "data.parquet", Path(tmp) / "model"
        started = time.perf_counter()
        simulate = [train, "simulate", "--windows", str(windows), "--seed", "0", "--out", str(data)]
        subprocess.run(simulate, check=True, capture_output=True)
        simulated = time.perf_counter()
        fitted = subprocess.run(
            [train, "fit", "--data", str(data), "--out", str(out)], check=True, capture_output=True, text=True
        )
        done = time.perf_counter()
    parity = re.search(r"^parity: (.*)$", fitted.stdout, re.MULTILINE)
    accuracy = re.search(r"^\s*accuracy\s+([0-9.]+)", fitted.stdout, re.MULTILINE)
    macro = re.search(r"^\s*macro avg\s+[0-9.]+\s+[0-9.]+\s+([0-9.]+)", fitted.stdout, re.MULTILINE)
    print(f"## training: vibration-train simulate + fit, {windows} windows, 150 trees of depth 5, one core")
    print(f"  simulate                          {simulated - started:8.1f} s")
    print(f"  fit (load, fit, ONNX, parity)     {done - simulated:8.1f} s")
    print(f"  whole run                         {done - started:8.1f} s   (target <= 60 s)")
    print(f"  accuracy {accuracy.group(1) if accuracy else '?'}, macro F1 {macro.group(1) if macro else '?'}")
    print(f"  parity: {parity.group(1) if parity else 'not printed'}")


def main() -> None:
    """Run every benchmark section."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per figure; the best is shown")
    parser.add_argument("--train-windows", type=int, default=12000, help="windows of the training run")
    parser.add_argument("--skip-training", action="store_true", help="leave out the training run")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(
        f"# vibration-edge benchmarks on {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, numpy {np.__version__}, pinned to one core"
    )
    bench_features(args.repeats)
    if not args.skip_training:
        bench_training(args.train_windows)


if __name__ == "__main__":
    main()
