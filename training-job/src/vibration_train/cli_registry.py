"""The `publish` and `list` commands of `vibration-train`, registered on its Typer app.

Each command parses its flags, calls one library function and turns the
registry's typed errors into an exit code and a one-line ``error: ...`` on
stderr: 0 ok (also for an identical republish), 2 a bad model directory or
registry URI, 4 a version conflict, 5 the registry (down, refused
credentials, missing bucket, anything else it said). Credentials come from
flags or the environment and are never printed.
"""

# No `from __future__ import annotations`: Typer reads the parameter annotations at run time.
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from vibration_core.api import MAX_NAME_LENGTH, NAME_PATTERN
from vibration_core.modelcard import ModelCard
from vibration_train.cli_common import exit_codes
from vibration_train.manifest import DEFAULT_BROKER, DEFAULT_TOPIC_PREFIX, build_manifest, to_yaml
from vibration_train.registry import (
    ModelDirError,
    PublishedModel,
    Registry,
    RegistryConfigError,
    RegistryError,
    VersionConflictError,
    list_versions,
    publish,
    read_model_dir,
    version_keys,
)
from vibration_train.registry_backends import open_registry

EXIT_BAD_INPUT = 2
EXIT_CONFLICT = 4
EXIT_REGISTRY = 5
MANIFEST_FILENAME = "vibrationmodel.yaml"

RegistryUri = Annotated[
    str,
    typer.Option("--registry", help="file:///absolute/dir or s3://bucket\\[/prefix].", show_default=False),
]
Endpoint = Annotated[
    str | None,
    typer.Option(help="S3 endpoint URL, e.g. http://minio.minio:9000 (AWS S3 when not given)."),
]
AccessKey = Annotated[
    str | None,
    typer.Option(
        envvar=["VIBRATION_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"],
        help="S3 access key (better from the environment).",
        show_default=False,
    ),
]
SecretKey = Annotated[
    str | None,
    typer.Option(
        envvar=["VIBRATION_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"],
        help="S3 secret key (better from the environment; never printed).",
        show_default=False,
    ),
]
Region = Annotated[str | None, typer.Option(help="S3 region; asked from the endpoint when not given.")]


def register(app: typer.Typer) -> None:
    """Add the `publish` and `list` commands to `app`."""
    app.command("publish")(publish_command)
    app.command("list")(list_command)


def publish_command(  # noqa: PLR0917 (Typer passes every option as a parameter)
    model_dir: Annotated[
        Path, typer.Argument(help="Directory holding the artifact and modelcard.json.", show_default=False)
    ],
    registry: RegistryUri,
    endpoint: Endpoint = None,
    access_key: AccessKey = None,
    secret_key: SecretKey = None,
    region: Region = None,
    credentials_secret: Annotated[
        str | None, typer.Option(help="Secret the nodes read registry credentials from (in the manifest).")
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="metadata.namespace of the manifest.")] = None,
    name: Annotated[
        str | None, typer.Option(help="metadata.name of the manifest \\[default: the model id].")
    ] = None,
    node_endpoint: Annotated[
        str | None,
        typer.Option(help="S3 endpoint as the nodes reach it, for the manifest \\[default: --endpoint]."),
    ] = None,
    mqtt_broker: Annotated[
        str, typer.Option(help="The hall's broker as the serving pods reach it, for the manifest.")
    ] = DEFAULT_BROKER,
    topic_prefix: Annotated[str, typer.Option(help="The hall's topic prefix, for the manifest.")] = (
        DEFAULT_TOPIC_PREFIX
    ),
    mqtt_credentials_secret: Annotated[
        str | None, typer.Option(help="Secret with the serving pods' MQTT username and password.")
    ] = None,
    mqtt_ca_secret: Annotated[
        str | None, typer.Option(help="Secret with ca.crt of an mqtts:// broker's private CA.")
    ] = None,
    node_selector: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE label of the nodes that serve the model (repeat for more)."),
    ] = None,
    manifest_out: Annotated[
        Path | None, typer.Option(help=f"Where to write the manifest \\[default: DIR/{MANIFEST_FILENAME}].")
    ] = None,
    *,
    create_bucket: Annotated[
        bool, typer.Option("--create-bucket", help="Create the bucket when it does not exist.")
    ] = False,
) -> None:
    """Publish a model (artifact first, card last) and write its VibrationModel manifest."""
    if node_endpoint is not None and not registry.startswith("s3:"):
        _fail("--node-endpoint is for s3:// registries; a file:// artifact has no endpoint", EXIT_BAD_INPUT)
    options = ManifestOptions(
        name=name,
        namespace=namespace,
        credentials_secret=credentials_secret,
        endpoint=(node_endpoint or endpoint) if registry.startswith("s3:") else None,
        mqtt_broker=mqtt_broker,
        topic_prefix=topic_prefix,
        mqtt_credentials_secret=mqtt_credentials_secret,
        mqtt_ca_secret=mqtt_ca_secret,
        node_selector=_labels(node_selector or []),
    )
    with exit_codes(*_REGISTRY_ERRORS):
        target = open_registry(
            registry, endpoint=endpoint, access_key=access_key, secret_key=secret_key, region=region
        )
        manifest = _manifest_for(model_dir, target, options)
        published = publish(model_dir, target, create_bucket=create_bucket)
    text = to_yaml(manifest)
    out = manifest_out or model_dir / MANIFEST_FILENAME
    _write_manifest(out, text)
    _print_summary(published, out, text)


