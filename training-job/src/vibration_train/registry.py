"""Publish model versions to a registry and list them: a directory or an S3 bucket.

Layout: ``<prefix>/<model-id>/<version>/<artifact>`` and, next to it,
``modelcard.json``. The artifact is written first and the card last, so a
reader that finds a card also finds its artifact; a version whose card is
present is published and is never overwritten with other bytes. The two
backends implement the small `Registry` protocol and are chosen by URI in
`open_registry`. No message, log line or exception carries a credential.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Protocol

from vibration_core.errors import ContractMismatchError, ModelCardError
from vibration_core.modelcard import CARD_FILENAME, ModelCard, check_extractor, sha256_file
from vibration_train.errors import TrainingError

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)


class ModelDirError(TrainingError):
    """A model directory whose card and artifact do not belong together."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(f"model dir {path} is inconsistent: {detail}")


class RegistryError(TrainingError):
    """Root of the registry errors: `uri` names the registry, `detail` the problem."""

    def __init__(self, uri: str, detail: str) -> None:
        self.uri, self.detail = uri, detail
        super().__init__(f"registry {uri}: {detail}")


class RegistryConfigError(RegistryError):
    """A registry URI, endpoint or option that cannot be used as given."""


class RegistryUnavailableError(RegistryError):
    """The registry did not answer: connection refused, timed out, or a server error."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials or the operation."""


class BucketNotFoundError(RegistryError):
    """The bucket is missing; publish creates it only when asked to."""

    def __init__(self, uri: str, bucket: str) -> None:
        self.bucket = bucket
        super().__init__(
            uri, f"bucket {bucket!r} does not exist (create it, or publish with --create-bucket)"
        )


class VersionConflictError(RegistryError):
    """The version is published with other bytes; nothing was written."""

    def __init__(
        self, model_id: str, version: str, existing_sha256: str, new_sha256: str, *, uri: str
    ) -> None:
        self.model_id, self.version = model_id, version
        self.existing_sha256, self.new_sha256 = existing_sha256, new_sha256
        what = (
            f"with artifact sha256 {existing_sha256}, this one has {new_sha256}"
            if existing_sha256 != new_sha256
            else "with the same artifact but a different model card"
        )
        super().__init__(uri, f"{model_id} {version} is already published {what}; refusing to overwrite it")


class _ObjectMissingError(Exception):
    """Internal: the object asked for does not exist (a normal answer, not a failure)."""


