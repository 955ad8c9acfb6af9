"""The parts of the serving bench: the load clients, and the probes that measure serve's halves alone.

- `Publisher` and `Collector`: a sensor and a listener on raw MQTT connections
  (`mqtt_wire.py`: paho's own per-message cost would make the load generator the limit);
- `compute_floor`: serve's batch work (decode, features, model, answers, drift) in
  this process with no MQTT;
- `transport_only`: serve's MQTT link (either client) and batching with no model, in a
  process of its own on one core, under the same flood;
- `run_load`: one stream of windows through a system (serve, or the reference design
  of `reference_design.py`, started by `reference_process`), with its CPU time.

`bench_serve.py` runs them beside serve itself; splitting serve's cost into its two
halves is what says where a missed throughput target is lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from mqtt_wire import WireClient
from vibration_core.drift_monitor import DriftMonitor, DriftPolicy
from vibration_core.modelcard import ModelCard
from vibration_core.raw import encode_raw_float32, encode_raw_json
from vibration_core.target import ShadowPolicy
from vibration_core.topics import TopicLayout
from vibration_infer.loader import load_model
from vibration_infer.serve.batcher import BatchProcessor
from vibration_infer.serve.link import Incoming
from vibration_infer.serve.shadow import Shadow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vibration_testkit.mosquitto import Mosquitto
    from vibration_train.simulator import SimulatedData

TOOLS = Path(__file__).resolve().parent
CORE = max(os.sched_getaffinity(0))
"""The core every system under test runs on; `keep_off_core` moves the rest of the bench to the others."""
PREFIX = "bench/hall"
LAYOUT = TopicLayout(PREFIX)
RATE = 25600.0
FLOOD_CHUNK = 64
"""Windows written to the socket at once in the flood."""
FLOOR_BATCH = 64

# serve's own MQTT link (the client argv[3] names) and batching with no model: every window
# is answered with a fixed prediction-sized payload, acknowledged once that answer is, as
# serve does.
TRANSPORT_SCRIPT = """
import queue, sys
from vibration_core.topics import TopicLayout
from vibration_infer.serve.batcher import collect
from vibration_infer.serve.app import make_link
from vibration_infer.serve.link import Outgoing, queue_into
from vibration_infer.serve.settings import ServeSettings
settings = ServeSettings(mqtt_url=sys.argv[1], topic_prefix=sys.argv[2], node_name="transport",
                         model_id="none", client_id="bench-transport", mqtt_client=sys.argv[3])
layout, inbox = TopicLayout(sys.argv[2]), queue.SimpleQueue()
link = make_link(settings, layout.raw_subscription(), queue_into(inbox))
link.start()
link.wait_connected(30)
print("ready", flush=True)
answer = b"x" * 420
while True:
    batch = collect(inbox, settings.batch_max, 0.0, 0.1)
    link.publish_many(
        Outgoing(layout.predictions(item.topic.split("/")[-2]), answer, 1, then_ack=item) for item in batch
    )
"""


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
    cpu_before, started = sum(cpu_seconds(p) for p in pids), time.perf_counter()
    sent = publisher.send(messages, rate_hz=rate_hz)
    complete = collector.wait_for(expected, timeout_s)
    cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
    arrived = collector.arrived()
    last = max((arrived[k] for k in sent if k in arrived), default=float("nan"))
    latencies = [(arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived]
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"), float("nan"))
    wall = last - started
    return Load(
        len(messages), complete, len(messages) / wall, cpu / len(messages) * 1e6, cpu / wall * 100, p50, p99
    )


def reference_process(broker: Mosquitto, model: Path, labels: Sequence[str]) -> subprocess.Popen[bytes]:
    """The reference design (`reference_design.py`: the flow and its one inference server), on one core."""
    process = subprocess.Popen(
        [sys.executable, str(TOOLS / "reference_design.py"), "front", broker.host, str(broker.port), PREFIX,
         str(model), *labels],
        stdout=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: os.sched_setaffinity(0, {CORE}),  # noqa: PLW1509 - no threads yet; the server inherits it
    )  # fmt: skip
    if process.stdout is None or process.stdout.readline().strip() != b"ready":
        process.kill()
        raise RuntimeError("the reference design did not connect")
    return process


def with_children(pid: int) -> list[int]:
    """`pid` and its child processes (the reference design's inference server)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(c) for c in children)]


def compute_floor(
    model: Path, messages: list[tuple[str, int, bytes]], *, shadow: bool = False, batch: int = FLOOR_BATCH
) -> float:
    """CPU microseconds per window of serve's batch work alone, in this process on one core.

    With `shadow`, a candidate (the same model, loaded again) runs beside it on every batch,
    as during `spec.rollout.shadow`: the difference is what a shadow run costs a node.

    Decode, extract, predict, encode the answers and update drift, in batches of
    `batch` (64 in a flood; one at a hall's load, where windows come one by one),
    exactly as serve does, with no MQTT: what is left of serve's CPU per window is
    the transport (the MQTT link's thread, the broker's packets).
    """
    card = ModelCard.load(model / "modelcard.json")
    loaded = load_model(model / "model.onnx", card, threads=1)
    items = [
        Incoming(LAYOUT.raw(machine), payload, i, 1, 1, time.time_ns(), time.perf_counter_ns())
        for i, (machine, _, payload) in enumerate(messages)
    ]
    processor = BatchProcessor(LAYOUT, max_payload_bytes=1 << 20, dedupe_keys=0)
    drift = DriftMonitor(card.reference, card.labels, DriftPolicy(window=1000))
    policy = ShadowPolicy(windows=10**9, min_agreement=0.95, min_class_agreement=0.9, min_class_windows=20)
    twin = Shadow(load_model(model / "model.onnx", card, threads=1), policy) if shadow else None

    def run() -> None:
        for start in range(0, len(items), batch):
            result = processor.process(items[start : start + batch], loaded)
            if result.features is not None and result.probabilities is not None:
                drift.update(result.features, result.probabilities)
                if twin is not None and result.classes is not None:
                    twin.observe(result.features, result.classes, card.labels)

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CORE})
    try:
        run()  # warm
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            run()
            best = min(best, time.process_time() - started)
    finally:
        os.sched_setaffinity(0, affinity)
    return best / len(items) * 1e6


def transport_only(
    broker: Mosquitto, messages: list[tuple[str, int, bytes]], client: str
) -> tuple[float, float]:
    """Serve's MQTT link (`client`: wire or paho) alone, on one core, under the same flood.

    Returns CPU us per window and windows/s.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", TRANSPORT_SCRIPT, broker.url, PREFIX, client],
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, {CORE}),  # noqa: PLW1509 - no threads yet
    )
    try:
        if process.stdout is None or process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the transport-only client did not connect")
        collector, publisher = Collector(broker), Publisher(broker)
        cpu_before, started = cpu_seconds(process.pid), time.perf_counter()
        publisher.send(messages, rate_hz=None)
        done = collector.wait_for(len(messages), 600)
        seconds = time.perf_counter() - started
        cpu_us = (cpu_seconds(process.pid) - cpu_before) / len(messages) * 1e6
        publisher.close()
        collector.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return cpu_us, (len(messages) / seconds if done else float("nan"))


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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process used so far, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
