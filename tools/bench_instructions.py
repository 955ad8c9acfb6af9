"""Instructions per window of serve's own path (callgrind): figures this shared machine's noise cannot move.

`make bench`'s times on this host swing by a third between two evenings
(docs/benchmarks.md); an instruction count does not: the same code, model and
windows give the same count within a fraction of a percent, whatever else the
machine does. So this is the figure to compare two commits by, and the split
that says where a window's work goes.

The path is serve's own objects in one process (`ServeApp`: the wire link's
packet handling, `Responder`, `BatchProcessor`, `Outbound`, drift, alerts,
metrics), with a socketpair in place of the broker's socket: each window
arrives as a real PUBLISH packet, its answer goes out through the link's
`send`, and the answer's PUBACK comes back and releases the input's own, as
at a hall's load (one window a read) or in a flood (64 a read) of binary
windows, and in a flood of JSON ones (the reference pipeline's sensors'
encoding). Left out: the
link's wait in `poll` and the kernel (those are in `bench_serve.py`'s CPU
figures). Counted with the rest, though not serve's: the broker's side in
this process (reading the answers off the socketpair and building their
PUBACKs), a few k instructions a window.

The split comes from running the path again with one part replaced by the
result it gave (the features, the model's probabilities), so everything else
does the same work; the FFT, the dedupe key's XXH3 digest and simdjson's
parse of a JSON window are read off the profile by their functions.

    uv run --frozen python tools/bench_instructions.py
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from bench_record import Figure, Section, record
from bench_serve_parts import PREFIX, RATE, encoded
from bench_serve_systems import artifact_of, train_model
from vibration_core.features import extract_features
from vibration_core.raw import decode_raw
from vibration_infer.serve import batcher
from vibration_infer.serve.app import ServeApp
from vibration_infer.serve.settings import ServeSettings
from vibration_infer.serve.wire import codec
from vibration_infer.serve.wire.link import WireLink
from vibration_infer.serve.wire.parser import Parser
from vibration_train.simulator import simulate

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from vibration_infer.serve.responder import Active


class Load(NamedTuple):
    """One load the path runs at: how many windows a read brings, and how they are encoded."""

    label: str
    per_read: int
    warm_reads: int
    measured_reads: int
    json: bool = False

    @property
    def reads(self) -> str:
        """The windows a read brings, in words."""
        return "one window a read" if self.per_read == 1 else f"{self.per_read} windows a read"


HALL = Load("hall", 1, 150, 200)
"""A hall's load: each window alone."""
FLOOD = Load("flood", 64, 3, 6)
JSON_FLOOD = Load("JSON flood", 64, 2, 3, json=True)
"""The reference pipeline's sensors' encoding; fewer reads: making JSON is slow under valgrind."""
LOADS = (HALL, FLOOD, JSON_FLOOD)
BASELINE_WINDOWS = 100
"""The drift monitor's class baseline, shorter than serve's 2000 windows: the warm-up ends past it,
so the counted windows do what a pod that has served for a while does with each."""
PARTS = ("", "features", "model")
"""The runs: everything, then with the features and with the model call replaced by their results."""
BEFORE = (
    "before the trims (8e67b8f, the same count): 1219 k instructions a window at a hall's load, 652 k in "
    "a flood; what went first (to e56f4d8: 1066 k, 550 k): the dedupe key's CRC-32 (63 k a window with "
    "Debian's zlib, XXH3 takes 6 k), a tally and a labels() lookup per one-window batch in the metrics, "
    "frozen dataclasses for the per-window records (each field set through object.__setattr__, 3 us for a "
    "PUBACK), a regex per window for the machine's topics, numpy calls on one window's ten features to "
    "check them finite, and slices to put one row into the drift ring; then: a validated pydantic "
    "Prediction object per window (now a PredictionRow of fields checked where they come from, encoded "
    "by the same serializer: 18 k in a flood), model_dump_json's wrapper and str round trip (7 k), numpy's "
    "Python wrappers around one window's seven reductions (5 k at a hall's load)"
)
WHAT_IS_LEFT = (
    "what is left at a hall's load: the features (the FFT, and about 20 numpy calls on one window, each "
    "a few k of fixed cost) and the model call are more than half; the rest is CPython's fixed cost per "
    "window, about 290 calls a window (cProfile, C functions included; 130 a window in a flood) into "
    "serve's own code, numpy's Python wrappers, pydantic and prometheus_client, none above a few per cent"
)
CALLGRIND_ENV = "VIBRATION_BENCH_CALLGRIND"
"""Set in the child under valgrind: it switches counting on around the measured windows only."""


