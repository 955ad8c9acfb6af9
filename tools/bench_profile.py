"""Where a process spends its CPU, for the benchmark page: py-spy by function, perf by library.

`Sampler` attaches py-spy (non-blocking, so the process is not paused for each
sample) for a number of seconds; `Profile.top` then sums the samples in which a
thread was running Python code (waits in ``poll`` and on queues excluded) by
the function on the stack, each function counted once per sample, so a share
is inclusive: ``features`` holds the FFT it calls.

`PerfSampler` counts where the CPU time went by shared object (the CPython
interpreter, the kernel, ONNX Runtime, numpy, ...) with Linux perf, where it is
installed and allowed: what py-spy cannot say (it sees Python frames only, and
counts a thread in a system call as busy).
"""

from __future__ import annotations

import re
import shutil
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


LIBRARY_NAMES = {
    "libpython": "the CPython interpreter",
    "[kernel.kallsyms]": "the kernel (wake-ups, sockets)",
    "onnxruntime": "ONNX Runtime",
    "_multiarray_umath": "numpy",
    "libc.so": "libc (malloc, memcpy)",
    "pypocketfft": "pocketfft (the FFT)",
    "_pydantic_core": "pydantic",
    "_xxhash": "xxhash (a window's dedupe key)",
}


class PerfSampler:
    """perf on `pid` for `seconds`; `result` gives the share of CPU time in each shared object."""

    def __init__(self, pid: int, seconds: float, rate_hz: int = 2000) -> None:
        self._out = Path(tempfile.mkdtemp(prefix="vibration-bench-perf-")) / "perf.data"
        self._perf = shutil.which("perf")
        argv = [str(self._perf), "record", "--event", "cpu-clock", "--freq", str(rate_hz), "--pid", str(pid),
                "--output", str(self._out), "--", "sleep", str(seconds)]  # fmt: skip
        self._process = (
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._perf
            else None
        )

    def result(self) -> list[tuple[str, float]] | None:
        """(library, share) by decreasing share; None when perf is missing or may not sample here."""
        if self._process is None or self._process.wait(timeout=120) != 0 or not self._out.exists():
            return None
        report = subprocess.run(
            [str(self._perf), "report", "--input", str(self._out), "--sort", "dso", "--stdio"],
            capture_output=True,
            text=True,
            check=False,
        )
        shares = parse_perf(report.stdout)
        return shares or None


def parse_perf(text: str) -> list[tuple[str, float]]:
    """Read ``perf report --sort dso --stdio``: each library's share, named for a reader."""
    shares: list[tuple[str, float]] = []
    for line in text.splitlines():
        match = re.fullmatch(r"\s*([0-9.]+)%\s+(\S+)\s*", line)
        if match:
            library = match[2]
            name = next((v for k, v in LIBRARY_NAMES.items() if library.startswith(k)), library.split(".")[0])
            shares.append((name, float(match[1]) / 100))
    return shares
