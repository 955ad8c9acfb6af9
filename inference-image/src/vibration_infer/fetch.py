"""Download one file with bounded patience: timeouts, retries, a digest, an atomic rename.

``s3://bucket/key`` goes through the minio client, ``http(s)://`` through
urllib3, ``file:///path`` is copied. Every attempt has a connect timeout and
a per-read timeout, so a registry that accepts a connection and then never
answers costs at most ``(connect + read) * attempts`` plus the backoff
pauses, never forever (the storage-initializer anti-example). A registry
that answers but trickles (each read within the read timeout) is held to a
minimum average rate once a transfer has run longer than the read timeout,
so a transfer of ``n`` bytes lasts at most about ``read + n / rate``. The retry
policy lives here and only here: urllib3 is told not to retry by itself, so
attempts do not multiply.

Bytes are written to a temporary file next to the destination and hashed
while they stream; only a complete download is renamed into place. Errors
that another attempt cannot cure (404, access denied, a missing file) fail
at once. URIs in logs and errors are redacted (no user info, no query: a
presigned URL's query is a credential).

The byte stream of each scheme, and which of its failures another attempt
may cure, is `fetch_sources`'s; the downloads, retries and checks are here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from vibration_infer.errors import FetchError
from vibration_infer.fetch_sources import TransientError, chunks, redact_uri

if TYPE_CHECKING:
    import threading
    from pathlib import Path

# redact_uri is part of what callers import from here.
__all__ = ["FetchOptions", "Fetched", "fetch", "redact_uri", "sibling_uri"]

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class FetchOptions:
    """How patiently to download, and the S3 endpoint and credentials."""

    connect_timeout_s: float = 5.0
    """Seconds to wait for a TCP connection."""
    read_timeout_s: float = 30.0
    """Seconds to wait for each read from the socket."""
    retries: int = 3
    """Attempts after the first one, for failures another attempt may cure."""
    backoff_s: float = 0.5
    """Pause before the first retry; doubles on each further retry."""
    max_bytes: int | None = None
    """Refuse a file larger than this."""
    expected_bytes: int | None = None
    """The size the model card states. Over http(s) and S3, a body that ends short of it (a
    connection closed mid-body with no Content-Length to tell) is retried, not taken whole."""
    min_rate_bytes_s: float = 0.0
    """Slowest average rate a transfer may keep once it has run longer than the read timeout; 0: any."""
    cancel: threading.Event | None = field(default=None, compare=False)
    """Set when the download is no longer wanted (the hot swap's target changed): it stops at the next
    read, with a final `FetchError`."""
    s3_endpoint: str | None = None
    """http(s)://host[:port] of the S3 service; AWS when None."""
    s3_region: str | None = None
    """Region; the minio client asks the endpoint when None."""
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    """CA bundle for https; the system store when None."""


@dataclass(frozen=True)
class Fetched:
    """A complete download."""

    path: Path
    sha256: str
    size: int
    attempts: int
    seconds: float


def sibling_uri(uri: str, name: str) -> str:
    """The URI of `name` in the same folder (bucket prefix, URL path, directory) as `uri`."""
    parts = urlsplit(uri)
    folder = parts.path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{folder}/{name}", "", ""))


def fetch(uri: str, dest: Path, options: FetchOptions) -> Fetched:
    """Download `uri` to `dest` (atomically) and return its sha256; raises `FetchError`."""
    shown = redact_uri(uri)
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            digest, size = _download(uri, dest, options)
        except TransientError as exc:
            if attempt > options.retries:
                raise FetchError(shown, f"{exc} (gave up after {attempt} attempts)") from None
            delay = min(options.backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
            logger.warning(
                "fetch_retry",
                extra={"uri": shown, "attempt": attempt, "reason": str(exc), "delay_s": round(delay, 2)},
            )
            if _cancelled_during(delay, options.cancel):
                detail = f"{exc}; abandoned before attempt {attempt + 1}: no longer wanted"
                raise FetchError(shown, detail) from None
            continue
        seconds = time.monotonic() - started
        logger.info(
            "fetch_done",
            extra={
                "uri": shown,
                "bytes": size,
                "sha256": digest,
                "attempts": attempt,
                "seconds": round(seconds, 3),
            },
        )
        return Fetched(dest, digest, size, attempt, seconds)


def _cancelled_during(delay: float, cancel: threading.Event | None) -> bool:
    """Pause `delay` seconds before a retry; True, at once, when `cancel` is set meanwhile."""
    if cancel is None:
        time.sleep(delay)
        return False
    return cancel.wait(delay)


def _download(uri: str, dest: Path, options: FetchOptions) -> tuple[str, int]:
    parts = urlsplit(uri)
    shown = redact_uri(uri)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    digest = hashlib.sha256()
    size = 0
    started = time.monotonic()
    try:
        with tmp.open("wb") as out:
            for chunk in chunks(parts.scheme, uri, options):
                size += len(chunk)
                if options.max_bytes is not None and size > options.max_bytes:
                    raise FetchError(shown, f"larger than the limit of {options.max_bytes} bytes")
                _check_rate(size, time.monotonic() - started, options)
                if options.cancel is not None and options.cancel.is_set():
                    raise FetchError(shown, f"abandoned after {size} bytes: no longer wanted")
                digest.update(chunk)
                out.write(chunk)
            _check_complete(parts.scheme, size, options)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(dest)
    except OSError as exc:
        # The local side: a full or read-only cache volume will not heal by retrying.
        raise FetchError(shown, f"cannot write {dest}: {exc.strerror or type(exc).__name__}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest(), size


def _check_complete(scheme: str, size: int, options: FetchOptions) -> None:
    """Retry a body that ended short of the stated size (a short local file: its digest tells)."""
    expected = options.expected_bytes
    if expected is not None and size < expected and scheme != "file":
        msg = f"the transfer ended after {size} of the {expected} bytes its model card states"
        raise TransientError(msg)


def _check_rate(size: int, elapsed: float, options: FetchOptions) -> None:
    """Give the attempt up when the transfer averages less than the minimum rate (a trickling uplink)."""
    if options.min_rate_bytes_s <= 0 or elapsed <= options.read_timeout_s:
        return
    # The read timeout is the grace: the wait for the answer's headers, a small file's first bytes.
    if size < options.min_rate_bytes_s * (elapsed - options.read_timeout_s):
        raise TransientError(
            f"slower than the minimum average rate of {options.min_rate_bytes_s / 1024:g} KiB/s: "
            f"{size} bytes arrived in {elapsed:.1f} s"
        )
