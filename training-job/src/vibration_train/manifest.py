"""The `VibrationModel` manifest that points the cluster at a published model.

One pure builder turns a model card and the artifact's registry URI into the
custom resource a person applies with kubectl or commits for Argo CD. It is
built and validated with the shared spec model (`vibration_core.spec`), the
same one the CRD is generated from, so a manifest this job emits is one the
API server accepts. It fills in what the card knows (version, digest,
format) and the hall's broker; node selection, rollout, drift policy and the
promotion gate keep their defaults for whoever deploys it to change. No
validation floor comes from the card's own held-out figures: a floor a model
sets for itself can never refuse a bad model (the default gate, derived from
the class count and the version the node serves, does; see
`vibration_core.gate`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from vibration_core.api import API_VERSION, KIND
from vibration_core.spec import VibrationModel

if TYPE_CHECKING:
    from vibration_core.modelcard import ModelCard

__all__ = ["API_VERSION", "KIND", "build_manifest", "to_yaml"]

DEFAULT_BROKER = "mqtt://mosquitto:1883"
DEFAULT_TOPIC_PREFIX = "factory/hall-a"


def build_manifest(
    card: ModelCard,
    artifact_uri: str,
    *,
    name: str | None = None,
    namespace: str | None = None,
    credentials_secret: str | None = None,
    endpoint: str | None = None,
    mqtt_broker: str = DEFAULT_BROKER,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    mqtt_credentials_secret: str | None = None,
    mqtt_ca_secret: str | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Build the `VibrationModel` for a published model.

    Args:
        card: The card of the published version.
        artifact_uri: Where the artifact lives in the registry (s3:// or file://).
        name: metadata.name; the model id when not given.
        namespace: metadata.namespace; left out when not given.
        credentials_secret: Name of the Secret holding the registry credentials.
        endpoint: The S3 endpoint URL the nodes fetch from, when not AWS.
        mqtt_broker: The hall's broker URL.
        topic_prefix: The hall's topic prefix.
        mqtt_credentials_secret: Name of the Secret with the serving pods' MQTT user.
        mqtt_ca_secret: Name of the Secret with the ca.crt of an mqtts:// broker's private CA.
        node_selector: Labels of the nodes that serve the model; without, every node does.

    Raises:
        pydantic.ValidationError: when the result would not be a valid VibrationModel.
    """
    metadata: dict[str, Any] = {"name": name or card.model_id}
    if namespace:
        metadata["namespace"] = namespace
    artifact: dict[str, Any] = {"uri": artifact_uri, "sha256": card.artifact.sha256}
    if credentials_secret:
        artifact["credentialsSecret"] = credentials_secret
    if endpoint:
        artifact["endpoint"] = endpoint
    mqtt: dict[str, Any] = {"broker": mqtt_broker, "topicPrefix": topic_prefix}
    if mqtt_credentials_secret:
        mqtt["credentialsSecret"] = mqtt_credentials_secret
    if mqtt_ca_secret:
        mqtt["caSecret"] = mqtt_ca_secret
    spec = {
        "version": card.version,
        "artifact": artifact,
        "format": card.format,
        "accelerator": "cpu" if card.format == "onnx" else "coral",  # LiteRT is in the Edge TPU image only
        "nodeSelector": node_selector or {},
        "mqtt": mqtt,
    }
    model = VibrationModel.model_validate(
        {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    )
    manifest = model.to_manifest()
    # Keep the manifest short: only what this job decided, not every default.
    manifest["spec"] = {
        key: manifest["spec"][key]
        for key in ("version", "artifact", "format", "accelerator", "nodeSelector", "mqtt")
        if key != "nodeSelector" or node_selector
    }
    if not manifest["spec"]["artifact"]["unverified"]:
        del manifest["spec"]["artifact"]["unverified"]
    del manifest["spec"]["mqtt"]["client"]  # not this job's choice: the CRD's default applies
    return manifest


def to_yaml(manifest: dict[str, Any]) -> str:
    """Serialise a manifest as block-style YAML in the builder's key order."""
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)
