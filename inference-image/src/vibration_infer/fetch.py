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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

import urllib3

from vibration_infer.errors import FetchError

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_MAX_BACKOFF_S = 30.0
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# S3 error codes that another attempt may cure; every other code is final.
_TRANSIENT_S3_CODES = frozenset({"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"})


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


class _TransientError(Exception):
    """An attempt failed in a way the next attempt may not."""


def redact_uri(uri: str) -> str:
    """The URI without user info and with its query elided, safe for logs and reports."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "..." if parts.query else "", ""))


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
        except _TransientError as exc:
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
            for chunk in _chunks(parts.scheme, uri, options):
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
        raise _TransientError(msg)


def _check_rate(size: int, elapsed: float, options: FetchOptions) -> None:
    """Give the attempt up when the transfer averages less than the minimum rate (a trickling uplink)."""
    if options.min_rate_bytes_s <= 0 or elapsed <= options.read_timeout_s:
        return
    # The read timeout is the grace: the wait for the answer's headers, a small file's first bytes.
    if size < options.min_rate_bytes_s * (elapsed - options.read_timeout_s):
        raise _TransientError(
            f"slower than the minimum average rate of {options.min_rate_bytes_s / 1024:g} KiB/s: "
            f"{size} bytes arrived in {elapsed:.1f} s"
        )


def _chunks(scheme: str, uri: str, options: FetchOptions) -> Iterator[bytes]:
    if scheme == "file":
        return _file_chunks(uri)
    if scheme in {"http", "https"}:
        return _http_chunks(uri, options)
    if scheme == "s3":
        return _s3_chunks(uri, options)
    raise FetchError(redact_uri(uri), "unsupported scheme; use s3://, http(s):// or file://")


def _file_chunks(uri: str) -> Iterator[bytes]:
    parts = urlsplit(uri)
    if parts.netloc not in {"", "localhost"}:
        raise FetchError(redact_uri(uri), "a file URI is file:///absolute/path")
    path = Path(unquote(parts.path))
    try:
        with path.open("rb") as source:
            yield from iter(lambda: source.read(_CHUNK), b"")
    except FileNotFoundError:
        raise FetchError(redact_uri(uri), "no such file") from None
    except OSError as exc:
        raise FetchError(redact_uri(uri), exc.strerror or type(exc).__name__) from None


def _pool(options: FetchOptions) -> urllib3.PoolManager:
    # Retries are counted in `fetch` alone; urllib3 only follows redirects.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=options.connect_timeout_s, read=options.read_timeout_s),
        retries=urllib3.Retry(
            total=None, connect=0, read=0, status=0, other=0, redirect=5, raise_on_status=False
        ),
        ca_certs=str(options.ca_file) if options.ca_file else None,
    )


def _http_chunks(uri: str, options: FetchOptions) -> Iterator[bytes]:
    shown = redact_uri(uri)
    pool = _pool(options)
    response = None
    try:
        with _transport_errors(shown, options):
            response = pool.request("GET", uri, preload_content=False)
        if response.status in _TRANSIENT_STATUS:
            raise _TransientError(f"HTTP {response.status}")
        if response.status != 200:  # noqa: PLR2004 - the one success a GET of a file gives
            raise FetchError(shown, f"HTTP {response.status}")
        with _transport_errors(shown, options):
            yield from _arrived(response)
    finally:
        # One pool per attempt: close its sockets now, also those of an unread error answer.
        if response is not None:
            response.close()
        pool.clear()


def _arrived(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    # What has arrived, read by read by (read1): stream() would wait for a whole chunk, so a
    # trickle would be judged (its rate, a cancel) only once a megabyte had come.
    while chunk := response.read1(_CHUNK):
        yield chunk


def _s3_chunks(uri: str, options: FetchOptions) -> Iterator[bytes]:
    shown = redact_uri(uri)
    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise FetchError(shown, "an S3 URI is s3://bucket/key")
    endpoint = urlsplit(options.s3_endpoint or "https://s3.amazonaws.com")
    if endpoint.scheme not in {"http", "https"} or not endpoint.netloc:
        raise FetchError(
            shown, f"s3 endpoint must be http(s)://host[:port], got {redact_uri(endpoint.geturl())}"
        )
    pool = _pool(options)
    try:
        response = _s3_get(pool, endpoint.scheme, endpoint.netloc, bucket, key, options, shown)
        try:
            with _transport_errors(shown, options):
                yield from _arrived(response)
        finally:
            response.close()
    finally:
        pool.clear()


def _s3_get(  # noqa: PLR0917 - the parts of one request, already checked
    pool: urllib3.PoolManager,
    scheme: str,
    netloc: str,
    bucket: str,
    key: str,
    options: FetchOptions,
    shown: str,
) -> urllib3.BaseHTTPResponse:
    from minio import Minio  # noqa: PLC0415 - only S3 downloads pay for the client
    from minio.error import InvalidResponseError, S3Error, ServerError  # noqa: PLC0415

    try:
        client = Minio(
            netloc,
            access_key=options.access_key,
            secret_key=options.secret_key,
            secure=scheme == "https",
            region=options.s3_region,
            http_client=pool,
        )
        with _transport_errors(shown, options):
            response: urllib3.BaseHTTPResponse = client.get_object(bucket, key)
    except S3Error as exc:
        if exc.code in _TRANSIENT_S3_CODES:
            raise _TransientError(f"S3 {exc.code}") from None
        raise FetchError(shown, f"S3 {exc.code}") from None
    except ServerError as exc:
        raise _TransientError(f"HTTP {exc.status_code}") from None
    except InvalidResponseError:
        raise FetchError(shown, f"{netloc} did not answer like an S3 service") from None
    except ValueError as exc:
        # minio's argument checks; their text holds no credential, but say only the kind.
        raise FetchError(shown, f"invalid S3 request ({type(exc).__name__})") from None
    return response


@contextlib.contextmanager
def _transport_errors(shown: str, options: FetchOptions) -> Iterator[None]:
    """Turn urllib3's transport errors into a transient (or, for TLS, a final) failure."""
    try:
        yield
    except (urllib3.exceptions.HTTPError, TimeoutError, ConnectionError) as exc:
        reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        if isinstance(reason, urllib3.exceptions.SSLError | urllib3.exceptions.LocationValueError):
            raise FetchError(shown, f"TLS or URL problem ({type(reason).__name__})") from None
        raise _TransientError(_describe(reason, options)) from None


def _describe(exc: BaseException | None, options: FetchOptions) -> str:
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else "connection failed"
        return detail.lower()
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return f"connect timed out after {options.connect_timeout_s:g} s"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | TimeoutError):
        return f"no answer within the read timeout of {options.read_timeout_s:g} s"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection broken during the transfer"
    return type(exc).__name__ if exc is not None else "transport error"
