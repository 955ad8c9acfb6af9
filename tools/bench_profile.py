"""Where a process spends its CPU: py-spy samples, summed by function, for the benchmark page.

`start` attaches py-spy (non-blocking, so the process is not paused for each
sample) for a number of seconds; `Profile.top` then sums the samples in which a
thread was running Python code (waits in ``poll`` and on queues excluded) by
the function on the stack, each function counted once per sample, so a share
is inclusive: ``features`` holds the FFT it calls.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PY_SPY = Path(sys.executable).parent / "py-spy"
_WAITS = ("wait_ready", "_readable", "select", "poll", "collect", "Condition.wait", "Event.wait")
_ENTRY_POINTS = (
    "Thread.",
    "<module> ",
    "main cli.py",
    "_serve cli.py",
    "run main.py",
    "serve main.py",
    "WireLink._run ",
    "WireLink._session ",
)
"""Frames under which everything runs: their share says nothing."""


@dataclass
class Profile:
    """Samples of one process, by function."""

    samples: int
    """Samples in which some thread ran Python code (not waiting)."""
    by_function: Counter[str]

    def top(self, n: int) -> list[tuple[str, float]]:
        """The `n` functions with the largest inclusive share of the running samples."""
        wanted = [(k, v) for k, v in self.by_function.most_common() if not k.startswith(_ENTRY_POINTS)]
        return [(name, count / self.samples) for name, count in wanted[:n]]


class Sampler:
    """py-spy on `pid` for `seconds`; `result` waits for it and reads the samples."""

    def __init__(self, pid: int, seconds: float, rate_hz: int = 500) -> None:
        self._out = Path(tempfile.mkdtemp(prefix="vibration-bench-profile-")) / "samples.txt"
        self._process = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate",
             str(rate_hz), "--nonblocking", "--threads", "--format", "raw", "--output", str(self._out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def result(self) -> Profile | None:
        """The profile, or None when py-spy could not attach (no ptrace permission, for one)."""
        if self._process.wait(timeout=120) != 0 or not self._out.exists():
            return None
        return parse(self._out.read_text())


def parse(text: str) -> Profile:
    """Read py-spy's raw (collapsed-stack) output."""
    by_function: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0] for f in stack.split(";")[1:]]
        if not frames or frames[-1].split(" ")[0].endswith(_WAITS):
            continue
        samples += int(count)
        for name in dict.fromkeys(frames):
            by_function[name] += int(count)
    return Profile(samples, by_function)