@dataclass(frozen=True)
class PathRun:
    """What one run of the path did."""

    windows: int
    predicted: int
    """Windows answered with a prediction (serve's own count) among the measured ones."""
    errors: int
    """Error messages published for them (none, on the bench's windows)."""
    unsettled: int
    """Answers left without the broker's PUBACK at the end (0: every answer was settled)."""

    @property
    def complete(self) -> bool:
        """Every measured window predicted, nothing refused, every answer settled."""
        return self.predicted == self.windows and not self.errors and not self.unsettled


def build_app(model: Path, work: Path) -> ServeApp:
    """Serve's app with `model` active (its wire link is not started: `SocketBroker` connects it)."""
    settings = ServeSettings(
        mqtt_url="mqtt://127.0.0.1:1",
        topic_prefix=PREFIX,
        node_name="instructions",
        artifact=artifact_of(model),
        card=model / "modelcard.json",
        target_file=work / "none.json",
        cache_dir=work / "cache",
        http_port=0,
        drift_baseline_windows=BASELINE_WINDOWS,
    )
    app = ServeApp(settings)
    app.install(app.load_initial())
    return app


class SocketBroker:
    """The broker's end of the link's socket: takes the link's answers and acknowledges them at once."""

    def __init__(self, app: ServeApp) -> None:
        self.link = link_of(app)
        ours, self._theirs = socket.socketpair()
        ours.setblocking(False)  # noqa: FBT003 - as the link's own socket
        self._theirs.setblocking(False)  # noqa: FBT003
        out = self.link._out  # noqa: SLF001 - the link's state, as its network thread sets it
        self.link._sock = ours  # noqa: SLF001
        self.link._write(out.connect(1, codec.Control(codec.CONNACK, receive_maximum=1024)))  # noqa: SLF001
        self._parser = Parser(1 << 24)
        self._buffer = bytearray(1 << 22)
        self._pubacks = [codec.puback_packet(i) for i in range(65536)]
        self.sent = 0

    def deliver(self, packets: bytes) -> None:
        """Hand the link one read, drain what it wrote, and send back the PUBACKs of its answers."""
        handle = self.link._handle  # noqa: SLF001 - what its network thread does with a read
        handle(self._parser.feed(packets), time.time_ns(), time.perf_counter_ns())
        self._drain()
        # The link sends as many answers as its in-flight limit allows; each PUBACK read frees the next.
        while answered := list(self.link._out.inflight):  # noqa: SLF001
            self.sent += len(answered)
            acks = self._parser.feed(b"".join(self._pubacks[i] for i in answered))
            handle(acks, time.time_ns(), time.perf_counter_ns())
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                if not self._theirs.recv_into(self._buffer):
                    return
            except BlockingIOError:
                return

    def close(self) -> None:
        """Close the broker's end."""
        self._theirs.close()


def link_of(app: ServeApp) -> WireLink:
    """The app's wire link (the default client), whose network thread's work the path does."""
    if not isinstance(app.link, WireLink):
        raise TypeError(f"serve's link is {type(app.link).__name__}, not the wire link")
    return app.link


def active_of(app: ServeApp) -> Active:
    """The model the app answers with."""
    active = app._active  # noqa: SLF001
    if active is None:
        raise RuntimeError("no model is active")
    return active


@contextlib.contextmanager
def replaced(app: ServeApp, part: str, results: collections.deque[np.ndarray]) -> Iterator[None]:
    """Inside the block, `part` ("features" or "model", or "" for none) returns its recorded results."""

    def recorded(windows: np.ndarray, *_: object) -> np.ndarray:
        n = 1 if windows.ndim == 1 else windows.shape[0]
        return np.concatenate([results.popleft() for _ in range(n)])

    backend = active_of(app).model.backend
    if part == "features":
        batcher.extract_features = recorded  # type: ignore[attr-defined,assignment]
    elif part == "model":
        backend.predict_proba = recorded  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:  # the module's function is the process's: the next run (or test) gets it back
        batcher.extract_features = extract_features  # type: ignore[attr-defined]
        vars(backend).pop("predict_proba", None)


