"""serve's two halves measured apart: its batch work with no MQTT, its MQTT link with no model.

Splitting serve's cost into its two halves is what says where a missed
throughput target is lost: `compute_floor` runs serve's batch work in this
process on `CORE`; `transport_only` runs serve's MQTT link (either client)
and batching with no model, in a process of its own on `CORE`, under a flood.
`host_floor` is what this machine charges for a window at a hall's pace with
no serve at all; `model_call` and `host_wake` split that charge further.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

from bench_serve_parts import CORE, LAYOUT, OTHER_CORES, PREFIX, Collector, Publisher, cpu_seconds, on_core
from vibration_core.drift_monitor import DriftMonitor, DriftPolicy
from vibration_core.features import extract_features
from vibration_core.modelcard import ModelCard
from vibration_core.raw import decode_raw
from vibration_core.target import ShadowPolicy
from vibration_infer.loader import load_model
from vibration_infer.serve.batcher import BatchProcessor
from vibration_infer.serve.link import Incoming
from vibration_infer.serve.shadow import Shadow
from vibration_testkit.processes import stop

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from vibration_testkit.mosquitto import Mosquitto

FLOOR_BATCH = 64
HALL_GAP_S = 1 / 300
"""The time between two windows at a hall's load (300 windows/s)."""
HOST_WORK_STEPS = 2000
"""Loop steps of `host_wake`'s pure-Python work: about 100 us back to back on this machine."""
OTHER_WORK_BYTES = 256 << 10
"""Memory touched between two calls in `model_call`: more than a window's own batch work moves.

One window's decode, FFT, features and answer allocate 45 KB at their peak
(tracemalloc), plus the FFT's and the runtime's own buffers.
"""
FLOOR_ANSWER_BYTES = 120
"""What `host_floor` writes back for each window: about a prediction's size."""
PACER_PATIENCE_MS = 10_000
"""How long `host_floor` waits for a window before it gives up on its pacer."""

# A sensor at a hall's pace for `host_floor`: reads one payload from stdin, then sends it on the
# socket (fd argv[1]) argv[2] times, one every argv[3] seconds, reading each answer before the next.
PACER_SCRIPT = """
import socket, sys, time
sock = socket.socket(fileno=int(sys.argv[1]))
payload = sys.stdin.buffer.read()
due = time.perf_counter()
for _ in range(int(sys.argv[2])):
    due += float(sys.argv[3])
    while (left := due - time.perf_counter()) > 0:
        time.sleep(left)
    sock.sendall(payload)
    sock.recv(4096)
"""

# serve's own MQTT link (the client argv[3] names) and batching with no model: every window
# is answered with a fixed prediction-sized payload, acknowledged once that answer is, as
# serve does: on the wire link's network thread, or (paho) on a worker fed by its callback.
TRANSPORT_SCRIPT = """
import queue, sys, threading
from vibration_core.topics import TopicLayout
from vibration_infer.serve.batcher import collect
from vibration_infer.serve.app import make_link
from vibration_infer.serve.link import Outgoing, delivers_inline, queue_into
from vibration_infer.serve.settings import ServeSettings
settings = ServeSettings(mqtt_url=sys.argv[1], topic_prefix=sys.argv[2], node_name="transport",
                         model_id="none", client_id="bench-transport", mqtt_client=sys.argv[3])
layout, inbox = TopicLayout(sys.argv[2]), queue.SimpleQueue()
answer = b"x" * 420
def answer_all(batch):
    link.publish_many(
        Outgoing(layout.predictions(item.topic.split("/")[-2]), answer, 1, then_ack=item) for item in batch
    )
inline = delivers_inline(settings)
link = make_link(settings, layout.raw_subscription(), answer_all if inline else queue_into(inbox))
link.start()
link.wait_connected(30)
print("ready", flush=True)
if inline:
    threading.Event().wait()  # the link answers on its own thread
while True:
    answer_all(collect(inbox, settings.batch_max, 0.0, 0.1))
"""


