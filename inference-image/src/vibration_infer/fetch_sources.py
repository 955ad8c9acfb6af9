"""The bytes of one file, scheme by scheme, for `fetch`: a local file, an http(s) GET, an S3 object.

``file:///path`` is read from the disk, ``http(s)://`` is one GET through
urllib3 and ``s3://bucket/key`` one GetObject through the minio client, each
attempt on a pool of its own that follows redirects and never retries
(`_pool`): `fetch` alone counts attempts. A source yields what has arrived,
read by read, so that `fetch` judges a trickle or a cancel as the bytes
come, and it sorts its failures: a `FetchError` when another attempt cannot
cure them (404, access denied, a missing file, a TLS problem), a
`TransientError` when it may (an HTTP 429 or 503, an S3 SlowDown, a
timeout, a connection broken mid-body). Every error names the URI redacted
(`redact_uri`, which `fetch` gives its callers as well).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

import urllib3

from vibration_infer.errors import FetchError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from vibration_infer.fetch import FetchOptions

_CHUNK = 1 << 20
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# S3 error codes that another attempt may cure; every other code is final.
_TRANSIENT_S3_CODES = frozenset({"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"})


class TransientError(Exception):
    """An attempt failed in a way the next attempt may not."""


def redact_uri(uri: str) -> str:
    """The URI without user info and with its query elided, safe for logs and reports."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "..." if parts.query else "", ""))


def chunks(scheme: str, uri: str, options: FetchOptions) -> Iterator[bytes]:
    """The bytes at `uri`, read by read, from the source its `scheme` names."""
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
            raise TransientError(f"HTTP {response.status}")
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
            raise TransientError(f"S3 {exc.code}") from None
        raise FetchError(shown, f"S3 {exc.code}") from None
    except ServerError as exc:
        raise TransientError(f"HTTP {exc.status_code}") from None
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
        raise TransientError(_describe(reason, options)) from None


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
