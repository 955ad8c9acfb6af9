"""The node-local model cache: content-addressed entries, their staging, pins and eviction.

Layout under the cache root (a hostPath volume, so it survives the pod and a
reboot)::

    {root}/{model_id}/{sha256}/{artifact filename}
    {root}/{model_id}/{sha256}/modelcard.json
    {root}/{model_id}/{sha256}/.card-{version}-{card digest}.json   another card that passed with these bytes
    {root}/{model_id}/{sha256}/.pin    locked while a validation holds the entry
    {root}/{model_id}/last-good.json
    {root}/.slots/{namespace}/{name}.json   the same record per VibrationModel
    {root}/.staging/{random}/           downloads in progress, each locked by its process

An entry is addressed by the artifact's digest, so a target whose digest is
already here needs no download: that is what lets a node that reboots while
the registry is unreachable validate and serve its model. Entries appear by
renaming a complete staging directory into place. Eviction keeps the most
recently used entries and never the last good one, nor an entry a validation
pins: a candidate that passed but waits for its shadow run to end before it
is marked last good (`pin`). A pin is a shared ``flock`` on the entry's
``.pin`` file, so it ends with its holder: a pod that crashes or is killed
mid-run never pins an entry for good.

What passed (``last-good.json``, the slots' records, the cards kept beside an
entry) is `last_good`'s: `ModelCache` is built on its `LastGoodRecords`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vibration_core.api import VERSION_PATTERN
from vibration_core.errors import ModelCardError
from vibration_core.modelcard import CARD_FILENAME, ModelCard, sha256_file
from vibration_infer.durable import exclusively, fsync_dir, sweep_leftovers
from vibration_infer.last_good import LastGoodRecords

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

logger = logging.getLogger(__name__)

_PIN = ".pin"
_STAGING_STALE_S = 24 * 3600.0
"""Unchanged for this long and held by no process, a staging directory is a leftover. Long: a pod
of a release before these locks holds none, and wrote its download a whole MiB at a time, so on a
slow uplink its file stays unchanged for minutes while it is very much alive."""
_STAGING = ".staging"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CachedModel:
    """One complete, digest-addressed entry."""

    model_id: str
    sha256: str
    artifact: Path
    card_path: Path

    def card(self) -> ModelCard:
        """Read the entry's model card: the one its bytes came with."""
        return ModelCard.load(self.card_path)

    def kept_card_path(self, card: ModelCard) -> Path:
        """Where `card`, other than the entry's own, is kept.

        Hidden (an artifact's name never starts with a dot), and named by the card's version and
        its own digest: two cards never share a file, so keeping one never rewrites another.
        """
        digest = hashlib.sha256(card.to_json().encode()).hexdigest()[:16]
        return self.card_path.with_name(f".card-{card.version}-{digest}.json")

    def kept_cards(self, version: str) -> list[Path]:
        """The kept cards of `version`, the latest first."""
        if not re.fullmatch(VERSION_PATTERN, version):  # a glob of its own choosing must not match others
            return []
        paths = self.card_path.parent.glob(f".card-{version}-*.json")
        return sorted(paths, key=lambda path: path.stat().st_mtime, reverse=True)


class Pin:
    """A shared lock on an entry's ``.pin`` file: eviction leaves the entry alone while it is held."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        """End the pin (once promoted or given up); releasing twice does nothing."""
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def artifact_filename(card: ModelCard) -> str:
    """The card's artifact file name, refused unless it is a plain name."""
    name = card.artifact.filename
    if name in {"", ".", "..", CARD_FILENAME} or "/" in name or "\\" in name or name.startswith("."):
        raise ModelCardError("artifact.filename", f"{name!r} is not a plain file name")
    return name


