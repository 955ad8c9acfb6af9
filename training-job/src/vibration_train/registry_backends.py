"""The two registry backends: a directory (``file://``) and an S3 bucket (``s3://``).

Both implement `vibration_train.registry.Registry`; `open_registry` picks one
by URI. S3 goes through the minio client with short connect and read
timeouts and bounded retries, so a registry that is down or hangs fails in
seconds. Errors are built from S3 error codes, never from exception text,
so no credential can leak into a message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

if TYPE_CHECKING:
    from collections.abc import Iterator
from vibration_train.registry import (
    BucketNotFoundError,
    RegistryAuthError,
    RegistryConfigError,
    RegistryError,
    RegistryUnavailableError,
    _ObjectMissingError,
)

logger = logging.getLogger(__name__)

_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
    | {"AllAccessDisabled", "AccountProblem", "InvalidSecurity", "AuthorizationHeaderMalformed"}
)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})


class FileRegistry:
    """A directory tree; writes go to a temporary name and are renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.as_uri()

    def uri_for(self, key: str) -> str:  # noqa: D102 (documented by the protocol)
        return self._path(key).as_uri()

    def ensure_ready(self, *, create: bool) -> None:  # noqa: ARG002, D102 (directories are made as needed)
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(self.uri, f"{self.root} is not a directory")

    def get(self, key: str) -> bytes | None:  # noqa: D102 (see Registry)
        with self._errors("read", key):
            try:
                return self._path(key).read_bytes()
            except FileNotFoundError:
                return None

    def size(self, key: str) -> int | None:  # noqa: D102 (see Registry)
        path = self._path(key)
        with self._errors("stat", key):
            return path.stat().st_size if path.is_file() else None

    def put(self, key: str, source: Path, content_type: str) -> None:  # noqa: ARG002, D102 (see Registry; S3 needs it)
        target = self._path(key)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        with self._errors("write", key):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with source.open("rb") as src, tmp.open("wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:  # noqa: D102 (see Registry)
        with self._errors("delete", key):
            self._path(key).unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> list[str]:  # noqa: D102 (see Registry)
        if not self.root.is_dir():
            raise RegistryError(self.uri, f"directory {self.root} does not exist")
        with self._errors("list", prefix):
            paths = (p for p in self.root.rglob("*") if p.is_file() and not p.name.startswith("."))
            keys = (p.relative_to(self.root).as_posix() for p in paths)
            return sorted(k for k in keys if k.startswith(prefix))

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    @contextlib.contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise RegistryError(self.uri, f"cannot {action} {key}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class S3Options:
    """How patiently to talk to an S3 endpoint."""

    connect_timeout: float = 2.0
    """Seconds to wait for a TCP connection; a down endpoint fails fast."""
    read_timeout: float = 30.0
    """Seconds to wait for a response once connected."""
    retries: int = 2
    """Retries of a failed connection or a 5xx answer, with a short backoff."""
    ca_file: Path | None = None
    """CA bundle for an https endpoint with a private CA; the system store otherwise."""


class S3Registry:
    """An S3 bucket (MinIO, AWS, ...) through the minio client."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        region: str | None = None,
        options: S3Options = S3Options(),
    ) -> None:
        self.bucket, self.prefix, self.endpoint = bucket, prefix, endpoint
        self.uri = f"s3://{bucket}/{prefix}".rstrip("/")
        self._region = region
        self._secrets = tuple(s for s in (access_key, secret_key) if s)
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise RegistryConfigError(self.uri, f"{bucket!r} is not a valid bucket name")
        url = urlsplit(endpoint)
        if url.scheme not in {"http", "https"} or not url.hostname or url.username or url.password:
            raise RegistryConfigError(
                self.uri, "endpoint must be http://host[:port] or https://... (no user)"
            )
        if url.path not in {"", "/"} or url.query:
            raise RegistryConfigError(self.uri, "endpoint must not have a path or query")
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=options.connect_timeout, read=options.read_timeout),
            retries=urllib3.Retry(
                total=options.retries,
                backoff_factor=0.2,
                status_forcelist=(500, 502, 503, 504),
                raise_on_status=False,
            ),
            ca_certs=str(options.ca_file) if options.ca_file else None,
        )
        try:
            self._client = Minio(
                url.netloc,
                access_key=access_key,
                secret_key=secret_key,
                secure=url.scheme == "https",
                region=region,
                http_client=http,
            )
        except ValueError as exc:
            raise RegistryConfigError(self.uri, self._redact(str(exc))) from None

    def uri_for(self, key: str) -> str:  # noqa: D102 (documented by the protocol)
        return f"s3://{self.bucket}/{self._key(key)}"

    def ensure_ready(self, *, create: bool) -> None:  # noqa: D102 (see Registry)
        with self._errors("check bucket", ""):
            if self._client.bucket_exists(self.bucket):
                return
            if not create:
                raise BucketNotFoundError(self.uri, self.bucket)
            self._client.make_bucket(self.bucket, location=self._region)
            logger.info("bucket_created", extra={"bucket": self.bucket, "endpoint": self.endpoint})

    def get(self, key: str) -> bytes | None:  # noqa: D102 (see Registry)
        try:
            with self._errors("read", key):
                response = self._client.get_object(self.bucket, self._key(key))
                try:
                    return bytes(response.read())
                finally:
                    response.close()
                    response.release_conn()
        except _ObjectMissingError:
            return None

    def size(self, key: str) -> int | None:  # noqa: D102 (see Registry)
        try:
            with self._errors("stat", key):
                return int(self._client.stat_object(self.bucket, self._key(key)).size or 0)
        except _ObjectMissingError:
            return None

    def put(self, key: str, source: Path, content_type: str) -> None:  # noqa: D102 (see Registry)
        with self._errors("write", key):
            self._client.fput_object(self.bucket, self._key(key), str(source), content_type=content_type)

    def delete(self, key: str) -> None:  # noqa: D102 (see Registry)
        with self._errors("delete", key):
            self._client.remove_object(self.bucket, self._key(key))

    def list_keys(self, prefix: str) -> list[str]:  # noqa: D102 (see Registry)
        start = len(self._key(""))
        with self._errors("list", prefix):
            objects = self._client.list_objects(self.bucket, prefix=self._key(prefix), recursive=True)
            return sorted(str(obj.object_name)[start:] for obj in objects)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        where = f"{action} {self._key(key)}" if key else action
        try:
            yield
        except S3Error as exc:
            code = exc.code or "unknown"
            if code in _MISSING_KEY_CODES:
                raise _ObjectMissingError from None
            if code in _AUTH_CODES:
                raise RegistryAuthError(self.uri, f"{where}: refused by {self.endpoint} ({code})") from None
            if code == "NoSuchBucket":
                raise BucketNotFoundError(self.uri, self.bucket) from None
            detail = self._redact(f"{where}: {code}: {exc.message}")
            raise RegistryError(self.uri, detail) from None
        except ServerError as exc:
            detail = f"{where}: {self.endpoint} answered HTTP {exc.status_code}"
            raise RegistryUnavailableError(self.uri, detail) from None
        except ValueError as exc:  # the client's own checks, e.g. an invalid bucket name
            raise RegistryConfigError(self.uri, self._redact(str(exc))) from None
        except InvalidResponseError:
            detail = f"{where}: {self.endpoint} sent a non-S3 answer (is it an S3 endpoint?)"
            raise RegistryError(self.uri, detail) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            detail = f"{where}: cannot reach {self.endpoint} ({_reason(exc)})"
            raise RegistryUnavailableError(self.uri, detail) from None


def _reason(exc: BaseException) -> str:
    """A short, credential-free reason for a transport failure."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    cause = exc.__cause__ or exc.__context__
    if (
        isinstance(exc, urllib3.exceptions.NewConnectionError)
        and isinstance(cause, OSError)
        and cause.strerror
    ):
        return cause.strerror.lower()  # "connection refused", "name or service not known", ...
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return "timed out"
    return type(exc).__name__


def open_registry(
    uri: str,
    *,
    endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
    options: S3Options = S3Options(),
) -> FileRegistry | S3Registry:
    """Open ``file:///abs/dir`` or ``s3://bucket[/prefix]`` (at `endpoint`, AWS when not given)."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in {"", "localhost"} or not parts.path.startswith("/"):
            raise RegistryConfigError(uri, "a file registry URI is file:///absolute/path")
        return FileRegistry(Path(parts.path.rstrip("/") or "/"))
    if parts.scheme == "s3":
        if not parts.hostname or parts.username or parts.password or parts.query:
            raise RegistryConfigError(uri, "an S3 registry URI is s3://bucket[/prefix]")
        return S3Registry(
            parts.netloc,
            parts.path.strip("/"),
            endpoint=endpoint or "https://s3.amazonaws.com",
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            options=options,
        )
    raise RegistryConfigError(uri.split("://", 1)[0] + "://...", "use file:///path or s3://bucket[/prefix]")
