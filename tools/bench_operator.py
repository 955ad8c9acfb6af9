"""Operator figures against kmock: reaction time (CR applied → first pod created) and RSS at 200 models.

The operator runs as its own process (``vibration-operator run``, logged in
through a kubeconfig like any developer's), so its RSS is its own; kmock's
emulator (with the API-server behaviour of `tests.operator.kmock_cluster`)
runs here and timestamps every write it receives. Reaction time is the time
between the POST of a VibrationModel and the POST of its first serving pod,
both as the emulator saw them: one model at a time on an idle operator,
then 200 models applied at once, then again one at a time while the 200
are reconciled and their timers tick (the everyday `kubectl apply` in a busy
hall). RSS is read from /proc after the 200 have been reconciled and the
rollout timer has ticked over all of them. The emulator shares this
process's core with the bench, so the burst figure includes its queueing.
Not a test:
it prints figures beside their targets and exits 0 either way (a shared,
loaded machine is no place for timed asserts; the load average is printed).

    uv run --frozen python tools/bench_operator.py [--models 200] [--settle 25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bench_record import RESULTS, Figure, Section, record
from vibration_operator import names
from vibration_testkit.kmock_cluster import KmockCluster, kmock_cluster

if TYPE_CHECKING:
    from vibration_testkit.kmock_cluster import Write

NAMESPACE = "bench"
HALL = {"edge.vibration.io/hall": "bench"}
TARGET_REACTION_S = 1.0
TARGET_RSS_MB = 150.0


def model(name: str) -> dict[str, Any]:
    """A VibrationModel for the bench hall."""
    return {
        "apiVersion": "edge.vibration.io/v1alpha1",
        "kind": "VibrationModel",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "version": "v1",
            "artifact": {"uri": f"s3://models/{name}/v1/model.onnx", "sha256": "a" * 64},
            "nodeSelector": HALL,
            "mqtt": {"broker": "mqtt://mosquitto:1883", "topicPrefix": "factory/bench"},
        },
    }


def kubeconfig(url: str, directory: Path) -> Path:
    """A kubeconfig that points at the emulator."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "bench", "user": {"token": "bench"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "bench"}}],
        "current-context": "kmock",
    }
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident set size now and at its peak (VmRSS, VmHWM), in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reaction_times(writes: list[Write], names_: list[str]) -> list[float]:
    """Seconds from each model's POST to its first pod's POST (as the emulator received them)."""
    applied: dict[str, float] = {}
    first_pod: dict[str, float] = {}
    for write in writes:
        if write.method != "POST" or not isinstance(write.data, dict):
            continue
        meta = write.data.get("metadata") or {}
        if write.plural == "vibrationmodels":
            applied.setdefault(meta.get("name", ""), write.at)
        elif write.plural == "pods":
            owner = (meta.get("labels") or {}).get(names.LABEL_MODEL, "")
            first_pod.setdefault(owner, write.at)
    return [first_pod[name] - applied[name] for name in names_ if name in first_pod and name in applied]


async def wait_for_pods(cluster: KmockCluster, names_: list[str], timeout_s: float) -> None:
    """Until every model has a pod (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    missing = set(names_)
    seen = 0
    while missing and time.monotonic() < deadline:
        # Only the writes since the last look: rescanning all of them on the
        # emulator's own event loop would starve it once there are thousands.
        writes = cluster.writes()[seen:]
        seen += len(writes)
        missing -= {
            (w.data.get("metadata") or {}).get("labels", {}).get(names.LABEL_MODEL)
            for w in writes
            if w.method == "POST" and w.plural == "pods" and isinstance(w.data, dict)
        }
        await asyncio.sleep(0.05)


async def one_by_one(cluster: KmockCluster, names_: list[str]) -> list[float]:
    """Apply the models one at a time, each after the previous one's pod; their reaction times."""
    for name in names_:
        await cluster.apply_model(model(name))
        await wait_for_pods(cluster, [name], timeout_s=30)
        await asyncio.sleep(0.5)
    return reaction_times(cluster.writes(), names_)


def start_operator(config: Path, log: Path, poll_s: float) -> subprocess.Popen[bytes]:
    """``vibration-operator run`` as a process of its own, logging to `log`."""
    env = {
        **os.environ,
        "KUBECONFIG": str(config),
        "VIBRATION_OPERATOR_NAMESPACES": NAMESPACE,
        "VIBRATION_OPERATOR_STATUS_POLL_INTERVAL_S": str(poll_s),
        "VIBRATION_OPERATOR_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "vibration_operator.cli", "run"]
    with log.open("wb") as sink:
        return subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)


