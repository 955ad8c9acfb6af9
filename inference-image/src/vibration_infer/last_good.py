"""What passed validation on this node: the last good records, per model and per slot, and kept cards.

`ModelCache` (`cache`, whose docstring has the layout) is built on
`LastGoodRecords`: the entries' files, staging, pins and eviction are there,
the records of what passed are here, and eviction asks them what it must
keep. ``last-good.json`` is replaced atomically and only after a passed
validation; a failed one never touches it.

The entry's ``modelcard.json`` is the card its bytes came with. The same bytes
may pass again under another card (a retry under a new version, or another
namespace's VibrationModel with a mended card): that card is kept beside it,
named by its version and its own digest (`CachedModel.kept_card_path`), and the
records of that pass point there. No pass ever rewrites a card another record
reads; `ModelCache.card_of` finds a version's card for an offline validation.

A *slot* is the VibrationModel a target came from, `namespace/name`. The last
good record is kept under it too, so a pod whose target fails before its card
is known (the registry is unreachable, say) still finds what it served last,
and not what a VibrationModel of the same name in another namespace (a staging
hall on the same gateways) promoted. Pods of operators before the namespace
came to the pod (`POD_NAMESPACE`) wrote ``.slots/{name}.json``: a slot with no
record of its own reads that one, as those pods did, until it promotes one.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError

from vibration_core.api import NAME_PATTERN
from vibration_core.errors import ModelCardError
from vibration_core.modelcard import ModelCard
from vibration_infer.durable import write_atomic

if TYPE_CHECKING:
    from vibration_infer.cache import CachedModel

# One logger for the node cache, whichever of its modules logs (as `durable`'s).
logger = logging.getLogger("vibration_infer.cache")

LAST_GOOD_FILENAME = "last-good.json"
_SLOTS = ".slots"
NAMESPACE_PATTERN = NAME_PATTERN
"""A namespace is a DNS label, as a VibrationModel's name is."""
_LABEL = NAME_PATTERN.removeprefix("^").removesuffix("$")
SLOT_PATTERN = rf"^({_LABEL}/)?{_LABEL}$"
"""A slot: a VibrationModel's name, after its namespace and a slash when that is known."""


def slot_of(name: str, namespace: str | None) -> str:
    """The slot of the VibrationModel `name` in `namespace`; its name alone where the namespace is unknown."""
    return f"{namespace}/{name}" if namespace else name


class LastGood(BaseModel):
    """The version that last passed validation on this node (``last-good.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str
    version: str
    sha256: str
    artifact: Path
    card: Path
    validated_at: datetime
    node: str | None = None


class LastGoodRecords:
    """The records of what passed under one cache root; `ModelCache` adds the entries they name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def last_good(self, model_id: str) -> LastGood | None:
        """The last version of `model_id` that passed validation here, if its files are still present."""
        return self._read_record(self.root / model_id / LAST_GOOD_FILENAME)

    def last_good_of_slot(self, slot: str) -> LastGood | None:
        """The last version that passed here for the VibrationModel of `slot`, if still present.

        A namespaced slot with no record of its own reads the record of its name alone, which
        pods before the namespace wrote (the module's docstring).
        """
        path = self._slot_path(slot)
        record = self._read_record(path)
        _, slash, name = slot.rpartition("/")
        if record is None and slash and not path.exists():
            record = self._read_record(self._slot_path(name))
            if record is not None:
                logger.info("last_good_of_unnamespaced_slot", extra={"slot": slot, "version": record.version})
        return record

    def _slot_path(self, slot: str) -> Path:
        if not re.fullmatch(SLOT_PATTERN, slot):  # a path of its own choosing must not leave .slots
            raise ValueError(f"slot {slot!r} is not [namespace/]name of DNS labels")
        return self.root / _SLOTS / f"{slot}.json"

    def mark_good(
        self, entry: CachedModel, card: ModelCard, *, node: str | None = None, slot: str | None = None
    ) -> LastGood:
        """Record `entry`, described by `card`, as the last good version; call only after a passed validation.

        Durably, as every write here: a gateway loses power without warning, and must find its
        last good version whole when it boots offline. A `card` other than the entry's own (the
        registry's, for the same artifact, under another version or mended) is kept beside it
        and the record points there: no card another record reads is rewritten.
        """
        card_path = entry.card_path
        if entry.card() != card:
            card_path = entry.kept_card_path(card)
            write_atomic(card_path, card.to_json())
        record = LastGood(
            model_id=card.model_id,
            version=card.version,
            sha256=entry.sha256,
            artifact=entry.artifact,
            card=card_path,
            validated_at=datetime.now(UTC),
            node=node,
        )
        text = record.model_dump_json(indent=2) + "\n"
        write_atomic(self.root / card.model_id / LAST_GOOD_FILENAME, text)
        if slot is not None:
            write_atomic(self._slot_path(slot), text)
        logger.info(
            "last_good_marked",
            extra={
                "model_id": record.model_id,
                "version": record.version,
                "sha256": record.sha256,
                "slot": slot,
            },
        )
        return record

    def card_of(self, entry: CachedModel, version: str | None, slot: str | None = None) -> ModelCard | None:
        """The card `entry`'s bytes passed under as `version` on this node; None when there is none.

        The slot's own last good card first (another namespace may have passed a mended card of the
        same version), then the card the bytes came with, then the latest kept card of `version`.
        Without a version, the entry's own card.
        """
        if version is None:
            return entry.card()
        good = self.last_good_of_slot(slot) if slot is not None else None
        if good is not None and (good.sha256, good.version) == (entry.sha256, version):
            with contextlib.suppress(ModelCardError):
                return ModelCard.load(good.card)
        own = entry.card()  # read only when the slot's own record did not answer
        if own.version == version:
            return own
        for path in entry.kept_cards(version):
            try:
                card = ModelCard.load(path)
            except ModelCardError as exc:
                logger.warning("cache_kept_card_unreadable", extra={"path": path, "reason": str(exc)})
                continue
            if card.version == version and card.artifact.sha256 == entry.sha256:
                return card
        return None

    def _protected(self, model_id: str) -> set[str]:
        """Digests eviction must keep: the last good of `model_id` and of every slot."""
        records = [self.last_good(model_id)]
        slots = self.root / _SLOTS
        if slots.is_dir():
            paths = [*slots.glob("*.json"), *slots.glob("*/*.json")]  # before namespaces, and after
            records += [self._read_record(path) for path in paths]
        return {record.sha256 for record in records if record is not None}

    def _read_record(self, path: Path) -> LastGood | None:
        try:
            record = LastGood.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            logger.warning("last_good_unreadable", extra={"path": path, "reason": type(exc).__name__})
            return None
        if not (record.artifact.is_file() and record.card.is_file()):
            logger.warning("last_good_missing_files", extra={"path": path, "sha256": record.sha256})
            return None
        return record
