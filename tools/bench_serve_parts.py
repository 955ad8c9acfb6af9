"""The serving bench's load: the clients, the windows, and one stream measured through a system.

- `Publisher` and `Collector`: a sensor and a listener on raw MQTT connections
  (`mqtt_wire.py`: paho's own per-message cost would make the load generator the limit);
- `encoded`: simulated windows as binary or JSON payloads;
- `run_load`: one stream of windows through a system (started by
  `bench_serve_systems`), with its CPU time and latencies;
- `CORE` and `keep_off_core`: the system under test on one core, the rest on the others.

`bench_serve_probes.py` measures serve's two halves alone; `bench_serve.py` runs it all.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import orjson

from mqtt_wire import WireClient
from vibration_core.raw import encode_raw_float32, encode_raw_json
from vibration_core.topics import TopicLayout

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from vibration_testkit.mosquitto import Mosquitto
    from vibration_train.simulator import SimulatedData

TOOLS = Path(__file__).resolve().parent
CORE = max(os.sched_getaffinity(0))
"""The core every system under test runs on; `keep_off_core` moves the rest of the bench to the others."""
OTHER_CORES = frozenset(os.sched_getaffinity(0) - {CORE})
"""Where the broker, the load generator and the collector run."""
PREFIX = "bench/hall"
LAYOUT = TopicLayout(PREFIX)
RATE = 25600.0
FLOOD_CHUNK = 64
"""Windows written to the socket at once in the flood."""


class Collector:
    """Receives predictions on a raw MQTT connection and stamps each with its arrival time."""

    def __init__(self, broker: Mosquitto) -> None:
        self._received: list[tuple[bytes, int]] = []
        self.client = WireClient(broker.host, broker.port, "bench-collector", self._on_message)
        self.client.subscribe(f"{PREFIX}/machines/+/predictions", qos=1)

    def _on_message(self, _topic: str, payload: bytes, arrived_ns: int) -> None:
        self._received.append((payload, arrived_ns))  # list.append is atomic; decoded later

    def count(self) -> int:
        """Predictions received so far."""
        return len(self._received)

    def arrived(self) -> dict[tuple[str, int], float]:
        """Arrival time (perf_counter seconds) of each prediction, by (machine, timestamp_ns).

        Any JSON answer naming its window's machine and timestamp_ns counts: serve's
        `Prediction` and the reference design's answers alike.
        """
        out = {}
        for payload, arrived_ns in list(self._received):
            answer = orjson.loads(payload)
            out[answer["machine"], answer["timestamp_ns"]] = arrived_ns / 1e9
        return out

    def wait_for(self, n: int, timeout_s: float) -> bool:
        """Wait until `n` predictions arrived; False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.count() < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Disconnect."""
        self.client.close()


class Publisher:
    """A sensor publishing binary windows with QoS 1 on a raw MQTT connection (packets built ahead)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = WireClient(broker.host, broker.port, "bench-sensor")
        self.published = 0

    def send(
        self, messages: list[tuple[str, int, bytes]], rate_hz: float | None
    ) -> dict[tuple[str, int], float]:
        """Publish `messages` (paced at `rate_hz`, or as fast as possible); return when each went out."""
        packets = [self.client.publish_packet(LAYOUT.raw(m), payload) for m, _, payload in messages]
        sent: dict[tuple[str, int], float] = {}
        started = time.perf_counter()
        if rate_hz is None:
            for i in range(0, len(packets), FLOOD_CHUNK):
                self.client.send(b"".join(packets[i : i + FLOOD_CHUNK]))
            sent = dict.fromkeys(((m, t) for m, t, _ in messages), started)
        else:
            for i, ((machine, timestamp_ns, _), packet) in enumerate(zip(messages, packets, strict=True)):
                pause = started + i / rate_hz - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                sent[machine, timestamp_ns] = time.perf_counter()
                self.client.send(packet)
        self.published += len(packets)
        if not self.client.wait_pubacks(self.published, 120):
            raise RuntimeError("the broker did not acknowledge every window")
        return sent

    def close(self) -> None:
        """Disconnect."""
        self.client.close()


