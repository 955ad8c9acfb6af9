"""The word of a cluster set-up that runs beside the tests (`.ci/run`): a file it writes when done.

`.ci/run` starts the cluster and builds the images while `make check` and the
tests that need no cluster run; the set-up writes its outcome into one file
through a rename (a reader never sees half of it): ``ready``, or ``failed``,
its exit status and the last lines of its log. The e2e tests wait for it,
and stop waiting when the set-up's process is gone without a word (killed by
SIGKILL or the OOM killer, it writes none).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

READY = "ready"
ENV = "VIBRATION_E2E_CLUSTER_STATUS"
"""The variable that names the file; unset, nothing waits (a cluster given by KUBECONFIG is up)."""
PID_ENV = "VIBRATION_E2E_CLUSTER_PID"
"""The variable that names the set-up's process, when known."""
WAIT_S = 3600.0
"""How long to wait for it: longer than any set-up measured here (17 min from nothing)."""


def read_status(
    path: Path, *, timeout_s: float = WAIT_S, say: Callable[[str], None] = print, pid: int | None = None
) -> str:
    """`path`'s text once it exists (`READY`, or what failed); when it never comes, says so.

    `pid`, the set-up's process: once it is gone and `path` still does not exist, the wait ends
    (should the pid be reused by another process meanwhile, the wait runs to `timeout_s`).
    `say` hears a line when the wait starts and when it ends, with how long it took.
    """
    started = time.monotonic()
    if not path.exists():
        say(f"e2e: waiting for the cluster's set-up to finish ({path})")
    while not path.exists():
        if pid is not None and not running(pid) and not path.exists():  # its rename, or nothing
            said = f"its set-up (pid {pid}) ended without a word ({path} does not exist): killed?"
            say(f"e2e: {said}")
            return said
        if time.monotonic() - started > timeout_s:
            said = f"no word from its set-up in {timeout_s:g} s ({path} does not exist)"
            say(f"e2e: {said}")
            return said
        time.sleep(min(1.0, timeout_s / 10))
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    first = text.splitlines()[0] if text else "nothing"
    say(f"e2e: the cluster's set-up says {first!r} after {time.monotonic() - started:.0f} s of waiting")
    return text or f"{path} is empty"


def running(pid: int) -> bool:
    """Whether process `pid` runs (an exited one its parent has not reaped yet does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # gone (CI's cluster runs on Linux: /proc is there)
        return False
    return state not in {"Z", "X"}
