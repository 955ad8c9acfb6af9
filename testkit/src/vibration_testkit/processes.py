"""Stopping a child process the same way everywhere: ask, wait, then insist."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(process: subprocess.Popen[Any], *, timeout_s: float = 30, kill: bool = False) -> None:
    """SIGTERM (or, with `kill`, SIGKILL) `process`, wait up to `timeout_s`, then SIGKILL and reap it."""
    if process.poll() is not None:
        return
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