def encoded(
    data: SimulatedData, offset_ns: int, *, json: bool = False, n: int | None = None
) -> list[tuple[str, int, bytes]]:
    """The first `n` windows as (machine, timestamp, payload), binary or JSON; `offset_ns` sets keys apart."""
    encode = encode_raw_json if json else encode_raw_float32
    out = []
    for i in range(min(len(data), n if n is not None else len(data))):
        timestamp_ns = int(data.timestamp_ns[i]) + offset_ns
        out.append((str(data.machine[i]), timestamp_ns, encode(data.windows[i], RATE, timestamp_ns)))
    return out


@dataclass(frozen=True)
class Load:
    """What one system did with one stream of windows."""

    windows: int
    complete: bool
    """Every window was answered within the timeout."""
    rate: float
    """Windows answered per second, from the first publish to the last answer."""
    cpu_us: float
    """CPU time of the system's processes per window."""
    cpu_pct: float
    """CPU time over wall time, % of one core."""
    p50_ms: float
    p99_ms: float
    others_pct: float
    """The other cores' busy time over wall time, % of one core: broker, load generator, collector."""

    @property
    def capacity(self) -> float:
        """Windows a second the system would answer with its core to itself: 1 s over its CPU per window."""
        return 1e6 / self.cpu_us if self.cpu_us > 0 else float("nan")


def best_load(runs: Sequence[Load]) -> Load:
    """The least disturbed of `runs` of one stream: the complete run that took the least CPU a window.

    On a shared host the other tenants only ever add to a run's CPU and latency (they
    take the core and the caches), so the run that cost the least is the nearest to
    what the system itself costs, as timeit takes the least of its repeats. All its
    figures come from that one run (a flood's rate and its two cores' shares describe
    one pace together). A run with windows unanswered is chosen only when every run
    was: its rate and latencies leave the lost windows out.
    """
    if not runs:
        raise ValueError("no runs to take the best of")
    complete = [run for run in runs if run.complete] or list(runs)
    return min(complete, key=lambda run: run.cpu_us)


def run_load(
    collector: Collector,
    publisher: Publisher,
    pids: Sequence[int],
    messages: list[tuple[str, int, bytes]],
    rate_hz: float | None,
    *,
    timeout_s: float = 300,
) -> Load:
    """Publish `messages` (paced at `rate_hz`, or as a flood) and measure until the last answer."""
    expected = collector.count() + len(messages)
    others_before = busy_seconds(OTHER_CORES)
    cpu_before, started = sum(cpu_seconds(p) for p in pids), time.perf_counter()
    sent = publisher.send(messages, rate_hz=rate_hz)
    complete = collector.wait_for(expected, timeout_s)
    cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
    others = busy_seconds(OTHER_CORES) - others_before
    arrived = collector.arrived()
    last = max((arrived[k] for k in sent if k in arrived), default=float("nan"))
    latencies = [(arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived]
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"), float("nan"))
    wall = last - started
    return Load(
        len(messages),
        complete,
        len(messages) / wall,
        cpu / len(messages) * 1e6,
        cpu / wall * 100,
        p50,
        p99,
        others / (time.perf_counter() - started) * 100,
    )


@contextlib.contextmanager
def on_core() -> Iterator[None]:
    """Run this process on `CORE` inside the block (an in-process probe), where it ran before after it."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CORE})
    try:
        yield
    finally:
        os.sched_setaffinity(0, affinity)


def keep_off_core() -> None:
    """Run this process (the load generator, the collector) and what it starts later (the broker) off `CORE`.

    A broker woken on the same core as the system under test would preempt it at
    every message, and its work would be counted as the system's.
    """
    others = os.sched_getaffinity(0) - {CORE}
    if others:
        os.sched_setaffinity(0, others)


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss:
    """The largest RSS of a process while the `with` block runs, sampled every 20 ms, MB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.mb = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.mb = max(self.mb, rss_mb(self.pid))


def busy_seconds(cpus: frozenset[int]) -> float:
    """Time the `cpus` spent busy so far (not idle, not waiting for I/O, not stolen by the host), seconds."""
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq = (int(tick) for tick in ticks[:7])
            busy += user + nice + system + irq + softirq
    return busy / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process used so far, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