def compute_floor(
    model: Path,
    messages: list[tuple[str, int, bytes]],
    *,
    shadow: bool = False,
    batch: int = FLOOR_BATCH,
    gap_s: float = 0.0,
) -> float:
    """CPU microseconds per window of serve's batch work alone, in this process on one core.

    With `shadow`, a candidate (the same model, loaded again) runs beside it on every batch,
    as during `spec.rollout.shadow`: the difference is what a shadow run costs a node.

    Decode, extract, predict, encode the answers and update drift, in batches of
    `batch` (64 in a flood; one at a hall's load, where windows come one by one),
    exactly as serve does, with no MQTT: what is left of serve's CPU per window is
    the transport (the MQTT link's thread, the broker's packets).

    With `gap_s`, this process sleeps that long before each batch, as serve
    waits for the next window at a hall's load: the caches no longer hold the
    model and the code when the window comes, which is what serve pays there.
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
            if gap_s:
                time.sleep(gap_s)
            result = processor.process(items[start : start + batch], loaded)
            if result.features is not None and result.probabilities is not None:
                drift.update(result.features, result.probabilities)
                if twin is not None and result.classes is not None:
                    twin.observe(result.features, result.classes, card.labels)

    with on_core():
        run()  # warm
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            run()
            best = min(best, time.process_time() - started)
    return best / len(items) * 1e6


def transport_only(
    broker: Mosquitto,
    messages: list[tuple[str, int, bytes]],
    client: str,
    rate_hz: float | None = None,
    timeout_s: float = 600,
) -> tuple[float, float]:
    """Serve's MQTT link (`client`: wire or paho) alone, on one core, under a flood or at `rate_hz`.

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
        publisher.send(messages, rate_hz=rate_hz)
        done = collector.wait_for(len(messages), timeout_s)
        seconds = time.perf_counter() - started
        cpu_us = (cpu_seconds(process.pid) - cpu_before) / len(messages) * 1e6
        publisher.close()
        collector.close()
    finally:
        stop(process)
        if process.stdout is not None:
            process.stdout.close()
    return cpu_us, (len(messages) / seconds if done else float("nan"))


def cpu_us_each(work: Callable[[], object], between: Callable[[], object], calls: int) -> float:
    """CPU microseconds (this thread's) of one `work`, on average over `calls`, with `between` before each."""
    spent = 0.0
    for _ in range(calls):
        between()
        started = time.thread_time()
        work()
        spent += time.thread_time() - started
    return spent / calls * 1e6


def after_gaps(
    work: Callable[[], object], gaps: tuple[Callable[[], object], ...], calls: int
) -> tuple[float, ...]:
    """`cpu_us_each` of `work` after each of `gaps`, on the bench's core, once warmed back to back."""
    with on_core():
        cpu_us_each(work, _nothing, calls)  # warm
        return tuple(cpu_us_each(work, gap, calls) for gap in gaps)


def _busy() -> None:
    until = time.perf_counter() + HALL_GAP_S
    while time.perf_counter() < until:
        pass


def _asleep() -> None:
    time.sleep(HALL_GAP_S)


def _nothing() -> None:
    pass


def host_wake(calls: int = 500) -> tuple[float, float, float]:
    """CPU microseconds of a fixed piece of pure Python: back to back, after a hall's gap asleep or busy.

    No arrays, no model, a few kilobytes of interpreter state: what this machine adds
    to any work done once per window at a hall's pace, serve's or another program's.
    On a shared VM the same instructions take longer after a gap (the caches and branch
    predictors another tenant used meanwhile, the core's clock); a dedicated gateway
    would add less. The model call's figures (`model_call`) add its megabyte of trees.
    """

    def work() -> int:
        total = 0
        for i in range(HOST_WORK_STEPS):
            total += i * i
        return total

    back_to_back, asleep, busy = after_gaps(work, (_nothing, _asleep, _busy), calls)
    return back_to_back, asleep, busy


