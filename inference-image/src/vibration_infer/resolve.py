"""Where the model to validate comes from: the node cache when its digest is there, else the registry.

The card is fetched first (it names the artifact's digest), then the
artifact, into a staging directory the cache adopts only when the digest
matches; either way the outcome records the card, digest and source.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Literal

from vibration_core.errors import ModelCardError
from vibration_core.modelcard import CARD_FILENAME, ModelCard
from vibration_infer.cache import artifact_filename
from vibration_infer.errors import DigestMismatchError, FetchError
from vibration_infer.fetch import FetchOptions, fetch, redact_uri, sibling_uri

if TYPE_CHECKING:
    import threading
    from pathlib import Path

    from vibration_infer.cache import CachedModel, ModelCache
    from vibration_infer.outcome import Outcome
    from vibration_infer.settings import ValidateSettings

logger = logging.getLogger(__name__)

_CARD_MAX_BYTES = 1 << 20


def resolve(
    settings: ValidateSettings, cache: ModelCache, outcome: Outcome, *, cancel: threading.Event | None = None
) -> tuple[CachedModel, ModelCard]:
    """The target's cache entry and card: from the cache when its digest is known and present.

    `cancel`, once set, stops a download in progress (the hot swap's target changed meanwhile).
    """
    expected = settings.expected_sha256
    if expected is not None and (hit := cache.find(expected)) is not None:
        # The cache keeps each card that passed with these bytes: the same artifact applied again
        # under a new version (a retry) brings a card of its own, fetched below (the artifact is
        # still taken from the cache). A version that passed here before needs no registry (an
        # offline reboot).
        card = cache.card_of(hit, settings.expected_version, settings.slot)
        if card is not None:
            return _found(hit, card, "cache", outcome)
        logger.info(
            "cached_card_of_another_version",
            extra={"sha256": expected, "cached": hit.card().version, "target": settings.expected_version},
        )
    access, secret = settings.s3_credentials()
    options = FetchOptions(
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        min_rate_bytes_s=settings.min_download_kib_s * 1024,
        s3_endpoint=settings.s3_endpoint,
        s3_region=settings.s3_region,
        access_key=access,
        secret_key=secret,
        ca_file=settings.ca_file,
        cancel=cancel,
    )
    try:
        with cache.staging() as staged:
            return _download(settings, options, cache, staged, outcome)
    except OSError as exc:
        detail = (
            f"cache dir {settings.cache_dir} is unusable ({exc.strerror or type(exc).__name__}); "
            f"it must be a directory writable by uid {os.getuid()} (on a node: the hostPath "
            "serving.cacheHostPath, created by the node's administrator)"
        )
        raise FetchError(redact_uri(settings.artifact_uri), detail) from None


def _download(
    settings: ValidateSettings, options: FetchOptions, cache: ModelCache, staged: Path, outcome: Outcome
) -> tuple[CachedModel, ModelCard]:
    """Fetch the card, then (unless its digest is cached) the artifact, into the cache."""
    expected = settings.expected_sha256
    card_uri = settings.card_uri or sibling_uri(settings.artifact_uri, CARD_FILENAME)
    fetch(card_uri, staged / CARD_FILENAME, dataclasses.replace(options, max_bytes=_CARD_MAX_BYTES))
    try:
        card = ModelCard.load(staged / CARD_FILENAME)
    except ModelCardError as exc:  # named by where it came from, not by the staging file it was read from
        raise ModelCardError(redact_uri(card_uri), exc.detail) from None
    outcome.card = card
    if settings.expected_version not in (None, card.version):
        # Served and reported as the card says; the VibrationModel's status will name the other.
        logger.warning(
            "card_version_differs",
            extra={
                "card": redact_uri(card_uri),
                "version": card.version,
                "target": settings.expected_version,
            },
        )
    if expected is not None and card.artifact.sha256 != expected:
        where = f"{redact_uri(settings.artifact_uri)} (as named by its model card)"
        raise DigestMismatchError(where, expected, card.artifact.sha256)
    if (hit := cache.find(card.artifact.sha256)) is not None:
        return _found(hit, card, "cache", outcome)
    max_bytes = int(settings.max_artifact_mb * (1 << 20))
    fetched = fetch(
        settings.artifact_uri,
        staged / artifact_filename(card),
        dataclasses.replace(options, max_bytes=max_bytes, expected_bytes=card.artifact.size_bytes),
    )
    if fetched.sha256 != card.artifact.sha256:
        raise DigestMismatchError(redact_uri(settings.artifact_uri), card.artifact.sha256, fetched.sha256)
    return _found(cache.store(staged, card), card, "registry", outcome)


def _found(
    entry: CachedModel, card: ModelCard, source: Literal["cache", "registry"], outcome: Outcome
) -> tuple[CachedModel, ModelCard]:
    outcome.card, outcome.sha256, outcome.source = card, entry.sha256, source
    logger.info(
        "model_resolved",
        extra={"model_id": card.model_id, "version": card.version, "sha256": entry.sha256, "source": source},
    )
    return entry, card