async def bench(models: int, settle_s: float, poll_s: float) -> dict[str, float]:
    """Start the emulator and the operator, measure, stop both."""
    with tempfile.TemporaryDirectory() as tmp:
        async with kmock_cluster() as cluster:
            for i in range(3):
                await cluster.add_node(f"edge-{i + 1}", HALL)
            RESULTS.mkdir(parents=True, exist_ok=True)
            log = RESULTS / "operator.log"  # kept: the operator's own account of the run
            process = start_operator(kubeconfig(cluster.url, Path(tmp)), log, poll_s)
            try:
                return await _measure(cluster, process, models, settle_s, log)
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


async def _measure(
    cluster: KmockCluster, process: subprocess.Popen[bytes], models: int, settle_s: float, log: Path
) -> dict[str, float]:
    deadline = time.monotonic() + 120
    while "operator_started" not in await asyncio.to_thread(log.read_text) or not cluster.writes():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (await asyncio.to_thread(log.read_text))[-3000:]
            raise RuntimeError("the operator did not start:\n" + tail)
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)  # watches established
    idle_mb, _ = rss_mb(process.pid)

    single = await one_by_one(cluster, [f"single-{i}" for i in range(5)])

    many = [f"model-{i:03d}" for i in range(models)]
    await asyncio.gather(*(cluster.apply_model(model(name)) for name in many))
    await wait_for_pods(cluster, many, timeout_s=300)
    loaded = sorted(reaction_times(cluster.writes(), many))
    await asyncio.sleep(settle_s)  # every model's rollout timer has ticked at least once
    rss, peak = rss_mb(process.pid)
    # A hall's everyday case: one `kubectl apply` while the others are reconciled and ticking.
    busy = await one_by_one(cluster, [f"busy-{i}" for i in range(5)])
    return {
        "idle_rss_mb": idle_mb,
        "single_median_s": statistics.median(single) if single else float("nan"),
        "single_max_s": max(single, default=float("nan")),
        "loaded_count": float(len(loaded)),
        "loaded_p50_s": statistics.median(loaded) if loaded else float("nan"),
        "loaded_p95_s": loaded[int(0.95 * (len(loaded) - 1))] if loaded else float("nan"),
        "loaded_max_s": loaded[-1] if loaded else float("nan"),
        "busy_median_s": statistics.median(busy) if busy else float("nan"),
        "busy_max_s": max(busy, default=float("nan")),
        "rss_mb": rss,
        "peak_rss_mb": peak,
    }


def main() -> int:
    """Run the bench and print the figures beside the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--settle", type=float, default=25.0, help="seconds to run with all models")
    parser.add_argument("--poll", type=float, default=10.0, help="the operator's status poll interval")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    figures = asyncio.run(bench(args.models, args.settle, args.poll))
    n = int(figures["loaded_count"])
    single, busy, loaded_p95 = figures["single_median_s"], figures["busy_median_s"], figures["loaded_p95_s"]
    no_baseline = "none: the reference pipeline has no operator (a person runs kubectl)"
    record(
        Section(
            "operator",
            f"Operator: vibration-operator against kmock, 3 nodes, {args.models} VibrationModels",
            f"uv run --frozen python tools/bench_operator.py --models {args.models} --settle {args.settle:g}",
            [
                Figure(
                    "reaction, one model, idle operator (median)",
                    f"{single * 1000:.0f} ms (max {figures['single_max_s'] * 1000:.0f} ms)",
                    f"<= {TARGET_REACTION_S * 1000:.0f} ms",
                    no_baseline,
                    single <= TARGET_REACTION_S,
                ),
                Figure(
                    f"reaction, one model with {args.models} others reconciled (median)",
                    f"{busy * 1000:.0f} ms (max {figures['busy_max_s'] * 1000:.0f} ms)",
                    f"<= {TARGET_REACTION_S * 1000:.0f} ms",
                    no_baseline,
                    busy <= TARGET_REACTION_S,
                ),
                Figure(
                    f"reaction, {args.models} models applied at once ({n} seen), p50 / p95 / max",
                    f"{figures['loaded_p50_s'] * 1000:.0f} / {loaded_p95 * 1000:.0f} / "
                    f"{figures['loaded_max_s'] * 1000:.0f} ms",
                ),
                Figure("RSS idle", f"{figures['idle_rss_mb']:.1f} MB"),
                Figure(
                    f"RSS with {args.models} models (peak)",
                    f"{figures['rss_mb']:.1f} MB ({figures['peak_rss_mb']:.1f} MB)",
                    f"<= {TARGET_RSS_MB:.0f} MB",
                    no_baseline,
                    figures["rss_mb"] <= TARGET_RSS_MB,
                ),
            ],
            [f"load average at the start: {load:.2f} on {os.cpu_count()} cores"],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