def model_call(model: Path, calls: int = 500) -> tuple[float, float, float, float]:
    """CPU microseconds of a one-row model call: back to back, after a hall's gap asleep or busy, after work.

    The model of DESIGN.md (GradientBoosting, 150 stages of depth 5, four classes:
    600 trees) is about a megabyte of tree nodes. Back to back it stays in the
    cache; at a hall's load serve sleeps between windows and runs the rest of
    the window's work between model calls. The figures say which of the two
    makes the call fetch its nodes again; the gap spent busy in a loop that
    touches nothing says whether serve's sleeping is to blame, or the machine
    (another tenant on the same physical core evicts the caches either way).
    """
    card = ModelCard.load(model / "modelcard.json")
    backend = load_model(model / "model.onnx", card, threads=1).backend
    row = np.zeros((1, len(card.features.names)), dtype=np.float32)
    other = np.ones(OTHER_WORK_BYTES, dtype=np.uint8)

    def call() -> object:
        return backend.predict_proba(row)

    def touch() -> None:
        other[::64] += 1  # one byte a cache line

    back_to_back, asleep, busy, touched = after_gaps(call, (_nothing, _asleep, _busy, touch), calls)
    return back_to_back, asleep, busy, touched


def host_floor(
    model: Path, message: tuple[str, int, bytes], windows: int = 1000
) -> tuple[float, float, float]:
    """CPU microseconds a window of the least a one-window-at-a-time serve does at a hall's pace, here.

    No serve, no MQTT: a sensor on the other cores sends `message`'s payload
    every 3.3 ms over a socketpair; this thread, on `CORE`, waits in poll, reads
    it whole and writes an answer-sized reply, and nothing else; then the same
    with a one-row model call on a fixed row; then with the payload decoded and
    its features computed for the model call, as serve does. Whatever serve's
    own code costs, a serve that answers each window as it comes with this
    model and these features pays at least the third figure on this machine.
    """
    machine, _, payload = message
    card = ModelCard.load(model / "modelcard.json")
    backend = load_model(model / "model.onnx", card, threads=1).backend
    rate = card.signal.sample_rate
    fixed = np.zeros((1, len(card.features.names)), dtype=np.float32)

    def model_only(_: bytearray) -> None:
        backend.predict_proba(fixed)

    def features_and_model(window: bytearray) -> None:
        backend.predict_proba(extract_features(decode_raw(bytes(window), machine).samples, rate))

    return (
        _paced(payload, None, windows),
        _paced(payload, model_only, windows),
        _paced(payload, features_and_model, windows),
    )


def _paced(payload: bytes, work: Callable[[bytearray], None] | None, windows: int) -> float:
    """`host_floor`'s loop: CPU us a window of waking, reading `payload`, `work` on it and a reply."""
    warm = windows // 10
    buffer = bytearray(len(payload))
    view = memoryview(buffer)
    reply = bytes(FLOOR_ANSWER_BYTES)
    spent = 0.0
    with contextlib.ExitStack() as stack:
        ours, theirs = socket.socketpair()
        stack.callback(ours.close)
        with theirs:
            pacer = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    PACER_SCRIPT,
                    str(theirs.fileno()),
                    str(warm + windows),
                    str(HALL_GAP_S),
                ],
                stdin=subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
                preexec_fn=lambda: os.sched_setaffinity(0, OTHER_CORES or {CORE}),  # noqa: PLW1509 - no threads yet
            )
        stack.callback(stop, pacer)
        if pacer.stdin is None:
            raise RuntimeError("the pacer has no stdin")
        with pacer.stdin as stdin:
            stdin.write(payload)
        poller = select.poll()
        poller.register(ours, select.POLLIN)
        with on_core():
            for i in range(warm + windows):
                started = time.thread_time()
                got = 0
                while got < len(buffer):
                    if not poller.poll(PACER_PATIENCE_MS):
                        raise RuntimeError(
                            f"the pacer sent nothing for {PACER_PATIENCE_MS} ms after {i} windows"
                        )
                    if not (read := ours.recv_into(view[got:])):
                        raise RuntimeError(f"the pacer stopped after {i} of {warm + windows} windows")
                    got += read
                if work is not None:
                    work(buffer)
                ours.sendall(reply)
                if i >= warm:
                    spent += time.thread_time() - started
    return spent / windows * 1e6
