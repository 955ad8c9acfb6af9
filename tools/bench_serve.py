"""Serving figures: `vibration-infer serve` on one core against a real Mosquitto, beside the reference design.

Every system under test runs pinned to one core; the broker, the load
generator and the collector run on the other. In one run:

- the systems: the reference design (`reference_design.py`: a paho flow with
  per-window numpy features and ONE persistent ONNX Runtime subprocess
  answering JSON lines, one row per call), serve on JSON windows, serve on
  binary windows, and serve on the Edge TPU image's CPU path (LiteRT, the INT8
  model), each answering with the same kind of model (150 trees of depth 5 from
  `vibration-train`; the INT8 one from `fit --format edgetpu`);
- the loads: a flood (windows published as fast as one raw-socket client can,
  `mqtt_wire.py`), 500 windows/s, and a hall's load (48 sensors x 6.25
  windows/s = 300/s); for each, windows answered per second, CPU time of the
  system's processes per window and as % of one core (the figure a shared
  machine disturbs least), and latency from publish to answer;
- serve alone: start-to-ready, RSS, its batch work without MQTT (in batches of
  64 and of one, with a shadow candidate), its MQTT link without a model;
- where serve's CPU goes at the hall load (py-spy, `bench_profile.py`).

Not a test: it prints figures beside their targets and exits 0 either way.

    uv run --frozen python tools/bench_serve.py [--flood-windows 20000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench_profile import PerfSampler, Profile, Sampler
from bench_record import Figure, Section, record
from bench_serve_figures import (
    Loads,
    coalescing_figures,
    flood_note,
    hall_note,
    long_term_note,
    profile_notes,
    reference_note,
    spread_note,
    system_figures,
)
from bench_serve_parts import (
    RATE,
    Collector,
    Load,
    PeakRss,
    Publisher,
    encoded,
    keep_off_core,
    rss_mb,
    run_load,
)
from bench_serve_probes import (
    HALL_GAP_S,
    HOST_WORK_STEPS,
    compute_floor,
    host_floor,
    host_wake,
    model_call,
    transport_only,
)
from bench_serve_systems import artifact_of, reference_process, serve_process, train_model, with_children
from vibration_core.modelcard import ModelCard
from vibration_testkit.mosquitto import Mosquitto
from vibration_testkit.processes import stop
from vibration_train.simulator import simulate

if TYPE_CHECKING:
    from vibration_train.simulator import SimulatedData


TARGET_READY_S, TARGET_RSS_MB = 1.5, 100.0
TARGET_FLOOD_RATE = 10000
"""Binary windows a second serve's one core would answer in a flood (20 000 stays the long-term aim).

Judged on the whole core's rate (1 s over serve's CPU per window), not on the rate answered:
in this layout the other core (the broker, the sensor and the collector) sets the answered
rate, and serve's link alone, with no model at all, answers no faster (`flood_note`).
"""
TARGET_HALL_US, TARGET_HALL_PCT, TARGET_HALL_P99_MS = 150.0, 5.0, 2.0
TARGET_JSON_US = 300.0
TARGET_P99_500_MS = 4.0
"""p99 at 500 windows/s when issue 17 was filed, in this layout (serve on one core, the rest on the other).

