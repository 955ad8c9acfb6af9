"""A real S3 endpoint on loopback (moto's server), and model dirs to publish to it.

`running_moto()` starts moto's S3 server in a thread on a free loopback port;
`MotoS3` resets it between tests, creates IAM users with policies and
switches moto's request authentication on (off by default: moto accepts any
key). `make_model_dir()` writes an artifact and a valid model card whose
digest and size match it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from minio import Minio
from moto.server import ThreadedMotoServer

from vibration_core.modelcard import CARD_FILENAME, ModelCard
from vibration_testkit.cards import card_dict

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BUCKET = "models"
# Any key works while moto's authentication is off; these are its documented test values.
ACCESS_KEY = "testing"
SECRET_KEY = "testing-secret"  # noqa: S105 (a dummy for an emulator)
_IAM_SCOPE = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/iam/aws4_request"


class MotoS3:
    """A running moto server and the operations tests need on it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> Minio:
        """A MinIO client of this server, with the given keys."""
        return Minio(
            f"127.0.0.1:{self.port}",
            access_key=access_key,
            secret_key=secret_key,
            secure=False,
            region="us-east-1",
        )

    def reset(self) -> None:
        """Forget every bucket, object and IAM user; authentication off."""
        self.set_auth(enabled=False)
        self._post("/moto-api/reset", b"")

    def set_auth(self, *, enabled: bool) -> None:
        """Make moto check signatures and IAM policies (it accepts anything by default)."""
        self._post("/moto-api/reset-auth", b"0" if enabled else b"inf")

    @contextlib.contextmanager
    def auth_enabled(self) -> Iterator[None]:
        """Authentication on for the block (moto checks signatures and IAM policies), then off again."""
        # moto's switch is process-wide: always turn it off again.
        self.set_auth(enabled=True)
        try:
            yield
        finally:
            self.set_auth(enabled=False)

    def create_user(self, name: str, statements: list[dict[str, Any]]) -> tuple[str, str]:
        """An IAM user with an inline policy; returns its access key and secret. Call with auth off."""
        self._iam("CreateUser", UserName=name)
        answer = self._iam("CreateAccessKey", UserName=name)
        policy = json.dumps({"Version": "2012-10-17", "Statement": statements})
        self._iam("PutUserPolicy", UserName=name, PolicyName="registry", PolicyDocument=policy)
        key = re.search(r"<AccessKeyId>(.+?)</AccessKeyId>", answer)
        secret = re.search(r"<SecretAccessKey>(.+?)</SecretAccessKey>", answer)
        assert key, answer
        assert secret, answer
        return key.group(1), secret.group(1)

    def _iam(self, action: str, **params: str) -> str:
        body = urllib.parse.urlencode({"Action": action, "Version": "2010-05-08", **params}).encode()
        # moto routes by the credential scope; with authentication off the signature is not checked.
        headers = {"Authorization": _IAM_SCOPE, "Content-Type": "application/x-www-form-urlencoded"}
        return self._send("/", body, headers)

    def _post(self, path: str, body: bytes) -> str:
        return self._send(path, body, {"Content-Type": "text/plain"})

    def _send(self, path: str, body: bytes, headers: dict[str, str]) -> str:
        # S310: the URL is always this fixture's own http:// loopback endpoint.
        url = self.endpoint + path
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return str(response.read().decode())


@contextlib.contextmanager
def running_moto() -> Iterator[MotoS3]:
    """Start moto's server on a free loopback port for the duration of the block."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield MotoS3(server.get_host_and_port()[1])
    finally:
        server.stop()


def make_model_dir(
    path: Path,
    payload: bytes = b"fake onnx bytes",
    *,
    filename: str = "model.onnx",
    **changes: Any,
) -> ModelCard:
    """Write `payload` as the artifact and a card that matches it into `path`; return the card."""
    path.mkdir(parents=True, exist_ok=True)
    (path / filename).write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    changes.setdefault("artifact", {"filename": filename, "sha256": digest, "size_bytes": len(payload)})
    card = ModelCard.model_validate(card_dict(digest, len(payload), **changes))
    card.save(path / CARD_FILENAME)
    return card


def created_at(hour: int) -> str:
    """A card `created` timestamp on the test day, for ordering tests."""
    return datetime(2026, 11, 24, hour, tzinfo=UTC).isoformat()