def _manifest_for(model_dir: Path, target: Registry, options: "ManifestOptions") -> dict[str, Any]:
    """The manifest of the model in `model_dir` as published to `target`.

    Built before anything is uploaded, so a bad flag costs no upload. A version
    already published is only ever the same model (publish refuses any other),
    so it stays true.
    """
    card, _ = read_model_dir(model_dir)
    return options.build(card, target.uri_for(version_keys(card)[0]))


def _write_manifest(out: Path, text: str) -> None:
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"published, but cannot write the manifest {out}: {exc.strerror or exc}", 1)


def _print_summary(published: PublishedModel, out: Path, text: str) -> None:
    """What was published, then the manifest: YAML comments first, so `kubectl apply -f -` takes stdout."""
    card = published.card
    state = "already published, identical (nothing written)" if published.already_published else "published"
    typer.echo(f"# {card.model_id} {card.version}: {state}")
    typer.echo(f"# artifact: {published.artifact_uri}")
    typer.echo(f"# sha256:   {published.sha256}")
    typer.echo(f"# manifest: {out}")
    typer.echo(text, nl=False)


class ManifestFlagError(ValueError):
    """A flag would make the VibrationModel manifest invalid; names the flag."""


# Where a manifest field comes from, for messages: (path in the manifest) -> flag.
_FLAGS = {
    ("metadata", "name"): "--name",
    ("metadata", "namespace"): "--namespace",
    ("spec", "artifact", "endpoint"): "--node-endpoint (or --endpoint)",
    ("spec", "artifact", "credentialsSecret"): "--credentials-secret",
    ("spec", "mqtt", "broker"): "--mqtt-broker",
    ("spec", "mqtt", "topicPrefix"): "--topic-prefix",
    ("spec", "mqtt", "credentialsSecret"): "--mqtt-credentials-secret",
    ("spec", "mqtt", "caSecret"): "--mqtt-ca-secret",
    ("spec", "mqtt"): "--mqtt-ca-secret with --mqtt-broker",
    ("spec", "nodeSelector"): "--node-selector",
}


@dataclass(frozen=True)
class ManifestOptions:
    """The manifest's flags, checked together by building the manifest."""

    name: str | None
    namespace: str | None
    credentials_secret: str | None
    endpoint: str | None
    mqtt_broker: str
    topic_prefix: str
    mqtt_credentials_secret: str | None
    mqtt_ca_secret: str | None
    node_selector: dict[str, str]

    def build(self, card: ModelCard, artifact_uri: str) -> dict[str, Any]:
        """The manifest; raises `ManifestFlagError` naming the flags that make it invalid."""
        for flag, value in (("--name", self.name), ("--namespace", self.namespace)):
            if value is not None and (len(value) > MAX_NAME_LENGTH or not re.fullmatch(NAME_PATTERN, value)):
                raise ManifestFlagError(
                    f"{flag} {value!r} is not a DNS label (lowercase a-z, 0-9 and '-', at most "
                    f"{MAX_NAME_LENGTH} characters), as a VibrationModel's name and its namespace must be"
                )
        try:
            return build_manifest(card, artifact_uri, **dataclasses.asdict(self))
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                loc = tuple(str(part) for part in error["loc"])
                flag = next((f for path, f in _FLAGS.items() if loc[: len(path)] == path), ".".join(loc))
                problems.append(f"{flag}: {error['msg']}")
            raise ManifestFlagError("invalid manifest flag: " + "; ".join(problems)) from None


_REGISTRY_ERRORS = (
    (ModelDirError, EXIT_BAD_INPUT),
    (RegistryConfigError, EXIT_BAD_INPUT),
    (ManifestFlagError, EXIT_BAD_INPUT),
    (VersionConflictError, EXIT_CONFLICT),
    (RegistryError, EXIT_REGISTRY),
)
"""The registry's typed errors as exit codes (the first type that matches)."""


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--node-selector {pair!r} is not KEY=VALUE", EXIT_BAD_INPUT)
        labels[key] = value
    return labels


def list_command(  # noqa: PLR0917 (Typer passes every option as a parameter)
    registry: RegistryUri,
    endpoint: Endpoint = None,
    access_key: AccessKey = None,
    secret_key: SecretKey = None,
    region: Region = None,
    model_id: Annotated[str | None, typer.Option(help="Only this model's versions.")] = None,
) -> None:
    """List the published versions with their metrics and digests."""
    with exit_codes(*_REGISTRY_ERRORS):
        target = open_registry(
            registry, endpoint=endpoint, access_key=access_key, secret_key=secret_key, region=region
        )
        listing = list_versions(target, model_id)
    for skipped in listing.unreadable:
        typer.echo(f"warning: skipped {skipped.uri}: {_one_line(skipped.reason)}", err=True)
    if not listing.models:
        typer.echo(f"no published models in {target.uri}")
        return
    table = Table(title=f"models in {target.uri}")
    for column in ("model id", "version", "format", "accuracy", "macro F1", "sha256", "created"):
        table.add_column(column, no_wrap=True)
    for model in listing.models:
        card = model.card
        table.add_row(
            card.model_id,
            card.version,
            card.format,
            f"{card.metrics.accuracy:.3f}",
            f"{card.metrics.macro_f1:.3f}",
            model.sha256[:12],
            card.created.isoformat(timespec="seconds"),
        )
    Console().print(table)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(error: Exception | str, code: int) -> NoReturn:
    typer.echo(f"error: {_one_line(str(error))}", err=True)
    raise typer.Exit(code)