def record_part(
    app: ServeApp, part: str, windows: Sequence[tuple[str, int, bytes]]
) -> collections.deque[np.ndarray]:
    """Each window's features or probabilities, one row each, as the path computes them."""
    active = active_of(app)
    rate = active.model.card.signal.sample_rate
    rows: collections.deque[np.ndarray] = collections.deque()
    for machine, _, payload in windows:
        features = extract_features(decode_raw(payload, machine).samples, rate)
        rows.append(features if part == "features" else active.model.backend.predict_proba(features))
    return rows


def run_path(
    model: Path, windows: Sequence[tuple[str, int, bytes]], load: Load, part: str, work: Path
) -> PathRun:
    """Run the path over `windows` at `load`; the measured ones (after its warm-up reads) are counted."""
    per_read = load.per_read
    app = build_app(model, work)
    packets = [
        codec.publish_packet(f"{PREFIX}/machines/{machine}/raw", payload, qos=1, packet_id=i % 65000 + 1)
        for i, (machine, _, payload) in enumerate(windows)
    ]
    reads = [b"".join(packets[i : i + per_read]) for i in range(0, len(packets), per_read)]
    warm = load.warm_reads
    results = record_part(app, part, windows) if part else collections.deque()
    broker = SocketBroker(app)
    try:
        with replaced(app, part, results):
            for read in reads[:warm]:
                broker.deliver(read)
            _, predicted, errors = app.metrics.totals()
            with counting():
                for read in reads[warm:]:
                    broker.deliver(read)
            _, predicted_after, errors_after = app.metrics.totals()
        unsettled = app.link.unacknowledged()
    finally:
        broker.close()
        link = link_of(app)
        with link._lock:  # noqa: SLF001
            link._close_socket()  # noqa: SLF001
        app.http._server.server_close()  # noqa: SLF001 - bound, never started: nothing to shut down
    measured = len(windows) - warm * per_read
    return PathRun(measured, predicted_after - predicted, errors_after - errors, unsettled)


@contextlib.contextmanager
def counting() -> Iterator[None]:
    """Under callgrind (the parent's child), count instructions inside the block only, then dump them."""
    if not os.environ.get(CALLGRIND_ENV):
        yield
        return
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
    yield
    subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)


def windows_for(load: Load) -> list[tuple[str, int, bytes]]:
    """The windows of one run: the warm-up's and the measured ones, with keys no other run used."""
    n = (load.warm_reads + load.measured_reads) * load.per_read
    data = simulate(n, seed=11, sample_rate=RATE, machines=8)
    return encoded(data, (load.per_read + load.json) * 10**15, json=load.json, n=n)


# --- the parent: each run in a child under callgrind ---------------------------------------


_TOTAL = re.compile(r"^\s*([\d,]+)\s.*PROGRAM TOTALS")
_LINE = re.compile(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.*)$")
FUNCTIONS = {
    "fft": re.compile(r"\(anonymous namespace\)::r2c\(.*pypocketfft"),
    "key": re.compile(r"[:?]xxh3_64_intdigest \["),
    "json": re.compile(r"\dParser_\d+parse\(.*csimdjson"),  # Cython numbers the methods
}
"""Inclusive costs read off the profile: pocketfft's transform, XXH3 of each payload, simdjson's parse."""


def parse_annotate(text: str) -> dict[str, int]:
    """The total, and the inclusive counts of `FUNCTIONS`, in `callgrind_annotate --inclusive=yes` output."""
    found = dict.fromkeys(("total", *FUNCTIONS), 0)
    for line in text.splitlines():
        if match := _TOTAL.match(line):
            found["total"] = int(match.group(1).replace(",", ""))
            continue
        if not (match := _LINE.match(line)):
            continue
        count, where = int(match.group(1).replace(",", "")), match.group(2)
        for name, pattern in FUNCTIONS.items():
            if pattern.search(where):
                found[name] = max(found[name], count)
    return found