class Registry(Protocol):
    """Keys are ``/``-separated and relative to the registry's root or prefix."""

    @property
    def uri(self) -> str:
        """The registry's URI, without credentials."""

    def uri_for(self, key: str) -> str:
        """The URI a reader fetches `key` from."""

    def ensure_ready(self, *, create: bool) -> None:
        """Check that the registry can take writes; create its bucket when `create`."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes, None when it does not exist."""

    def size(self, key: str) -> int | None:
        """The object's size, None when it does not exist."""

    def put(self, key: str, source: Path, content_type: str) -> None:
        """Store a file's bytes under `key`, replacing any object there as a whole."""

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    def list_keys(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix`."""


def read_model_dir(model_dir: Path) -> tuple[ModelCard, Path]:
    """The card of a model directory and its artifact, after checking they belong together."""
    try:
        card = ModelCard.load(model_dir / CARD_FILENAME)
        # Refused here too, so a model the nodes would refuse never reaches the registry.
        check_extractor(card)
    except (ModelCardError, ContractMismatchError) as exc:
        raise ModelDirError(model_dir, str(exc)) from exc
    name = card.artifact.filename
    if name in {"", ".", "..", CARD_FILENAME} or "/" in name or "\\" in name:
        raise ModelDirError(
            model_dir, f"the card names {name!r} as its artifact, which is no plain file name"
        )
    artifact = model_dir / name
    if not artifact.is_file():
        raise ModelDirError(model_dir, f"the artifact {name} named by the card is missing")
    size, digest = artifact.stat().st_size, sha256_file(artifact)
    if (size, digest) != (card.artifact.size_bytes, card.artifact.sha256):
        raise ModelDirError(
            model_dir,
            f"{name} has sha256 {digest} and {size} bytes, the card says "
            f"{card.artifact.sha256} and {card.artifact.size_bytes} bytes",
        )
    return card, artifact


@dataclass(frozen=True)
class PublishedModel:
    """One model version in a registry."""

    card: ModelCard
    artifact_uri: str
    card_uri: str
    already_published: bool = False
    """True when publish found this very version there already and wrote nothing."""

    @property
    def sha256(self) -> str:
        """Digest of the artifact, as its card states it."""
        return self.card.artifact.sha256

    @property
    def size_bytes(self) -> int:
        """Size of the artifact, as its card states it."""
        return self.card.artifact.size_bytes


@dataclass(frozen=True)
class UnreadableCard:
    """A card in the registry that `list_versions` skipped, and why."""

    uri: str
    reason: str


@dataclass(frozen=True)
class Listing:
    """The readable versions, by model id then creation time, and the skipped cards."""

    models: list[PublishedModel] = field(default_factory=list)
    unreadable: list[UnreadableCard] = field(default_factory=list)


def version_keys(card: ModelCard) -> tuple[str, str]:
    """Where a version's artifact and card live in a registry: ``<model-id>/<version>/<file>``."""
    base = f"{card.model_id}/{card.version}"
    return f"{base}/{card.artifact.filename}", f"{base}/{CARD_FILENAME}"


def publish(model_dir: Path, registry: Registry, *, create_bucket: bool = False) -> PublishedModel:
    """Upload a model directory's artifact, then its card, under ``<model-id>/<version>/``.

    Publishing the same version with the same bytes again is a no-op (an
    artifact missing or changed under its card is written again); with other
    bytes it raises `VersionConflictError` before writing anything. When the
    card cannot be written, the artifact just written is removed. Once both
    are written they are read back: a publish of the same version with other
    bytes that ran at the same time (a pipeline run twice) can write its
    artifact between ours and our card, and `RegistryError` then says so;
    publishing the version meant to stand again mends it. A node refuses a
    card and artifact that disagree, and a manifest whose digest the registry
    no longer holds.
    """
    card, artifact = read_model_dir(model_dir)
    artifact_key, card_key = version_keys(card)
    result = PublishedModel(card, registry.uri_for(artifact_key), registry.uri_for(card_key))
    registry.ensure_ready(create=create_bucket)
    existing = registry.get(card_key)
    if existing is not None:
        card = _check_same_version(registry, card, card_key, existing)
        if _digest(registry.get(artifact_key)) != card.artifact.sha256:
            # The card is ours byte for byte, so restoring its artifact cannot change what it promises.
            logger.warning("artifact_restored", extra={"uri": result.artifact_uri})
            registry.put(artifact_key, artifact, "application/octet-stream")
        logger.info("publish_identical", extra={"model_id": card.model_id, "version": card.version})
        return PublishedModel(card, result.artifact_uri, result.card_uri, already_published=True)
    if registry.size(artifact_key) is not None:
        # No card means not published: a reader never saw this artifact as a version.
        logger.warning("orphan_artifact_replaced", extra={"uri": result.artifact_uri})
    registry.put(artifact_key, artifact, "application/octet-stream")
    logger.info("artifact_uploaded", extra={"uri": result.artifact_uri, "sha256": card.artifact.sha256})
    try:
        registry.put(card_key, model_dir / CARD_FILENAME, "application/json")
    except BaseException:
        _remove_quietly(registry, artifact_key)
        raise
    _check_written(registry, card, artifact_key, card_key)
    logger.info(
        "card_uploaded", extra={"uri": result.card_uri, "model_id": card.model_id, "version": card.version}
    )
    return result


def _digest(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _check_written(registry: Registry, card: ModelCard, artifact_key: str, card_key: str) -> None:
    """The registry holds this card and the bytes it names, read back; else who wrote over them."""
    stored = registry.get(card_key)
    try:
        named = (
            ModelCard.from_json(stored, source=registry.uri_for(card_key)).artifact.sha256 if stored else None
        )
    except ModelCardError:
        named = None
    held = _digest(registry.get(artifact_key))
    if named == held == card.artifact.sha256:
        return
    # Left as found: removing our card could remove the one the other publish wrote over it. A
    # node refuses a card and artifact that disagree (digest mismatch), and publishing the version
    # meant to stand again restores its artifact under its card.
    raise RegistryError(
        registry.uri,
        f"{card.model_id} {card.version} changed while it was being published (another publish of the "
        f"same version at the same time?): its card names sha256 {named}, its artifact has {held}, "
        f"this publish wrote {card.artifact.sha256}; publish the version meant to stand again",
    )


def _check_same_version(registry: Registry, card: ModelCard, card_key: str, existing: bytes) -> ModelCard:
    """The published card, when it describes the same model as `card`; else a conflict.

    A version rebuilt from the same data and seed has the same artifact and the same card but
    for the time it was written: that is the published version, and its card stays. Any
    other difference (labels, features, signal, metrics) is a conflict.
    """
    try:
        published = ModelCard.from_json(existing, source=registry.uri_for(card_key))
    except ModelCardError as exc:
        raise RegistryError(registry.uri, f"{exc}; refusing to overwrite it") from exc
    if published.model_copy(update={"created": card.created}) != card:
        raise VersionConflictError(
            card.model_id, card.version, published.artifact.sha256, card.artifact.sha256, uri=registry.uri
        )
    if published.created != card.created:
        logger.info("publish_rebuilt_identical", extra={"model_id": card.model_id, "version": card.version})
    return published


def _remove_quietly(registry: Registry, key: str) -> None:
    try:
        registry.delete(key)
    except RegistryError as exc:
        logger.error("rollback_failed", extra={"uri": registry.uri_for(key), "detail": exc.detail})  # noqa: TRY400 (the cause is the error being raised, not this one)
    else:
        logger.warning("publish_rolled_back", extra={"uri": registry.uri_for(key)})


def list_versions(registry: Registry, model_id: str | None = None) -> Listing:
    """Every published version (of one model, when given), reading each card."""
    listing = Listing()
    for key in registry.list_keys(f"{model_id}/" if model_id else ""):
        parts = key.split("/")
        if len(parts) != 3 or parts[2] != CARD_FILENAME:  # noqa: PLR2004 (<model-id>/<version>/<card>)
            continue
        uri = registry.uri_for(key)
        try:
            data = registry.get(key)
            if data is None:
                continue
            card = ModelCard.from_json(data, source=uri)
        except RegistryUnavailableError:
            raise
        except (RegistryError, ModelCardError) as exc:
            logger.warning("card_unreadable", extra={"uri": uri, "reason": str(exc)})
            listing.unreadable.append(UnreadableCard(uri, str(exc)))
            continue
        if [card.model_id, card.version] != parts[:2]:
            reason = f"the card is for {card.model_id} {card.version} but stored under {parts[0]}/{parts[1]}"
            listing.unreadable.append(UnreadableCard(uri, reason))
            continue
        artifact_uri = registry.uri_for(f"{parts[0]}/{parts[1]}/{card.artifact.filename}")
        listing.models.append(PublishedModel(card, artifact_uri, uri))
    # A card without a zone on `created` is taken as UTC, so that mixed cards still sort.
    listing.models.sort(
        key=lambda m: (
            m.card.model_id,
            m.card.created.replace(tzinfo=m.card.created.tzinfo or UTC),
            m.card.version,
        )
    )
    return listing
