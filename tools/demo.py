"""make demo: the vibration-edge story on embedded defaults, step by step.

Every step runs the real command a person would run (``vibration-train``,
``vibration-infer``) against local stand-ins: simulated machines, a file://
model registry and a node-local test set, all under ``demo-output/``. The
demo exits 0 only when every step behaved as expected and names the step
that did not otherwise. The live part (broker, serving, hot swap) is in
`demo_live`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vibration_core import dataset

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class Demo:
    """The demo's working directory and what the steps found."""

    out: Path
    windows: int
    results: list[tuple[str, str, float]] = field(default_factory=list)

    def run(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        """Run one of the project's commands, show its output, and check its exit code."""
        command = [str(BIN / args[0]), *args[1:]]
        print(f"\n$ {' '.join(args)}", flush=True)
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
        print(done.stdout.rstrip())
        if done.returncode != expect:
            print(done.stderr.rstrip(), file=sys.stderr)
            msg = f"{args[0]} {args[1]} exited {done.returncode}, expected {expect}"
            raise DemoError(msg)
        return done


class DemoError(Exception):
    """A step did not behave as expected."""


def step_simulate(demo: Demo) -> str:
    """Simulate a hall's history (training data) and a node's labelled test set."""
    demo.run(
        "vibration-train",
        "simulate",
        "--windows",
        str(demo.windows),
        "--seed",
        "7",
        "--out",
        str(demo.out / "hall-history.parquet"),
    )
    demo.run(
        "vibration-train",
        "simulate",
        "--windows",
        "400",
        "--seed",
        "99",
        "--out",
        str(demo.out / "node-edge-1" / "testdata" / "windows.parquet"),
    )
    return f"{demo.windows} training windows, 400 node-local test windows"


def step_train(demo: Demo) -> str:
    """Train v1: the report, the ONNX export and its parity check, the model card."""
    demo.run(
        "vibration-train",
        "fit",
        "--data",
        str(demo.out / "hall-history.parquet"),
        "--out",
        str(demo.out / "v1"),
        "--version",
        "v1",
    )
    card = json.loads((demo.out / "v1" / "modelcard.json").read_text())
    metrics = card["metrics"]
    held_out = metrics["held_out"]
    return (
        f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} on "
        f"{', '.join(held_out['machines'])} ({held_out['split']} split), "
        f"recording accuracy {held_out['recording_accuracy']:.4f}"
    )


def step_publish(demo: Demo) -> str:
    """Publish v1 to the local registry and emit its VibrationModel manifest."""
    registry = f"file://{demo.out / 'registry'}"
    demo.run("vibration-train", "publish", str(demo.out / "v1"), "--registry", registry)
    demo.run("vibration-train", "list", "--registry", registry)
    return "v1 published; manifest in demo-output/v1/vibrationmodel.yaml"


def step_validate(demo: Demo) -> str:
    """Validate v1 the way the init container does on node edge-1."""
    artifact = demo.out / "registry" / "spindle-classifier" / "v1" / "model.onnx"
    done = demo.run(
        "vibration-infer",
        "validate",
        "--model-uri",
        f"file://{artifact}",
        "--test-data",
        str(demo.out / "node-edge-1" / "testdata"),
        "--cache-dir",
        str(demo.out / "node-edge-1" / "cache"),
        "--termination-log",
        str(demo.out / "node-edge-1" / "termination-log"),
        "--node-name",
        "edge-1",
    )
    report = json.loads((demo.out / "node-edge-1" / "termination-log").read_text())
    if report.get("outcome") != "passed":
        raise DemoError(f"validation of v1 did not pass: {done.stdout[-300:]}")
    return f"passed on edge-1 (no thresholds given: the default gate): {decision(report)}"


def step_refuse_bad_model(demo: Demo) -> str:
    """A model held to a threshold it cannot meet is refused with its own exit code (14)."""
    artifact = demo.out / "registry" / "spindle-classifier" / "v1" / "model.onnx"
    demo.run(
        "vibration-infer",
        "validate",
        "--model-uri",
        f"file://{artifact}",
        "--test-data",
        str(demo.out / "node-edge-1" / "testdata"),
        "--cache-dir",
        str(demo.out / "node-edge-1" / "cache"),
        "--termination-log",
        str(demo.out / "node-edge-1" / "termination-log-strict"),
        "--min-accuracy",
        "0.999",
        "--node-name",
        "edge-1",
        expect=14,
    )
    report = json.loads((demo.out / "node-edge-1" / "termination-log-strict").read_text())
    return f"refused: {report['reason']}"


