"""Give freed heap memory back to the system, so RSS follows the load down again.

Each window arrives as a 16 KB bytes object on the MQTT link's network thread and dies
on the batcher's; batches allocate and free megabytes of numpy temporaries in
between. glibc's allocator keeps what was freed in its arenas, fragmented,
and the process's RSS ratchets up with every burst, to several times what
Python itself holds (tracemalloc). ``malloc_trim(0)`` returns the free pages
of every arena; called once a second it brings RSS back down after a flood,
at no measurable cost per window (docs/benchmarks.md: RSS after the flood and
two seconds later).

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


def _malloc_trim() -> _Trim | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: _Trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class MemoryTrimmer:
    """Calls ``malloc_trim(0)`` at most once per `interval_s` (0 turns it off)."""

    def __init__(self, interval_s: float) -> None:
        self._trim = _malloc_trim() if interval_s > 0 else None
        self._interval_s = interval_s
        self._next = 0.0
        if interval_s > 0 and self._trim is None:
            logger.info("memory_trim_unavailable", extra={"reason": "the C library has no malloc_trim"})

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
