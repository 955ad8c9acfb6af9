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

from bench_record import Figure, Section, record
from reference_design import features as reference_features
from vibration_core.dataset import read_windows
from vibration_core.features import extract_features

if TYPE_CHECKING:
    from collections.abc import Callable

TARGET_FEATURES_US = 15.0
TARGET_TRAINING_S = 60.0


def reference_loop(windows: np.ndarray, sample_rate: float) -> np.ndarray:
    """The reference design's features, one window at a time as it computes them (`reference_design.py`)."""
    return np.asarray([reference_features(np.asarray(x, dtype=np.float64), sample_rate) for x in windows])


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Best wall time of `repeats` calls, in seconds (the least disturbed run)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_features(repeats: int) -> Section:
    """The extractor's cost per window beside the reference design's per-window loop."""
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((256, 4096)).astype(np.float32)
    fast = best_of(repeats, lambda: extract_features(windows, 25600.0)) / 256 * 1e6
    plain = best_of(max(3, repeats // 10), lambda: reference_loop(windows, 25600.0)) / 256 * 1e6
    return Section(
        "features",
        "Feature extractor: 256 float32 windows of 4096 samples, one core",
        "OMP_NUM_THREADS=1 uv run --frozen python tools/bench.py --skip-training",
        [
            Figure(
                "extract_features, per window",
                f"{fast:.1f} us",
                "<= 15 us",
                f"{plain:.1f} us (the reference's per-window float64 numpy)",
                fast <= TARGET_FEATURES_US,
            ),
            Figure("speed-up over the baseline", f"{plain / fast:.1f} x"),
        ],
        [f"best of {repeats} runs (the least disturbed)"],
    )


def bench_training(windows: int) -> Section:
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
        stacked = read_windows(data).windows
        baseline_started = time.perf_counter()
        reference_loop(stacked, 25600.0)
        baseline_s = time.perf_counter() - baseline_started
    parity = re.search(r"^parity: (.*)$", fitted.stdout, re.MULTILINE)
    accuracy = re.search(r"^\s*accuracy\s+([0-9.]+)", fitted.stdout, re.MULTILINE)
    macro = re.search(r"^\s*macro avg\s+[0-9.]+\s+[0-9.]+\s+([0-9.]+)", fitted.stdout, re.MULTILINE)
    whole = done - started
    return Section(
        "training",
        f"Training: vibration-train simulate + fit, {windows} windows, 150 trees of depth 5, one core",
        f"OMP_NUM_THREADS=1 uv run --frozen python tools/bench.py --train-windows {windows}",
        [
            Figure("simulate", f"{simulated - started:.1f} s"),
            Figure(
                "fit (load, extract, fit, ONNX, parity, card)",
                f"{done - simulated:.1f} s",
                baseline=f"{baseline_s:.1f} s for the reference design's features alone",
            ),
            Figure("whole run", f"{whole:.1f} s", "<= 60 s", met=whole <= TARGET_TRAINING_S),
            Figure("accuracy", accuracy.group(1) if accuracy else "not printed"),
            Figure("macro F1 (stored in the card)", macro.group(1) if macro else "not printed"),
            Figure("ONNX parity", parity.group(1) if parity else "not printed"),
        ],
    )


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
    record(bench_features(args.repeats))
    if not args.skip_training:
        record(bench_training(args.train_windows))


if __name__ == "__main__":
    main()
