"""The objects `make demo-k8s` applies besides the chart: pure builders, no cluster client.

- a MinIO for the hall (the demo's model registry; a real hall points at its own S3),
- one Job per gateway that puts a labelled test set where the validator looks
  (``spec.validation.testDataPath``) and prepares the model cache (the
  hostPath ``serving.cacheHostPath``, owned by the serving pods' uid): what a
  node's administrator does once per gateway,
- the Secrets: registry keys, the broker's users and ACLs, the serving pods' MQTT user,
- the chart values of the demo hall.

`tests/tools/test_demo_k8s.py` validates every object against the Kubernetes
schemas and renders the chart with the values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vibration_operator.builders import RUN_AS, restricted_security_context

if TYPE_CHECKING:
    from collections.abc import Sequence

HALL_LABEL = "edge.vibration.io/hall"
"""The label that makes a node a gateway of a hall."""
SERVING_UID = RUN_AS
"""The serving pods' user."""
MINIO_PORT = 9000
MINIO_UID = 1000
TMP_DIR = "/tmp"  # noqa: S108 - a path inside the MinIO container, an emptyDir of its own
CERTS_DIR = f"{TMP_DIR}/certs"


@dataclass(frozen=True)
class Hall:
    """What the demo's hall is called and where its images come from."""

    name: str = "hall-demo"
    namespace: str = "hall-demo"
    image_registry: str = "ghcr.io/vibration-edge"
    image_tag: str = "0.1.0"
    minio_image: str = "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
    test_data_path: str = "/var/lib/vibration-edge/testdata"
    cache_path: str = "/var/lib/vibration-edge/cache"

    @property
    def topic_prefix(self) -> str:
        """The hall's MQTT topic tree."""
        return f"factory/{self.name}"

    @property
    def broker_url(self) -> str:
        """The chart's broker, as the serving pods reach it (the chart's NOTES print the same)."""
        return f"mqtt://{self.name}-vibration-edge-mosquitto.{self.namespace}:1883"

    @property
    def minio_url(self) -> str:
        """MinIO as the nodes reach it."""
        return f"http://minio.{self.namespace}:{MINIO_PORT}"

    def image(self, name: str) -> str:
        """One of the project's images."""
        return f"{self.image_registry}/{name}:{self.image_tag}"


def _meta(hall: Hall, name: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/part-of": "vibration-edge-demo", "app.kubernetes.io/name": name}
    return {"name": name, "namespace": hall.namespace, "labels": labels}


def namespace(hall: Hall) -> dict[str, Any]:
    """The hall's namespace."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": hall.namespace}}


def secret(hall: Hall, name: str, data: dict[str, str]) -> dict[str, Any]:
    """An Opaque Secret from strings."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(hall, name),
        "type": "Opaque",
        "stringData": data,
    }


def minio(hall: Hall, credentials: str) -> list[dict[str, Any]]:
    """A single MinIO (Deployment, Service) on an emptyDir: the demo's registry, gone with the pod."""
    keys = (("MINIO_ROOT_USER", "accessKey"), ("MINIO_ROOT_PASSWORD", "secretKey"))
    env = [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": credentials, "key": key}}} for var, key in keys
    ]
    container = {
        "name": "minio",
        "image": hall.minio_image,
        "args": ["server", "/data", "--address", f":{MINIO_PORT}", "--certs-dir", CERTS_DIR],
        "env": env,
        "ports": [{"name": "s3", "containerPort": MINIO_PORT}],
        "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": "s3"}, "periodSeconds": 2},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": TMP_DIR}],
        "securityContext": restricted_security_context(MINIO_UID),
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    }
    selector = {"app.kubernetes.io/name": "minio"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(hall, "minio"),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "securityContext": {"fsGroup": MINIO_UID},
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(hall, "minio"),
        "spec": {"selector": selector, "ports": [{"name": "s3", "port": MINIO_PORT, "targetPort": "s3"}]},
    }
    return [deployment, service]


def seed_job(
    hall: Hall, node: str, seed: int, windows: int = 400, classes: Sequence[str] = ()
) -> dict[str, Any]:
    """A Job on `node`: a labelled test set into the test-data hostPath, the cache dir for the pods.

    `classes` limits the test set to those classes (a node whose machines never showed the
    others); empty means all four. It runs as root, as the node's administrator would: the
    hostPaths belong to the node.
    """
    digest = hashlib.sha256(node.encode()).hexdigest()[:8]  # node names may be long or dotted
    only = f" --classes {','.join(classes)}" if classes else ""
    script = (
        f"vibration-train simulate --windows {windows} --seed {seed}{only} --out /testdata/testset.parquet"
        # Not recursive: the cache is the pods' (0750, theirs), which root without DAC_READ_SEARCH
        # cannot list; a second run on the same gateway failed on it.
        f" && chown {SERVING_UID}:{SERVING_UID} /cache && chmod 0750 /cache"
    )
    container = {
        "name": "seed",
        "image": hall.image("vibration-train"),
        "command": ["/bin/sh", "-ec", script],
        "volumeMounts": [
            {"name": "testdata", "mountPath": "/testdata"},
            {"name": "cache", "mountPath": "/cache"},
        ],
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]},
        },
    }
    volumes = [
        {"name": "testdata", "hostPath": {"path": hall.test_data_path, "type": "DirectoryOrCreate"}},
        {"name": "cache", "hostPath": {"path": hall.cache_path, "type": "DirectoryOrCreate"}},
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**_meta(hall, f"seed-testdata-{digest}"), "annotations": {"demo/node": node}},
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "spec": {
                    "nodeName": node,
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": volumes,
                }
            },
        },
    }


def chart_values(hall: Hall, *, users_secret: str, registry_secret: str) -> dict[str, Any]:
    """The chart values of the demo hall."""
    return {
        "operator": {
            "image": {"repository": f"{hall.image_registry}/vibration-operator", "tag": hall.image_tag}
        },
        "serving": {
            "image": {"repository": f"{hall.image_registry}/vibration-infer", "tag": hall.image_tag},
            "edgetpuImage": {
                "repository": f"{hall.image_registry}/vibration-infer",
                "tag": f"{hall.image_tag}-edgetpu",
            },
            "cacheHostPath": hall.cache_path,
        },
        "registry": {"endpoint": hall.minio_url, "credentialsSecret": registry_secret},
        "broker": {"auth": {"existingSecret": users_secret}, "persistence": {"enabled": False}},
    }


def acl_for(template: str, topic_prefix: str) -> str:
    """The example ACL file (`examples/broker/aclfile`, written for hall A) for another hall."""
    return template.replace("factory/hall-a", topic_prefix)
