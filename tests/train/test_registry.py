"""The registry against a real S3 endpoint (moto's server, minio client) and file://, and its CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import typer
import yaml
from minio.error import S3Error
from typer.testing import CliRunner, Result

from vibration_core.logs import JsonFormatter
from vibration_core.modelcard import CARD_FILENAME, ModelCard
from vibration_testkit.net import free_port
from vibration_testkit.s3 import (
    ACCESS_KEY,
    BUCKET,
    SECRET_KEY,
    MotoS3,
    created_at,
    make_model_dir,
    running_moto,
)
from vibration_train.cli_registry import register
from vibration_train.registry import (
    BucketNotFoundError,
    ModelDirError,
    Registry,
    RegistryAuthError,
    RegistryConfigError,
    RegistryError,
    RegistryUnavailableError,
    VersionConflictError,
    list_versions,
    publish,
)
from vibration_train.registry_backends import S3Options, open_registry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

ARTIFACT_KEY = "spindle-classifier/v3/model.onnx"
CARD_KEY = f"spindle-classifier/v3/{CARD_FILENAME}"
LEAKY_SECRET = "Sup3rSecretValue/DoNotLeak+123"  # noqa: S105 (a dummy that tests look for in output)
S3_ALL = [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with running_moto() as server:
        yield server


@pytest.fixture
def s3(moto: MotoS3) -> MotoS3:
    moto.reset()
    moto.client().make_bucket(BUCKET)
    return moto


@dataclass
class Target:
    """A registry under test, with raw access that bypasses the code under test."""

    uri: str
    open: Callable[[], Registry]
    read: Callable[[str], bytes | None]
    write: Callable[[str, bytes], None]
    keys: Callable[[], list[str]]
    endpoint: str | None = None

    def snapshot(self) -> dict[str, bytes | None]:
        return {key: self.read(key) for key in self.keys()}


def file_target(root: Path) -> Target:
    def write(key: str, data: bytes) -> None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)

    return Target(
        uri=root.as_uri(),
        open=lambda: open_registry(root.as_uri()),
        read=lambda key: (root / key).read_bytes() if (root / key).is_file() else None,
        write=write,
        keys=lambda: sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()),
    )


def s3_target(s3: MotoS3, prefix: str = "") -> Target:
    client = s3.client()
    uri = f"s3://{BUCKET}/{prefix}".rstrip("/")

    def read(key: str) -> bytes | None:
        try:
            response = client.get_object(BUCKET, key)
        except S3Error:
            return None
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def write(key: str, data: bytes) -> None:
        import io  # noqa: PLC0415 (only raw writes need it)

        client.put_object(BUCKET, key, io.BytesIO(data), len(data))

    def opener() -> Registry:
        return open_registry(
            uri, endpoint=s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1"
        )

    return Target(
        uri=uri,
        open=opener,
        read=read,
        write=write,
        keys=lambda: sorted(str(o.object_name) for o in client.list_objects(BUCKET, recursive=True)),
        endpoint=s3.endpoint,
    )


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.integration)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "file":
        return file_target(tmp_path / "registry")
    return s3_target(request.getfixturevalue("s3"))


class Recording:
    """The real registry, recording the order of writes and failing the card write when told to."""

    def __init__(self, inner: Registry, *, fail_card: bool = False) -> None:
        self.inner, self.fail_card, self.puts = inner, fail_card, list[str]()

    @property
    def uri(self) -> str:
        return self.inner.uri

    def uri_for(self, key: str) -> str:
        return self.inner.uri_for(key)

    def ensure_ready(self, *, create: bool) -> None:
        self.inner.ensure_ready(create=create)

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def size(self, key: str) -> int | None:
        return self.inner.size(key)

    def put(self, key: str, source: Path, content_type: str) -> None:
        if self.fail_card and key.endswith(CARD_FILENAME):
            raise RegistryError(self.uri, "injected card write failure")
        self.inner.put(key, source, content_type)
        self.puts.append(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list_keys(self, prefix: str) -> list[str]:
        return self.inner.list_keys(prefix)


# --- publish ---------------------------------------------------------------------------------------


def test_publish_puts_artifact_and_card_at_their_keys(target: Target, tmp_path: Path) -> None:
    card = make_model_dir(tmp_path / "model", b"onnx bytes v3")

    published = publish(tmp_path / "model", target.open())

    artifact = target.read(ARTIFACT_KEY)
    stored_card = target.read(CARD_KEY)
    assert artifact == b"onnx bytes v3"
    assert hashlib.sha256(artifact).hexdigest() == published.sha256 == card.artifact.sha256
    assert stored_card is not None
    assert ModelCard.from_json(stored_card) == card
    assert published.artifact_uri == f"{target.uri}/{ARTIFACT_KEY}"
    assert published.size_bytes == len(b"onnx bytes v3")
    assert not published.already_published
    assert target.keys() == [ARTIFACT_KEY, CARD_KEY]


def test_card_is_written_after_the_artifact(target: Target, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model")
    recording = Recording(target.open())

    publish(tmp_path / "model", recording)

    assert recording.puts == [ARTIFACT_KEY, CARD_KEY]


def test_republishing_identical_bytes_succeeds_and_writes_nothing(target: Target, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model")
    publish(tmp_path / "model", target.open())
    before = target.snapshot()
    recording = Recording(target.open())

    again = publish(tmp_path / "model", recording)

    assert again.already_published
    assert recording.puts == []
    assert target.snapshot() == before


def test_republishing_other_bytes_is_refused_and_changes_nothing(target: Target, tmp_path: Path) -> None:
    first = make_model_dir(tmp_path / "a", b"first model")
    second = make_model_dir(tmp_path / "b", b"retrained model")
    publish(tmp_path / "a", target.open())
    before = target.snapshot()

    with pytest.raises(VersionConflictError) as caught:
        publish(tmp_path / "b", target.open())

    error = caught.value
    assert (error.model_id, error.version) == ("spindle-classifier", "v3")
    assert (error.existing_sha256, error.new_sha256) == (first.artifact.sha256, second.artifact.sha256)
    assert first.artifact.sha256 in str(error)
    assert target.snapshot() == before


def test_a_rebuilt_identical_version_is_already_published(target: Target, tmp_path: Path) -> None:
    # Same data, same seed, same bytes (the export is deterministic); only the card's time differs.
    first = make_model_dir(tmp_path / "a", b"model", created=created_at(9))
    rebuilt = make_model_dir(tmp_path / "b", b"model", created=created_at(15))
    publish(tmp_path / "a", target.open())
    before = target.snapshot()
    recording = Recording(target.open())

    again = publish(tmp_path / "b", recording)

    assert again.already_published
    assert again.card == first != rebuilt  # the registry's card is the version's card
    assert recording.puts == []
    assert target.snapshot() == before


def test_same_artifact_with_another_card_is_refused(target: Target, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "a", b"model")
    make_model_dir(tmp_path / "b", b"model", framework="something else")
    publish(tmp_path / "a", target.open())
    before = target.snapshot()

    with pytest.raises(VersionConflictError, match="different model card"):
        publish(tmp_path / "b", target.open())
    assert target.snapshot() == before


def test_an_unreadable_published_card_is_not_overwritten(target: Target, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model")
    target.write(CARD_KEY, b"{not json")

    with pytest.raises(RegistryError, match="refusing to overwrite"):
        publish(tmp_path / "model", target.open())
    assert target.keys() == [CARD_KEY]


def test_a_failed_card_write_removes_the_artifact(target: Target, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model")
    recording = Recording(target.open(), fail_card=True)

    with pytest.raises(RegistryError, match="injected"):
        publish(tmp_path / "model", recording)

    assert recording.puts == [ARTIFACT_KEY]
    assert target.keys() == []


def test_an_artifact_without_a_card_is_not_a_version_and_is_replaced(target: Target, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model", b"new bytes")
    target.write(ARTIFACT_KEY, b"left over from a crashed publish")

    published = publish(tmp_path / "model", target.open())

    assert not published.already_published
    assert target.read(ARTIFACT_KEY) == b"new bytes"


def test_an_identical_republish_restores_a_missing_artifact(target: Target, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model", b"model")
    registry = target.open()
    publish(tmp_path / "model", registry)
    registry.delete(ARTIFACT_KEY)

    assert publish(tmp_path / "model", registry).already_published
    assert target.read(ARTIFACT_KEY) == b"model"


def test_an_identical_republish_restores_an_artifact_changed_under_its_card(
    target: Target, tmp_path: Path
) -> None:
    make_model_dir(tmp_path / "model", b"model")
    publish(tmp_path / "model", target.open())
    target.write(ARTIFACT_KEY, b"MODEL")  # as long as the real one: the size alone cannot tell

    assert publish(tmp_path / "model", target.open()).already_published
    assert target.read(ARTIFACT_KEY) == b"model"


class Interleaved(Recording):
    """The real registry, with another publish of the same version run just before one of our writes."""

    def __init__(self, inner: Registry, before: str, other: Callable[[], object]) -> None:
        super().__init__(inner)
        self.before = before
        self.other: Callable[[], object] | None = other

    def put(self, key: str, source: Path, content_type: str) -> None:
        if key.endswith(self.before) and self.other is not None:
            other, self.other = self.other, None
            other()
        super().put(key, source, content_type)


@pytest.mark.parametrize(
    "before", [CARD_FILENAME, "model.onnx"], ids=["before-our-card", "before-our-artifact"]
)
def test_a_publish_raced_by_another_of_the_same_version_says_so_and_publishing_again_mends_it(
    target: Target, tmp_path: Path, before: str
) -> None:
    ours = make_model_dir(tmp_path / "ours", b"our bytes")
    theirs = make_model_dir(tmp_path / "theirs", b"their bytes, longer")
    registry = Interleaved(target.open(), before, lambda: publish(tmp_path / "theirs", target.open()))

    if before == "model.onnx":
        # Theirs is whole before ours writes anything: ours, written last, stands whole (their
        # manifest names a digest the registry no longer holds, which every node refuses).
        publish(tmp_path / "ours", registry)
        assert target.read(ARTIFACT_KEY) == b"our bytes"
    else:  # theirs wrote over our artifact before our card: ours names bytes the registry lacks
        with pytest.raises(RegistryError, match="changed while it was being published"):
            publish(tmp_path / "ours", registry)
        # Publishing the version meant to stand again mends it.
        assert publish(tmp_path / "ours", target.open()).already_published

    card = target.read(CARD_KEY)
    held = hashlib.sha256(target.read(ARTIFACT_KEY) or b"").hexdigest()
    assert card is not None
    assert ModelCard.from_json(card).artifact.sha256 == held == ours.artifact.sha256
    assert theirs.artifact.sha256 != held


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.onnx").write_bytes(b"tampered"), "has sha256"),
        (lambda d: (d / "model.onnx").unlink(), "is missing"),
        (lambda d: (d / CARD_FILENAME).unlink(), "cannot be read"),
        (lambda d: (d / CARD_FILENAME).write_text("{}"), "model_id"),
    ],
    ids=["digest", "no-artifact", "no-card", "bad-card"],
)
def test_an_inconsistent_model_dir_is_refused_before_any_write(
    tmp_path: Path, damage: Callable[[Path], object], message: str
) -> None:
    make_model_dir(tmp_path / "model")
    damage(tmp_path / "model")
    target = file_target(tmp_path / "registry")

    with pytest.raises(ModelDirError, match=message):
        publish(tmp_path / "model", target.open())
    assert not (tmp_path / "registry").exists()


def test_a_card_naming_a_path_as_artifact_is_refused(tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model", filename="model.onnx")
    card = json.loads((tmp_path / "model" / CARD_FILENAME).read_text())
    card["artifact"]["filename"] = "../model/model.onnx"
    (tmp_path / "model" / CARD_FILENAME).write_text(json.dumps(card))

    with pytest.raises(ModelDirError, match="no plain file name"):
        publish(tmp_path / "model", file_target(tmp_path / "registry").open())


# --- list --------------------------------------------------------------------------------------------


def test_list_versions_sorts_by_model_then_creation_and_skips_bad_cards(
    target: Target, tmp_path: Path
) -> None:
    registry = target.open()
    for model_id, version, created in [
        ("alpha", "v1", created_at(10)),
        ("alpha", "v2", "2026-11-24T09:00:00"),  # no zone: taken as UTC, still sorts
        ("beta", "v1", created_at(8)),
    ]:
        directory = tmp_path / model_id / version
        make_model_dir(directory, version.encode(), model_id=model_id, version=version, created=created)
        publish(directory, registry)
    target.write(f"gamma/v1/{CARD_FILENAME}", b"{broken")
    target.write(f"delta/v9/{CARD_FILENAME}", target.read(f"beta/v1/{CARD_FILENAME}") or b"")
    target.write("notes/readme.txt", b"not a version")

    listing = list_versions(registry)

    assert [(m.card.model_id, m.card.version) for m in listing.models] == [
        ("alpha", "v2"),
        ("alpha", "v1"),
        ("beta", "v1"),
    ]
    assert listing.models[0].artifact_uri == f"{target.uri}/alpha/v2/model.onnx"
    assert sorted(u.uri.split("/")[-3] for u in listing.unreadable) == ["delta", "gamma"]
    assert [m.card.version for m in list_versions(registry, "alpha").models] == ["v2", "v1"]
    assert list_versions(registry, "nope").models == []


def test_listing_a_missing_file_registry_says_so(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        list_versions(open_registry((tmp_path / "nowhere").as_uri()))


# --- S3 specifics ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_s3_prefix_is_part_of_every_key(s3: MotoS3, tmp_path: Path) -> None:
    target = s3_target(s3, prefix="team-a/prod")
    make_model_dir(tmp_path / "model")

    published = publish(tmp_path / "model", target.open())

    assert target.keys() == [f"team-a/prod/{ARTIFACT_KEY}", f"team-a/prod/{CARD_KEY}"]
    assert published.artifact_uri == f"s3://{BUCKET}/team-a/prod/{ARTIFACT_KEY}"
    assert [m.card.version for m in list_versions(target.open()).models] == ["v3"]


@pytest.mark.integration
def test_a_missing_bucket_is_refused_unless_asked_to_create_it(s3: MotoS3, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model")
    registry = open_registry("s3://fresh", endpoint=s3.endpoint, access_key="k", secret_key=LEAKY_SECRET)

    with pytest.raises(BucketNotFoundError, match="'fresh' does not exist"):
        publish(tmp_path / "model", registry)
    assert not s3.client().bucket_exists("fresh")

    publish(tmp_path / "model", registry, create_bucket=True)
    assert s3.client().stat_object("fresh", CARD_KEY).size


@pytest.mark.integration
def test_a_card_write_denied_by_policy_removes_the_artifact(s3: MotoS3, tmp_path: Path) -> None:
    deny_cards = {
        "Effect": "Deny",
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{BUCKET}/*/{CARD_FILENAME}",
    }
    key, secret = s3.create_user("no-cards", [*S3_ALL, deny_cards])
    make_model_dir(tmp_path / "model")
    target = s3_target(s3)

    with s3.auth_enabled():
        registry = open_registry(f"s3://{BUCKET}", endpoint=s3.endpoint, access_key=key, secret_key=secret)
        with pytest.raises(RegistryAuthError, match=f"write {CARD_KEY}"):
            publish(tmp_path / "model", registry)

    assert target.keys() == []


@pytest.mark.integration
@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_refused_credentials_are_an_auth_error_that_never_shows_the_secret(
    s3: MotoS3, tmp_path: Path, caplog: pytest.LogCaptureFixture, wrong: str
) -> None:
    key, secret = s3.create_user("publisher", S3_ALL)
    bad_secret = LEAKY_SECRET
    access_key = key if wrong == "secret" else "AKIAUNKNOWNUNKNOWN00"
    make_model_dir(tmp_path / "model")
    caplog.set_level(logging.DEBUG)

    with s3.auth_enabled():
        good = open_registry(f"s3://{BUCKET}", endpoint=s3.endpoint, access_key=key, secret_key=secret)
        assert list_versions(good).models == []  # the user itself is fine
        bad = open_registry(
            f"s3://{BUCKET}", endpoint=s3.endpoint, access_key=access_key, secret_key=bad_secret
        )
        with pytest.raises(RegistryAuthError) as caught:
            publish(tmp_path / "model", bad)

    expected = "SignatureDoesNotMatch" if wrong == "secret" else "InvalidAccessKeyId"
    assert expected in str(caught.value)
    assert bad_secret not in str(caught.value)
    assert caplog.records, "the registry logged what it did"
    assert all(bad_secret not in JsonFormatter().format(r) for r in caplog.records)
    assert bad_secret not in repr(bad)


@pytest.mark.integration
def test_a_closed_port_is_unavailable_within_seconds(tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model")
    registry = open_registry(
        "s3://models", endpoint=f"http://127.0.0.1:{free_port()}", access_key="k", secret_key=LEAKY_SECRET
    )

    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match="connection refused") as caught:
        publish(tmp_path / "model", registry)

    assert time.monotonic() - started < 3
    assert LEAKY_SECRET not in str(caught.value)


@pytest.mark.integration
def test_an_endpoint_that_never_answers_times_out(tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections in the backlog, never answers
        port = silent.getsockname()[1]
        options = S3Options(connect_timeout=0.5, read_timeout=0.3, retries=1)
        registry = open_registry(
            "s3://models",
            endpoint=f"http://127.0.0.1:{port}",
            access_key="k",
            secret_key=LEAKY_SECRET,
            options=options,
        )
        started = time.monotonic()
        with pytest.raises(RegistryUnavailableError, match="timed out"):
            publish(tmp_path / "model", registry)
        assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("uri", "endpoint"),
    [
        ("http://host/models", None),
        ("file://relative/path", None),
        ("file:relative", None),
        ("s3:///no-bucket", None),
        ("models", None),
        ("s3://models", "http://admin:hunter2@minio:9000"),
        ("s3://models", "minio:9000"),
        ("s3://models", "http://minio:9000/path"),
        ("s3://Not_A_Bucket", "http://127.0.0.1:1"),
    ],
)
def test_unusable_uris_and_endpoints_are_config_errors(
    uri: str, endpoint: str | None, tmp_path: Path
) -> None:
    make_model_dir(tmp_path / "model")
    with pytest.raises(RegistryConfigError) as caught:
        publish(tmp_path / "model", open_registry(uri, endpoint=endpoint))
    assert "hunter2" not in str(caught.value)


# --- CLI ------------------------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_show_locals=False)

    @app.callback()
    def main() -> None:
        """Test app: only the registry commands."""

    register(app)
    return app


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    base: dict[str, str | None] = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "COLUMNS": "200"}
    return CliRunner().invoke(cli(), list(args), env={**base, **(env or {})})


def s3_env(key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> dict[str, str | None]:
    return {"VIBRATION_S3_ACCESS_KEY": key, "VIBRATION_S3_SECRET_KEY": secret}


@pytest.mark.integration
def test_cli_publish_prints_and_writes_the_manifest(s3: MotoS3, tmp_path: Path) -> None:
    card = make_model_dir(tmp_path / "model")
    args = ["publish", str(tmp_path / "model"), "--registry", f"s3://{BUCKET}", "--endpoint", s3.endpoint]
    args += ["--credentials-secret", "minio-credentials", "--namespace", "hall-a"]

    result = run(*args, env=s3_env())

    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load((tmp_path / "model" / "vibrationmodel.yaml").read_text())
    assert yaml.safe_load(result.stdout) == manifest
    assert manifest["metadata"] == {"name": "spindle-classifier", "namespace": "hall-a"}
    assert manifest["spec"]["artifact"] == {
        "uri": f"s3://{BUCKET}/{ARTIFACT_KEY}",
        "sha256": card.artifact.sha256,
        "credentialsSecret": "minio-credentials",
        "endpoint": s3.endpoint,
    }
    assert f"# sha256:   {card.artifact.sha256}" in result.stdout
    assert SECRET_KEY not in result.output

    again = run(*args, "--manifest-out", str(tmp_path / "again.yaml"), env=s3_env())
    assert again.exit_code == 0, again.output
    assert "already published, identical" in again.stdout
    assert yaml.safe_load((tmp_path / "again.yaml").read_text()) == manifest


@pytest.mark.integration
def test_cli_publish_points_the_manifest_at_the_hall(s3: MotoS3, tmp_path: Path) -> None:
    # Published through a port-forward, fetched by the nodes at the in-cluster address.
    make_model_dir(tmp_path / "model")
    args = ["publish", str(tmp_path / "model"), "--registry", f"s3://{BUCKET}", "--endpoint", s3.endpoint]
    args += ["--name", "spindle", "--node-endpoint", "http://minio.hall-b:9000"]
    args += ["--mqtt-broker", "mqtts://hall-b-mosquitto.hall-b:8883", "--topic-prefix", "factory/hall-b"]
    args += ["--mqtt-ca-secret", "hall-b-broker-ca"]
    args += ["--mqtt-credentials-secret", "mqtt-serving", "--node-selector", "edge.vibration.io/hall=hall-b"]

    result = run(*args, env=s3_env())

    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load((tmp_path / "model" / "vibrationmodel.yaml").read_text())
    assert manifest["metadata"] == {"name": "spindle"}
    assert manifest["spec"]["artifact"]["endpoint"] == "http://minio.hall-b:9000"
    assert manifest["spec"]["nodeSelector"] == {"edge.vibration.io/hall": "hall-b"}
    assert manifest["spec"]["mqtt"] == {
        "broker": "mqtts://hall-b-mosquitto.hall-b:8883",
        "topicPrefix": "factory/hall-b",
        "credentialsSecret": "mqtt-serving",
        "caSecret": "hall-b-broker-ca",
    }


@pytest.mark.integration
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mqtt-broker", "tcp://broker:1883"], "--mqtt-broker: String should match"),
        (["--topic-prefix", "factory/#"], "--topic-prefix: String should match"),
        (["--mqtt-credentials-secret", "Not_A_Name"], "--mqtt-credentials-secret: String should match"),
        (["--name", "Spindle Classifier"], "--name 'Spindle Classifier'"),
        (["--namespace", "Hall_A"], "--namespace 'Hall_A'"),
        (["--name", "spindle.classifier"], "--name 'spindle.classifier' is not a DNS label"),
        (["--name", "s" * 64], "at most 63 characters"),
        (["--node-endpoint", "minio.hall-b:9000"], "--node-endpoint (or --endpoint): String should match"),
        (["--credentials-secret", "Minio Keys"], "--credentials-secret: String should match"),
        (["--node-selector", "edge.vibration.io/hall"], "is not KEY=VALUE"),
        (
            ["--mqtt-ca-secret", "hall-ca"],
            "--mqtt-ca-secret with --mqtt-broker: Value error, mqtt.caSecret needs",
        ),
    ],
)
def test_cli_publish_refuses_bad_manifest_flags_before_uploading(
    s3: MotoS3, tmp_path: Path, flags: list[str], message: str
) -> None:
    make_model_dir(tmp_path / "model")
    args = ["publish", str(tmp_path / "model"), "--registry", f"s3://{BUCKET}", "--endpoint", s3.endpoint]

    result = run(*args, *flags, env=s3_env())

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert not (tmp_path / "model" / "vibrationmodel.yaml").exists()
    listed = run("list", "--registry", f"s3://{BUCKET}", "--endpoint", s3.endpoint, env=s3_env())
    assert listed.exit_code == 0, listed.output
    assert "no published models" in listed.stdout  # nothing was uploaded


def test_cli_publish_node_endpoint_needs_an_s3_registry(tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model")
    registry = (tmp_path / "registry").as_uri()
    result = run(
        "publish", str(tmp_path / "model"), "--registry", registry, "--node-endpoint", "http://x:9000"
    )
    assert result.exit_code == 2
    assert "--node-endpoint is for s3:// registries" in result.stderr
    assert not (tmp_path / "registry").exists()


@pytest.mark.integration
def test_cli_publish_exit_codes(s3: MotoS3, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "a", b"first")
    make_model_dir(tmp_path / "b", b"second")
    (tmp_path / "bad").mkdir()
    registry = ["--registry", f"s3://{BUCKET}", "--endpoint", s3.endpoint]

    assert run("publish", str(tmp_path / "a"), *registry, env=s3_env()).exit_code == 0
    conflict = run("publish", str(tmp_path / "b"), *registry, env=s3_env())
    bad_dir = run("publish", str(tmp_path / "bad"), *registry, env=s3_env())
    down = ["--registry", "s3://models", "--endpoint", f"http://127.0.0.1:{free_port()}"]
    unavailable = run("publish", str(tmp_path / "a"), *down, env=s3_env())
    bad_uri = run("publish", str(tmp_path / "a"), "--registry", "ftp://x", env=s3_env())

    for result, code, text in [
        (conflict, 4, "already published"),
        (bad_dir, 2, "is inconsistent"),
        (unavailable, 5, "connection refused"),
        (bad_uri, 2, "use file:///path or s3://"),
    ]:
        assert result.exit_code == code, result.output
        assert result.stdout == ""
        assert result.stderr.startswith("error: ")
        assert text in result.stderr
        assert result.stderr.count("\n") == 1
        assert "Traceback" not in result.output


@pytest.mark.integration
def test_cli_refused_credentials_exit_5_without_the_secret(s3: MotoS3, tmp_path: Path) -> None:
    key, _ = s3.create_user("publisher", S3_ALL)
    make_model_dir(tmp_path / "model")
    leaked = LEAKY_SECRET
    args = ["publish", str(tmp_path / "model"), "--registry", f"s3://{BUCKET}", "--endpoint", s3.endpoint]

    with s3.auth_enabled():
        from_env = run(*args, env=s3_env(key, leaked))
        from_flag = run(*args, "--access-key", key, "--secret-key", leaked)

    for result in (from_env, from_flag):
        assert result.exit_code == 5, result.output
        assert "SignatureDoesNotMatch" in result.stderr
        assert leaked not in result.output


def test_cli_list_shows_versions_and_warns_about_bad_cards(tmp_path: Path) -> None:
    registry = (tmp_path / "registry").as_uri()
    for version, payload in [("v1", b"one"), ("v2", b"two")]:
        card = make_model_dir(tmp_path / version, payload, version=version)
        assert run("publish", str(tmp_path / version), "--registry", registry).exit_code == 0
    (tmp_path / "registry" / "broken" / "v1").mkdir(parents=True)
    (tmp_path / "registry" / "broken" / "v1" / CARD_FILENAME).write_text("{")

    result = run("list", "--registry", registry)

    assert result.exit_code == 0, result.output
    assert "warning: skipped" in result.stderr
    rows = [line for line in result.stdout.splitlines() if "spindle-classifier" in line]
    assert len(rows) == 2
    assert "v2" in rows[1]
    assert card.artifact.sha256[:12] in rows[1]
    assert "0.950" in rows[1]
    assert "0.949" in rows[1]
    only = run("list", "--registry", registry, "--model-id", "other")
    assert "no published models" in only.stdout


def test_cli_list_of_a_down_endpoint_exits_5() -> None:
    result = run("list", "--registry", "s3://models", "--endpoint", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 5
    assert result.stderr.startswith("error: registry s3://models: ")
