"""Durable files for the node cache: atomic writes that survive a power loss, and flock probes.

A gateway loses power without warning; what the cache writes (a last good
record, a kept card) must be whole or absent after the reboot, never half
written: each write goes to a temporary file, is synced, renamed into place,
and its directory synced (a rename is durable only then). A lock probe
(`exclusively`) says whether any process holds a file's ``flock``: the kernel
drops a lock with its holder, so it says who is alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

logger = logging.getLogger("vibration_infer.cache")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text`, durably: whole or not at all after a power loss."""
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def make_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents, each durably: synced into the directory that holds it."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
        fsync_dir(made.parent)


def fsync_dir(directory: Path) -> None:
    """Sync `directory`: a rename into it is durable only then (the reboot case)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def exclusively(path: Path) -> Iterator[bool]:
    """Whether no process holds a lock on `path`; if none does, this one holds it meanwhile."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def sweep_leftovers(parent: Path, stale_s: float) -> None:
    """Remove the directories under `parent` that no process holds and that have not changed for `stale_s`.

    The lock says who is alive; the age spares a directory made an instant ago and not locked yet,
    and one an older pod (before these locks) is still writing into.
    """
    for leftover in parent.iterdir():
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to judge
            if time.time() - last_change(leftover) < stale_s:
                continue
            with exclusively(leftover) as unheld:
                if unheld:
                    shutil.rmtree(leftover, ignore_errors=True)
                    logger.info("staging_leftover_removed", extra={"path": leftover})


def last_change(directory: Path) -> float:
    """The latest mtime of `directory` and its files (a download's partial file grows as it goes)."""
    return max([directory.stat().st_mtime, *(entry.stat().st_mtime for entry in directory.iterdir())])
