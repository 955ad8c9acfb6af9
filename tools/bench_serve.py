"""Serving figures: `vibration-infer serve` on one core against a real Mosquitto, beside the seed style.

What it measures, in one run:

- start-to-ready: from spawning ``vibration-infer serve`` to ``/readyz`` answering 200;
- end-to-end latency at 500 windows/s: from publishing a binary float32 window
  (QoS 1) to receiving its prediction, p50 and p99, over `--latency-windows`;
- sustained throughput: `--flood-windows` pre-encoded windows published as fast
  as one raw-socket client can (`mqtt_wire.py`: paho's own per-message cost would
  make the load generator the limit), until the last prediction arrives; the
  publisher's own rate is printed, and so is serve's CPU time per window, which
  the other processes on a shared machine disturb far less than wall time;
- RSS of the serve process with the model loaded, idle and after the flood;
- the seed-style baseline: a JSON payload per window answered by one Python
  subprocess per window (plain per-window numpy features, ONNX Runtime), as
  the reference pipeline's Node-RED exec node does.

The model is the reference pipeline's (150 trees of depth 5) trained by
``vibration-train`` on simulated windows. Serve is pinned to one core; the
broker, the publisher and the collector run on the others. Not a test: it
prints figures beside their targets and exits 0 either way.

    uv run --frozen python tools/bench_serve.py [--latency-windows 5000] [--flood-windows 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench_record import Figure, Section, record
from bench_serve_parts import (
    PREFIX,
    RATE,
    Collector,
    Publisher,
    compute_floor,
    cpu_seconds,
    encoded,
    rss_mb,
    seed_style,
    transport_only,
)
from vibration_testkit.mosquitto import Mosquitto
from vibration_testkit.net import free_port
from vibration_train.simulator import simulate

if TYPE_CHECKING:
    from collections.abc import Iterator


BIN = Path(sys.executable).parent
TARGET_READY_S, TARGET_P99_MS, TARGET_RATE, TARGET_RSS_MB = 1.5, 2.0, 20000, 100.0
SETTLE_S = 2.0


def train_model(work: Path, windows: int) -> Path:
    """The reference model (150 trees, depth 5) from `vibration-train`, as a user trains it."""
    data, out = work / "train.parquet", work / "model"
    train = str(BIN / "vibration-train")
    subprocess.run(
        [train, "simulate", "--windows", str(windows), "--out", str(data)], check=True, capture_output=True
    )
    subprocess.run([train, "fit", "--data", str(data), "--out", str(out)], check=True, capture_output=True)
    return out


@contextlib.contextmanager
def serve_process(
    broker: Mosquitto, model: Path, work: Path, extra: list[str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """`vibration-infer serve` pinned to one core; yields the process and its start-to-ready seconds."""
    port = free_port()
    argv = [
        str(BIN / "vibration-infer"), "serve", "--mqtt-url", broker.url, "--topic-prefix", PREFIX,
        "--node-name", "bench", "--artifact", str(model / "model.onnx"),
        "--card", str(model / "modelcard.json"),
        "--http-host", "127.0.0.1", "--http-port", str(port), "--target-file", str(work / "none.json"),
        "--cache-dir", str(work / "cache"), "--log-level", "WARNING", *(extra or []),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBRATION_")} | {"OMP_NUM_THREADS": "1"}
    core = max(os.sched_getaffinity(0))
    started = time.perf_counter()
    process = subprocess.Popen(
        argv,
        env=env,
        stderr=(work / "serve.log").open("wb"),
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),  # noqa: PLW1509 - no threads yet,
    )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}; see {work / 'serve.log'}")
            url = f"http://127.0.0.1:{port}/readyz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == HTTPStatus.OK:
                    break
            time.sleep(0.01)
        yield process, time.perf_counter() - started
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


CLIENT_NAMES = {"wire": "wire, the default", "paho": "paho"}


def main() -> int:
    """Train, start a broker and serve, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-windows", type=int, default=5000, help="windows published at 500/s")
    parser.add_argument("--flood-windows", type=int, default=20000, help="windows published at full speed")
    parser.add_argument("--train-windows", type=int, default=1200, help="windows the model is trained on")
    parser.add_argument(
        "--baseline-windows", type=int, default=20, help="windows for the seed-style baseline"
    )
    parser.add_argument(
        "--serve-flag",
        action="append",
        default=[],
        help="an extra flag for serve, e.g. --serve-flag=--batch-max=128 (repeatable)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vibration-bench-serve-") as tmp:
        work = Path(tmp)
        model = train_model(work, args.train_windows)
        stream = simulate(max(args.latency_windows, args.flood_windows), seed=5, sample_rate=RATE, machines=8)
        paced = encoded(stream, 0)[: args.latency_windows]
        flood = encoded(stream, 10**15)[: args.flood_windows]
        with (
            Mosquitto(work / "broker") as broker,
            serve_process(broker, model, work, args.serve_flag) as (
                process,
                ready_s,
            ),
        ):
            idle_rss = rss_mb(process.pid)
            collector, publisher = Collector(broker), Publisher(broker)
            sent = publisher.send(paced, rate_hz=500)
            complete = collector.wait_for(len(paced), 120)
            arrived = collector.arrived()
            latencies = [(arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived]
            p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"), float("nan"))
            cpu_before = cpu_seconds(process.pid)
            started = time.perf_counter()
            flood_sent = publisher.send(flood, rate_hz=None)
            published_s = time.perf_counter() - started
            flooded = collector.wait_for(len(paced) + len(flood), 600)
            cpu_us = (cpu_seconds(process.pid) - cpu_before) / len(flood) * 1e6
            arrived = collector.arrived()
            last = max(arrived[k] for k in flood_sent if k in arrived)
            rss = rss_mb(process.pid)
            time.sleep(SETTLE_S)  # serve's memory trimmer runs once a second
            settled_rss = rss_mb(process.pid)
            publisher.close()
            collector.close()
        base_p50, base_p99, base_rate = seed_style(model, stream, args.baseline_windows)
        floor_us = compute_floor(model, flood[:2048])
        shadow_us = compute_floor(model, flood[:2048], shadow=True)
        transport = {}
        for n, client in enumerate(("wire", "paho"), start=2):
            with Mosquitto(work / f"broker-{client}") as broker:
                transport[client] = transport_only(broker, encoded(stream, n * 10**15)[: len(flood)], client)
    rate = len(flood) / (last - started)
    baseline = f"p50 {base_p50:.0f} ms, p99 {base_p99:.0f} ms"
    record(
        Section(
            "serving",
            f"Serving: vibration-infer serve pinned to one core, real Mosquitto, "
            f"{stream.windows.shape[1]}-sample float32 windows",
            "uv run --frozen python tools/bench_serve.py "
            f"--latency-windows {args.latency_windows} --flood-windows {args.flood_windows}"
            + "".join(f" --serve-flag={flag}" for flag in args.serve_flag),
            [
                Figure("start to ready", f"{ready_s:.2f} s", "<= 1.5 s", met=ready_s <= TARGET_READY_S),
                Figure(
                    "latency at 500 windows/s, p50",
                    f"{p50:.2f} ms" + ("" if complete else " (INCOMPLETE: windows unanswered)"),
                    baseline=baseline,
                ),
                Figure(
                    "latency at 500 windows/s, p99",
                    f"{p99:.2f} ms",
                    "<= 2 ms",
                    baseline,
                    bool(complete and p99 <= TARGET_P99_MS),
                ),
                Figure(
                    "sustained windows/s (flood)",
                    f"{rate:.0f}" + ("" if flooded else " (INCOMPLETE)"),
                    ">= 20000",
                    f"{base_rate:.1f} windows/s",
                    bool(flooded and rate >= TARGET_RATE),
                ),
                Figure(
                    "serve CPU per window in the flood",
                    f"{cpu_us:.0f} us (one core: {1e6 / cpu_us:.0f} windows/s)",
                ),
                Figure(
                    "serve's batch work alone, no MQTT (decode, features, model, answers, drift)",
                    f"{floor_us:.0f} us (alone on one core: {1e6 / floor_us:.0f} windows/s)",
                ),
                Figure(
                    "the same with a shadow candidate beside the model (spec.rollout.shadow)",
                    f"{shadow_us:.0f} us: the shadow costs {shadow_us - floor_us:.0f} us a window",
                ),
                *(
                    Figure(
                        f"serve's MQTT link alone, no model ({CLIENT_NAMES[client]}, same flood)",
                        f"{link_us:.0f} us CPU per window, {link_rate:.0f} windows/s",
                    )
                    for client, (link_us, link_rate) in transport.items()
                ),
                Figure(
                    "RSS, model loaded, idle",
                    f"{idle_rss:.1f} MB",
                    "<= 100 MB",
                    met=idle_rss <= TARGET_RSS_MB,
                ),
                Figure(
                    "RSS at the end of the flood / 2 s later",
                    f"{rss:.1f} / {settled_rss:.1f} MB",
                    "<= 100 MB",
                    met=settled_rss <= TARGET_RSS_MB,
                ),
            ],
            [
                (
                    f"the publisher wrote the {len(flood)} flood windows at {len(flood) / published_s:.0f}/s "
                    "(when close to the sustained rate, the publisher was the limit)"
                ),
                (
                    f"baseline: {args.baseline_windows} windows, each a JSON payload answered by a new "
                    "Python process (the reference pipeline's exec node)"
                ),
                f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
