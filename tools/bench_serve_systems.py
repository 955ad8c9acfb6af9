"""Starting the systems the serving bench measures: the models, serve, and the reference design.

`train_model` trains as a user does (`vibration-train simulate` and `fit`, or
`fit --format edgetpu`); `serve_process` runs `vibration-infer serve` on
`CORE` until ready; `reference_process` runs `reference_design.py` (the flow and
its one inference server) on the same core.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

from bench_serve_parts import CORE, PREFIX, TOOLS
from vibration_core.modelcard import ModelCard
from vibration_testkit.net import free_port
from vibration_testkit.processes import stop

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from vibration_testkit.mosquitto import Mosquitto

BIN = Path(sys.executable).parent


def train_model(work: Path, windows: int, *, edgetpu: bool = False) -> Path:
    """The reference model (150 trees, depth 5) from `vibration-train`, as users train it, or the INT8 one."""
    data, out = work / "train.parquet", work / ("model-int8" if edgetpu else "model")
    train = str(BIN / "vibration-train")
    if not data.exists():
        simulate_argv = [train, "simulate", "--windows", str(windows), "--out", str(data)]
        subprocess.run(simulate_argv, check=True, capture_output=True)
    fit = [
        train,
        "fit",
        "--data",
        str(data),
        "--out",
        str(out),
        *(["--format", "edgetpu"] if edgetpu else []),
    ]
    subprocess.run(fit, check=True, capture_output=True)
    return out


def artifact_of(model: Path) -> Path:
    """The model file the card of directory `model` names."""
    return model / ModelCard.load(model / "modelcard.json").artifact.filename


@contextlib.contextmanager
def serve_process(
    broker: Mosquitto, model: Path, work: Path, extra: list[str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """`vibration-infer serve` pinned to one core; yields the process and its start-to-ready seconds."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        str(BIN / "vibration-infer"), "serve", "--mqtt-url", broker.url, "--topic-prefix", PREFIX,
        "--node-name", "bench", "--artifact", str(artifact_of(model)),
        "--card", str(model / "modelcard.json"),
        "--http-host", "127.0.0.1", "--http-port", str(port), "--target-file", str(work / "none.json"),
        "--cache-dir", str(work / "cache"), "--log-level", "WARNING", *(extra or []),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBRATION_")} | {"OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(
        argv,
        env=env,
        stderr=(work / "serve.log").open("wb"),
        preexec_fn=lambda: os.sched_setaffinity(0, {CORE}),  # noqa: PLW1509 - no threads yet,
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
        stop(process)


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