def counted(model: Path, part: str, work: Path) -> list[tuple[dict[str, int], PathRun]]:
    """Run the path at each load in a child under callgrind; per load, its counts and what it did."""
    out = work / f"callgrind-{part or 'all'}.out"
    child = [sys.executable, __file__, "child", str(model), part or "-", str(work)]
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *child]
    env = {**os.environ, CALLGRIND_ENV: "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the path under callgrind failed: {done.stderr[-2000:]}")
    runs = [PathRun(**run) for run in json.loads(done.stdout.strip().splitlines()[-1])]
    # One dump per load, numbered in the order the child dumped them.
    dumps = sorted(work.glob(f"{out.name}.*"), key=lambda path: int(path.suffix[1:]))
    if len(dumps) != len(runs):
        raise RuntimeError(f"expected {len(runs)} callgrind dumps, found {len(dumps)}")
    found = []
    for dump, run in zip(dumps, runs, strict=True):
        annotate = ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)]
        text = subprocess.run(annotate, capture_output=True, text=True, check=True).stdout
        found.append((parse_annotate(text), run))
    return found


def figures(load: Load, counts: dict[str, dict[str, int]], windows: int) -> list[Figure]:
    """Instructions per window of one load, and where they go."""

    def per_window(value: int) -> float:
        return value / windows / 1000

    total = counts[""]["total"]
    features = total - counts["features"]["total"]
    model = total - counts["model"]["total"]
    fft, key, parse = counts[""]["fft"], counts[""]["key"], counts[""]["json"]
    rest = total - features - model - key - parse
    label = load.label

    def share(value: int) -> str:
        return f"{per_window(value):.0f} k ({value / total:.0%})"

    found = [
        Figure(f"{label}: instructions per window, {load.reads}", f"{per_window(total):.0f} k"),
        Figure(f"{label}: the features (of which the FFT {per_window(fft):.0f} k)", share(features)),
        Figure(f"{label}: the model call (ONNX Runtime)", share(model)),
        Figure(f"{label}: the dedupe key (XXH3 of the payload)", share(key)),
    ]
    if load.json:
        found.append(Figure(f"{label}: simdjson's parse of the JSON text", share(parse)))
    found.append(Figure(f"{label}: the rest (packets, decode, answers, metrics, drift, alerts)", share(rest)))
    return found


def main() -> int:
    """Train the reference model, count each run, record the section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-windows", type=int, default=1200, help="windows the model is trained on")
    args = parser.parse_args()
    command = "uv run --frozen python tools/bench_instructions.py"
    title = "serve's path in instructions per window (callgrind): the figures noise cannot move"
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        note = "valgrind is not installed here (Debian: apt-get install valgrind): no instruction counts"
        record(
            Section(
                "instructions", title, command, [Figure("instructions per window", "not measured")], [note]
            )
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="vibration-bench-instructions-") as tmp:
        work = Path(tmp)
        model = train_model(work, args.train_windows)
        # One child per part, as many at once as there are cores (each is one thread under valgrind).
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = dict(zip(PARTS, pool.map(lambda part: counted(model, part, work), PARTS), strict=True))
    found: list[Figure] = []
    for i, load in enumerate(LOADS):
        counts = {part: results[part][i][0] for part in PARTS}
        runs = [results[part][i][1] for part in PARTS]
        incomplete = [r for r in runs if not r.complete]
        if incomplete:
            raise RuntimeError(f"a run did not predict, or settle, every window: {incomplete}")
        if (counts[""]["json"] > 0) != load.json:  # a renamed function would count as nothing
            raise RuntimeError(f"{load.label}: simdjson's parse counted {counts['']['json']} instructions")
        found += figures(load, counts, runs[0].windows)
    notes = [
        (
            "serve's own objects in one process, a socketpair for the broker's socket: the link's packet "
            "handling, decode, features, model, answers and their PUBACKs, metrics, drift and alerts; not "
            "the wait in poll, the kernel or the broker (bench_serve.py's CPU figures have those)"
        ),
        (
            "split: the same run with the features, then the model's probabilities, replaced by the "
            "results they gave; the FFT and the XXH3 digest by their functions' inclusive counts"
        ),
        BEFORE,
        WHAT_IS_LEFT,
    ]
    record(Section("instructions", title, command, found, notes))
    return 0


def child(argv: list[str]) -> int:
    """Run the path at each load (under callgrind when the parent starts it); print what it did as JSON."""
    model, part, work = Path(argv[0]), argv[1].strip("-"), Path(argv[2])
    runs = [
        run_path(model, windows_for(load), load, part, Path(tempfile.mkdtemp(dir=work))).__dict__
        for load in LOADS
    ]
    print(json.dumps(runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(child(sys.argv[2:]) if sys.argv[1:2] == ["child"] else main())