An earlier run gave 1.02 ms with the broker on serve's core; in this layout serve
at 327af77 gives about 2.1 ms (`P99_AB` in bench_serve_figures.py).
"""
HALL_RATE, LATENCY_RATE = 300.0, 500.0
COALESCING_MS = (5, 20, 50)
"""`batch_deadline_ms` values tried at the hall load: CPU per window against latency."""
SETTLE_S = 2.0
PERF_WINDOWS = 1500
"""Windows of the hall load run again under perf (not the measured run: perf's sampling costs serve)."""


CLIENT_NAMES = {"wire": "wire, the default", "paho": "paho"}
BINARY_TARGETS = {
    "capacity": (f">= {TARGET_FLOOD_RATE}", TARGET_FLOOD_RATE),
    "p99_500": (f"<= {TARGET_P99_500_MS} ms", TARGET_P99_500_MS),
    "hall_us": (f"<= {TARGET_HALL_US:.0f} us", TARGET_HALL_US),
    "hall_pct": (f"<= {TARGET_HALL_PCT:.0f} %", TARGET_HALL_PCT),
    "hall_p99": (f"<= {TARGET_HALL_P99_MS:.0f} ms", TARGET_HALL_P99_MS),
}
JSON_TARGETS = {"flood_us": (f"<= {TARGET_JSON_US:.0f} us", TARGET_JSON_US)}


@dataclass
class Streams:
    """Fresh windows for each run: every run's (machine, timestamp) keys are new, so none is a duplicate."""

    data: SimulatedData
    runs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def take(self, n: int, *, json: bool) -> list[tuple[str, int, bytes]]:
        """The first `n` windows, binary or JSON, with keys no earlier run used."""
        return encoded(self.data, next(self.runs) * 10**15, json=json, n=n)


@dataclass
class Bench:
    """One run's clients, windows and sizes."""

    collector: Collector
    publisher: Publisher
    streams: Streams
    sizes: dict[str, int]

    repeats: int = 1

    def loads(self, pids: list[int], *, json: bool, flood: int | None = None) -> Loads:
        """Warm the system up, then flood it, pace it at 500 windows/s and at the hall's 300, `repeats` times.

        The figures are each load's least disturbed run (`Loads.best_of`), the loads taken in turn
        so that a noisy minute on the host falls on one run of each load, not on every run of one.
        """
        self.run(pids, self.streams.take(300, json=json), 1000.0)
        runs = [
            Loads(
                flood=self.run(pids, self.streams.take(flood or self.sizes["flood"], json=json), None),
                paced=self.run(pids, self.streams.take(self.sizes["paced"], json=json), LATENCY_RATE),
                hall=self.run(pids, self.streams.take(self.sizes["hall"], json=json), HALL_RATE),
            )
            for _ in range(self.repeats)
        ]
        return Loads.best_of(runs)

    def run(self, pids: list[int], messages: list[tuple[str, int, bytes]], rate_hz: float | None) -> Load:
        """One stream through the system."""
        return run_load(self.collector, self.publisher, pids, messages, rate_hz)


@dataclass
class Results:
    """Everything `report` prints."""

    ref: Loads
    binary: Loads
    json: Loads
    litert: Loads
    coalesced: dict[int, Load]
    """The binary hall load with a coalescing deadline (ms) on serve's link."""
    ready_s: float
    rss_mb: tuple[float, float, float, float]
    """Idle, the most during the binary loads, at their end, and 2 s later."""
    profile: Profile | None
    libraries: list[tuple[str, float]] | None
    """Share of serve's CPU time in each shared object at the hall load (perf), when perf can sample."""
    floor_us: tuple[float, float, float, float]
    """Batch work alone: batches of 64, of one, of one at a hall's pace, of 64 with a shadow."""
    transport: dict[str, tuple[float, float]]
    link_hall_us: float
    """serve's wire link alone (no model) at the hall's pace, CPU per window."""
    model_call_us: tuple[float, float, float, float]
    """One one-row model call: back to back, after a hall's gap asleep or busy, after other work."""
    host_wake_us: tuple[float, float, float]
    """A fixed piece of pure Python: back to back, after a hall's gap asleep or busy."""
    host_floor_us: tuple[float, float, float]
    """No serve at a hall's pace: wake, read, reply; with a model call; with the features too."""


def measure(args: argparse.Namespace, work: Path) -> Results:
    """Train both models, then run every system and probe in this run."""
    model = train_model(work, args.train_windows)
    int8 = train_model(work, args.train_windows, edgetpu=True)
    labels = ModelCard.load(model / "modelcard.json").labels
    longest = max(args.flood_windows, args.json_flood_windows, args.paced_windows, args.hall_windows)
    streams = Streams(simulate(longest, seed=5, sample_rate=RATE, machines=8))
    sizes = {"flood": args.flood_windows, "paced": args.paced_windows, "hall": args.hall_windows}
    with Mosquitto(work / "broker") as broker:
        bench = Bench(Collector(broker), Publisher(broker), streams, sizes, args.repeats)
        reference = reference_process(broker, artifact_of(model), labels)
        try:
            ref = bench.loads(with_children(reference.pid), json=True, flood=args.reference_flood_windows)
        finally:
            stop(reference)
        with serve_process(broker, model, work, args.serve_flag) as (process, ready_s):
            idle_rss = rss_mb(process.pid)
            with PeakRss(process.pid) as peak:
                binary = bench.loads([process.pid], json=False)
            rss = rss_mb(process.pid)
            time.sleep(SETTLE_S)  # serve's memory trimmer runs once a second
            settled_rss = rss_mb(process.pid)
            sampler = Sampler(process.pid, args.hall_windows / HALL_RATE)
            bench.run([process.pid], streams.take(args.hall_windows, json=False), HALL_RATE)
            profile = sampler.result()
            perf = PerfSampler(process.pid, PERF_WINDOWS / HALL_RATE)
            bench.run([process.pid], streams.take(PERF_WINDOWS, json=False), HALL_RATE)
            libraries = perf.result()
            json_windows = bench.loads([process.pid], json=True, flood=args.json_flood_windows)
        with serve_process(broker, int8, work / "litert", args.serve_flag) as (process, _):
            litert = bench.loads([process.pid], json=False)
        coalesced = {}
        for deadline_ms in COALESCING_MS:
            flags = [*args.serve_flag, f"--batch-deadline-ms={deadline_ms}"]
            with serve_process(broker, model, work / f"coalesce-{deadline_ms}", flags) as (process, _):
                bench.run([process.pid], streams.take(300, json=False), 1000.0)
                hall_windows = streams.take(args.hall_windows, json=False)
                coalesced[deadline_ms] = bench.run([process.pid], hall_windows, HALL_RATE)
        bench.collector.close()
        bench.publisher.close()
    sample = streams.take(2048, json=False)
    floors = (
        compute_floor(model, sample),
        compute_floor(model, sample[:512], batch=1),
        compute_floor(model, sample[:512], batch=1, gap_s=HALL_GAP_S),
        compute_floor(model, sample, shadow=True),
    )
    transport = {}
    for client in ("wire", "paho"):
        with Mosquitto(work / f"broker-{client}") as broker:
            transport[client] = transport_only(broker, streams.take(args.flood_windows, json=False), client)
    with Mosquitto(work / "broker-hall") as broker:
        hall_windows = streams.take(args.hall_windows, json=False)
        link_hall_us, _ = transport_only(broker, hall_windows, "wire", HALL_RATE)
    return Results(
        ref,
        binary,
        json_windows,
        litert,
        coalesced,
        ready_s,
        (idle_rss, peak.mb, rss, settled_rss),
        profile,
        libraries,
        floors,
        transport,
        link_hall_us,
        model_call(model),
        host_wake(),
        best_floor(model, sample[0], args.repeats),
    )


def best_floor(model: Path, message: tuple[str, int, bytes], repeats: int) -> tuple[float, float, float]:
    """`host_floor`'s three figures, each the least of `repeats` runs (the host only ever adds)."""
    runs = [host_floor(model, message) for _ in range(repeats)]
    bare, model_only, computed = zip(*runs, strict=True)
    return min(bare), min(model_only), min(computed)


def serve_alone(r: Results) -> list[Figure]:
    """Start-up, memory, and serve's two halves measured apart."""
    idle_rss, peak_rss, rss, settled_rss = r.rss_mb
    floor_us, floor_one_us, floor_paced_us, shadow_us = r.floor_us
    return [
        Figure("start to ready", f"{r.ready_s:.2f} s", "<= 1.5 s", met=r.ready_s <= TARGET_READY_S),
        Figure("RSS, model loaded, idle", f"{idle_rss:.1f} MB", "<= 100 MB", met=idle_rss <= TARGET_RSS_MB),
        Figure(
            "RSS, the most during the binary loads (the flood, 500/s, the hall's 300/s; the limit is 512 Mi)",
            f"{peak_rss:.1f} MB",
        ),
        Figure(
            "RSS at the end of the binary loads / 2 s later",
            f"{rss:.1f} / {settled_rss:.1f} MB",
            "<= 100 MB",
            met=settled_rss <= TARGET_RSS_MB,
        ),
        Figure(
            "serve's batch work alone, no MQTT, batches of 64 (decode, features, model, answers, drift)",
            f"{floor_us:.0f} us a window (alone on one core: {1e6 / floor_us:.0f} windows/s)",
        ),
        Figure("the same, one window a batch (as at a hall's load)", f"{floor_one_us:.0f} us a window"),
        Figure(
            "the same, one window a batch, 3.3 ms asleep before each (a hall's pace, still no MQTT)",
            f"{floor_paced_us:.0f} us a window",
            f"<= {TARGET_HALL_US:.0f} us",
            met=floor_paced_us <= TARGET_HALL_US,
        ),
        Figure(
            "batches of 64 with a shadow candidate beside the model (spec.rollout.shadow)",
            f"{shadow_us:.0f} us: the shadow costs {shadow_us - floor_us:.0f} us a window",
        ),
        Figure(
            "a one-row model call (600 trees): back to back / after 3.3 ms asleep / busy / 256 KB of work",
            " / ".join(f"{us:.0f}" for us in r.model_call_us) + " us CPU",
        ),
        Figure(
            f"this machine alone: {HOST_WORK_STEPS} steps of a pure-Python loop (no arrays): back to back / "
            "after 3.3 ms asleep / busy",
            " / ".join(f"{us:.0f}" for us in r.host_wake_us)
            + f" us CPU ({r.host_wake_us[1] / r.host_wake_us[0]:.1f} x after a hall's gap asleep)",
        ),
        *(
            Figure(
                f"serve's MQTT link alone, no model ({CLIENT_NAMES[client]}, binary flood)",
                f"{link_us:.0f} us CPU per window, {link_rate:.0f} windows/s",
            )
            for client, (link_us, link_rate) in r.transport.items()
        ),
        Figure(
            f"serve's MQTT link alone, no model ({CLIENT_NAMES['wire']}, at a hall's 300 windows/s)",
            f"{r.link_hall_us:.0f} us CPU per window",
        ),
        Figure(
            "no serve, no MQTT: a window every 3.3 ms over a socketpair, woken for, read whole and answered "
            "with 120 bytes / with a one-row model call / with the decode, features and model call",
            " / ".join(f"{us:.0f}" for us in r.host_floor_us) + " us CPU a window",
        ),
    ]


def main() -> int:
    """Train, start a broker, measure the reference design and serve, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood-windows", type=int, default=20000, help="binary windows in serve's flood")
    parser.add_argument("--json-flood-windows", type=int, default=5000, help="JSON windows in serve's flood")
    parser.add_argument("--reference-flood-windows", type=int, default=2000, help="the reference's flood")
    parser.add_argument("--paced-windows", type=int, default=5000, help="windows at 500/s")
    parser.add_argument("--hall-windows", type=int, default=3000, help="windows at the hall's 300/s")
    parser.add_argument("--train-windows", type=int, default=1200, help="windows the models are trained on")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each load per system; the page gives the least disturbed of them",
    )
    parser.add_argument(
        "--serve-flag",
        action="append",
        default=[],
        help="an extra flag for serve, e.g. --serve-flag=--batch-max=128 (repeatable)",
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    keep_off_core()
    with tempfile.TemporaryDirectory(prefix="vibration-bench-serve-") as tmp:
        r = measure(args, Path(tmp))
    litert = "serve on LiteRT (INT8, the Edge TPU image's CPU path), binary windows"
    command = (
        "uv run --frozen python tools/bench_serve.py "
        f"--flood-windows {args.flood_windows} --hall-windows {args.hall_windows} --repeats {args.repeats}"
        + "".join(f" --serve-flag={flag}" for flag in args.serve_flag)
    )
    record(
        Section(
            "serving",
            "Serving: each system pinned to one core, real Mosquitto, 4096-sample windows at 25.6 kHz, "
            "beside the reference design measured in the same run",
            command,
            [
                *system_figures("serve, binary windows", r.binary, r.ref, BINARY_TARGETS),
                *system_figures("serve, JSON windows", r.json, r.ref, JSON_TARGETS),
                *system_figures(litert, r.litert, r.ref, {}),
                *coalescing_figures(r.coalesced, r.ref, BINARY_TARGETS["hall_us"]),
                *serve_alone(r),
            ],
            [
                (
                    "baseline column: the reference design (paho, JSON windows, per-window numpy features, "
                    "one persistent ONNX Runtime subprocess answering JSON lines) in the same run, and how "
                    "many times better or worse serve is"
                ),
                (
                    f"the flood, 500 windows/s and hall load of serve (binary, JSON, LiteRT) and of the "
                    f"reference design ran {args.repeats} times each, in turn; the tables give each load's "
                    "least disturbed run, the complete one with the least CPU a window (the host's other "
                    "tenants only ever add CPU and latency), and the notes below the main figures of every "
                    "run. The batch-deadline rows are one run each; of the probes below them, the batch "
                    f"work alone is the best of three passes and the floor with no serve the least of "
                    f"{args.repeats} runs, the rest one run each"
                ),
                reference_note(r.ref),
                *(
                    spread_note(name, loads)
                    for name, loads in (
                        ("reference design", r.ref),
                        ("serve, binary windows", r.binary),
                        ("serve, JSON windows", r.json),
                        ("serve on LiteRT", r.litert),
                    )
                ),
                flood_note(r.transport["wire"][1]),
                long_term_note(
                    r.floor_us[0], r.transport["wire"][0], (r.binary.flood.capacity, r.litert.flood.capacity)
                ),
                hall_note(
                    r.host_floor_us, (r.floor_us[1], r.floor_us[2]), r.binary.hall.cpu_us, TARGET_HALL_US
                ),
                *profile_notes(r.profile, r.libraries),
                (
                    f"load average at the start: {load_at_start:.2f}, at the end: {os.getloadavg()[0]:.2f} "
                    f"on {os.cpu_count()} cores"
                ),
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
