"""The word of a cluster set-up that runs beside the tests (`.ci/run`): a file it writes when done.

`.ci/run` starts the cluster and builds the images while `make check` and the
tests that need no cluster run; the set-up writes its outcome into one file
through a rename (a reader never sees half of it): ``ready``, or ``failed``,
its exit status and the last lines of its log. The e2e tests wait for it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

READY = "ready"
ENV = "VIBRATION_E2E_CLUSTER_STATUS"
"""The variable that names the file; unset, nothing waits (a cluster given by KUBECONFIG is up)."""
WAIT_S = 3600.0
"""How long to wait for it: longer than any set-up measured here (17 min from nothing)."""


def read_status(path: Path, *, timeout_s: float = WAIT_S, say: Callable[[str], None] = print) -> str:
    """`path`'s text once it exists (`READY`, or what failed); when it never comes, says so.

    `say` hears a line when the wait starts and when it ends, with how long it took.
    """
    started = time.monotonic()
    if not path.exists():
        say(f"e2e: waiting for the cluster's set-up to finish ({path})")
    while not path.exists():
        if time.monotonic() - started > timeout_s:
            return f"no word from its set-up in {timeout_s:g} s ({path} does not exist)"
        time.sleep(min(1.0, timeout_s / 10))
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    first = text.splitlines()[0] if text else "nothing"
    say(f"e2e: the cluster's set-up says {first!r} after {time.monotonic() - started:.0f} s of waiting")
    return text or f"{path} is empty"