def write_shuffled(windows: Path, out: Path) -> None:
    """The same windows with their labels shuffled: the training data of a model that must be refused."""
    data = dataset.read_windows(windows)
    labels = np.random.default_rng(3).permutation(data.labels) if data.labels is not None else None
    dataset.write_parquet(dataclasses.replace(data, labels=labels), out, unit=data.unit or "g")


def step_train_v2_v3(demo: Demo) -> str:
    """Train v2 (another seed) and a bad v3 (trained on shuffled labels); publish both."""
    history = demo.out / "hall-history.parquet"
    write_shuffled(history, demo.out / "shuffled.parquet")
    registry = f"file://{demo.out / 'registry'}"
    for version, source, seed in (("v2", history, "1"), ("v3", demo.out / "shuffled.parquet", "2")):
        out = str(demo.out / version)
        demo.run("vibration-train", "fit", "--data", str(source), "--out", out, "--version", version,
                 "--random-state", seed)  # fmt: skip
        demo.run("vibration-train", "publish", out, "--registry", registry)
    v3 = json.loads((demo.out / "v3" / "modelcard.json").read_text())["metrics"]
    return f"v2 and v3 published; v3's own test accuracy is {v3['accuracy']:.3f} (shuffled labels)"


def step_live(demo: Demo) -> str:
    """Serve v1 on edge-1 over an embedded broker; swap to v2 live; refuse v3 while v2 serves."""
    from demo_live import LiveError, run_live  # noqa: PLC0415 - MQTT and the broker only for this step

    try:
        result = run_live(demo.out, BIN)
    except LiveError as exc:
        raise DemoError(str(exc)) from None
    problems = []
    if not result.answered_once:
        problems.append("not every window was answered exactly once")
    if result.versions != ["v1", "v2"]:
        problems.append(f"the model version in predictions went {result.versions}, expected v1 then v2")
    if result.alert is None:
        problems.append("no bearing_fault alert for m2")
    if not result.drifted:
        problems.append("the drift of m3 was not flagged")
    if result.refused is None or result.refused.version != "v2":
        problems.append("v3 was not refused while v2 served")
    if problems:
        raise DemoError("; ".join(problems))
    report = result.refused.candidate_report if result.refused else None
    passed = result.swapped.candidate_report if result.swapped else None
    if passed is None or passed.outcome != "passed" or passed.version != "v2":
        raise DemoError("the pod served v2 without a passed validation report for it")
    alert = result.alert
    said = f"alert {alert.label} on {alert.machine} ({alert.consecutive} in a row)" if alert else ""
    return (
        f"{result.windows} windows, each answered once; v2 validated in the pod (accuracy "
        f"{passed.accuracy if passed.accuracy is None else round(passed.accuracy, 3)}) and hot-swapped "
        f"with zero lost windows; {said}; drift flagged; "
        f"v3 refused: {report.reason if report else '?'}\n"
        f"           v2's decision: {decision(passed.model_dump())}\n"
        f"           v3's decision: {decision(report.model_dump()) if report else '?'}"
    )


def decision(report: dict[str, Any]) -> str:
    """A compact report's decision with its numbers: the reason code, then each figure against its bar."""
    champion = report.get("champion") or {}
    against = f" against champion {champion['version']}" if champion.get("version") else ""
    checks = ", ".join(
        f"{c['figure']} {c['value']:.3f} {'>=' if c['passed'] else '<'} {c['threshold']:.3f}"
        + (" (vs champion)" if c["kind"] == "regression" else "")
        for c in report.get("checks", [])
        if c["kind"] != "ceiling"
    )
    return f"{report.get('reason_code')}{against}: {checks}"


STEPS: list[Callable[[Demo], str]] = [
    step_simulate,
    step_train,
    step_publish,
    step_validate,
    step_refuse_bad_model,
    step_train_v2_v3,
    step_live,
]


def main() -> int:
    """Run every step; 0 only when each behaved as expected."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output", help="working directory (wiped)")
    parser.add_argument("--windows", type=int, default=4000, help="simulated training windows")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    demo = Demo(out=args.out, windows=args.windows)
    for step in STEPS:
        title = (step.__doc__ or step.__name__).splitlines()[0]
        print(f"\n=== {title}", flush=True)
        start = time.perf_counter()
        try:
            outcome = step(demo)
        except DemoError as exc:
            print(f"\nFAILED: {title}: {exc}", file=sys.stderr)
            return 1
        demo.results.append((title, outcome, time.perf_counter() - start))
    print("\n=== Summary")
    for title, outcome, seconds in demo.results:
        print(f"  {seconds:6.1f} s  {title}\n           -> {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
