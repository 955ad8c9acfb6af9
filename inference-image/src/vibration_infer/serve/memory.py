"""Give freed heap memory back to the system, so RSS follows the load down again.

Each window arrives as a 16 KB bytes object on the MQTT link's network thread and dies
on the batcher's; batches allocate and free megabytes of numpy temporaries in
between. glibc's allocator keeps what was freed in its arenas, fragmented,
and the process's RSS ratchets up with every burst, to several times what
Python itself holds (tracemalloc). ``malloc_trim(0)`` returns the free pages
of every arena; called once a second it brings RSS back down after a flood,
at no measurable cost per window (docs/benchmarks.md: RSS after the flood and
two seconds later).

Because the trim returns memory, free() need not: an active trimmer raises
glibc's trim threshold (8 MB) and fixes its mmap threshold (32 MB) with
``mallopt``. Left to its defaults, glibc gives the top of the heap back at
many frees and serves some batch temporaries (a 64-window block is 1 MB)
with fresh mappings, and the next batch faults every page in again: about
14 page faults a window in a binary flood, some 15 us of its CPU
(docs/benchmarks.md). The once-a-second trim still brings RSS down after a
flood, except the free top of each thread's heap below the trim threshold,
which ``malloc_trim`` leaves: hence 8 MB, not more (with 64 MB, RSS two
seconds after a flood settled about 15 MB higher; with 8 MB as without).

Where the C library is not glibc (musl, macOS), there is no ``malloc_trim``
and `MemoryTrimmer` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from typing import Protocol

logger = logging.getLogger(__name__)


class _Trim(Protocol):
    def __call__(self, pad: int, /) -> int: ...


class _Mallopt(Protocol):
    def __call__(self, param: int, value: int, /) -> int: ...


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_TRIM_THRESHOLD = 8 << 20
_MMAP_THRESHOLD = 32 << 20
"""glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)."""


def _glibc() -> tuple[_Trim, _Mallopt] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: _Trim = libc.malloc_trim
        mallopt: _Mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    return trim, mallopt


class MemoryTrimmer:
    """``malloc_trim(0)`` at most once per `interval_s` (0: off); active, it raises free()'s thresholds."""

    def __init__(self, interval_s: float) -> None:
        glibc = _glibc() if interval_s > 0 else None
        self._trim = glibc[0] if glibc else None
        self._interval_s = interval_s
        self._next = 0.0
        if interval_s > 0 and glibc is None:
            logger.info("memory_trim_unavailable", extra={"reason": "the C library has no malloc_trim"})
        if glibc is not None:
            mallopt = glibc[1]
            if not (
                mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) and mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
            ):
                logger.warning(
                    "mallopt_refused",
                    extra={"trim_threshold": _TRIM_THRESHOLD, "mmap_threshold": _MMAP_THRESHOLD},
                )

    @property
    def next_due(self) -> float:
        """`time.monotonic` of the next trim; infinity when trimming is off."""
        return self._next if self._trim is not None else float("inf")

    @property
    def active(self) -> bool:
        """Whether trimming happens here (glibc, and an interval above 0)."""
        return self._trim is not None

    def maybe_trim(self, now: float | None = None) -> bool:
        """Trim if the interval passed since the last trim; return whether it trimmed."""
        if self._trim is None:
            return False
        now = time.monotonic() if now is None else now
        if now < self._next:
            return False
        self._next = now + self._interval_s
        self._trim(0)
        return True