class ModelCache(LastGoodRecords):
    """The cache under one root directory."""

    def __init__(self, root: Path, *, keep: int = 3) -> None:
        super().__init__(root)
        self.keep = keep

    def find(self, sha256: str, *, verify: bool = True) -> CachedModel | None:
        """The entry for an artifact digest, or None.

        With `verify`, the artifact is hashed again: a bit flip on the node's
        disk drops the entry (it is fetched again) instead of being served.
        """
        if not _SHA256.match(sha256) or not self.root.is_dir():
            return None
        for directory in sorted(self.root.glob(f"*/{sha256}")):
            entry = self._entry(directory)
            if entry is None:
                continue
            if verify and sha256_file(entry.artifact) != sha256:
                logger.warning("cache_entry_corrupt", extra={"model_id": entry.model_id, "sha256": sha256})
                shutil.rmtree(directory, ignore_errors=True)
                continue
            _touch(directory)
            return entry
        return None

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh directory on the cache's file system, removed on exit unless stored.

        Locked (``flock``) for its life: a power loss or a SIGKILL skips the removal, and the next
        staging removes such leftovers, those no process holds (`durable.sweep_leftovers`).
        """
        directory = self.root / _STAGING / uuid.uuid4().hex
        directory.mkdir(parents=True)
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            sweep_leftovers(directory.parent, _STAGING_STALE_S)
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            os.close(fd)

    def store(self, staged: Path, card: ModelCard) -> CachedModel:
        """Move a staged directory (artifact and card, digest already checked) into place."""
        final = self.root / card.model_id / card.artifact.sha256
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            staged.rename(final)
        except OSError:
            # Already there (another validation got it first): same digest, same bytes.
            # An incomplete leftover (a crash before this code existed) is replaced.
            if self._entry(final) is None:
                shutil.rmtree(final, ignore_errors=True)
                staged.rename(final)
        fsync_dir(final.parent)
        entry = self._entry(final)
        if entry is None:
            raise ModelCardError(str(final), "cache entry is incomplete after storing it")
        logger.info(
            "cache_stored", extra={"model_id": card.model_id, "version": card.version, "sha256": entry.sha256}
        )
        return entry

    def remove(self, entry: CachedModel) -> None:
        """Drop an entry (one whose bytes turned out to be unusable); never the last good one."""
        if entry.sha256 in self._protected(entry.model_id):
            return
        shutil.rmtree(entry.artifact.parent, ignore_errors=True)

    def pin(self, entry: CachedModel) -> Pin:
        """Keep `entry` from eviction, by this process or any other on the node, until released.

        Shared, so pods of two namespaces may pin one digest; the kernel drops the lock when its
        holder dies, so a crashed run's pin ends with it.
        """
        fd = os.open(entry.artifact.parent / _PIN, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            os.close(fd)
            raise
        return Pin(fd)

    def evict(self, model_id: str) -> list[str]:
        """Remove all but the `keep` most recently used digests, never the last good; return the removed."""
        base = self.root / model_id
        if not base.is_dir():
            return []
        protected = self._protected(model_id)
        entries = [d for d in base.iterdir() if d.is_dir() and _SHA256.match(d.name)]
        entries.sort(key=_recency, reverse=True)
        removed = []
        for directory in entries[self.keep :]:
            if directory.name in protected or _pinned(directory):
                continue
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory.name)
        if removed:
            logger.info(
                "cache_evicted", extra={"model_id": model_id, "digests": ",".join(d[:12] for d in removed)}
            )
        return removed

    def _entry(self, directory: Path) -> CachedModel | None:
        card_path = directory / CARD_FILENAME
        try:
            card = ModelCard.load(card_path)
            artifact = directory / artifact_filename(card)
        except ModelCardError:
            return None
        if card.artifact.sha256 != directory.name or not artifact.is_file():
            return None
        return CachedModel(card.model_id, directory.name, artifact, card_path)


def _recency(directory: Path) -> tuple[bool, float]:
    """How recently an entry was used, for eviction: the later, the greater.

    A clock that ran ahead (a gateway without an RTC battery, before NTP set it) leaves mtimes in
    the future. Such an entry was last used before the clock was set right, so before every entry
    with an honest mtime: taken as they are, or clamped to now, they outrank the newest entry and
    its own run would evict it. A use (`ModelCache.find`) dates it honestly again.
    """
    mtime = directory.stat().st_mtime
    return mtime <= time.time(), mtime


def _pinned(directory: Path) -> bool:
    """Whether a live validation holds `directory`'s pin (`ModelCache.pin`)."""
    try:
        with exclusively(directory / _PIN) as unheld:
            return not unheld
    except OSError:
        return False  # never pinned


def _touch(directory: Path) -> None:
    # The directory's mtime orders eviction: a used entry counts as recent.
    with contextlib.suppress(OSError):
        os.utime(directory)
