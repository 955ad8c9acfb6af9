"""A central broker for the e2e bridge scenario, and a subscriber at it that keeps its session.

The central broker is a plain Mosquitto in a namespace of its own, persisting
to a hostPath on one node: stopped (scaled to zero) and started again, it
comes back with its subscribers' sessions, as a real central broker with a
volume does. The subscriber has a persistent session (clean start off, a
session expiry), so what the bridge forwards while it reconnects is queued
for it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vibration_core.messages import Prediction

NAME = "central-broker"
PORT = 1883
IMAGE = "eclipse-mosquitto:2.0.21"
DATA = "/var/lib/vibration-edge/e2e-central-broker"
"""On the node: the gateways' own directory is the one hostPath every node of the test cluster has."""
CONFIG = """\
listener 1883
allow_anonymous true
persistence true
persistence_location /mosquitto/data/
autosave_interval 1
max_queued_messages 100000
"""


def objects(namespace: str, node: str) -> list[dict[str, Any]]:
    """Namespace, config, Deployment (pinned to `node`, data on its disk) and Service."""
    labels = {"app.kubernetes.io/name": NAME}
    meta = {"name": NAME, "namespace": namespace, "labels": labels}
    chown = {
        "name": "own-data",
        "image": IMAGE,
        "command": ["chown", "1883:1883", "/mosquitto/data"],
        "securityContext": {"runAsUser": 0, "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}},
        "volumeMounts": [{"name": "data", "mountPath": "/mosquitto/data"}],
    }
    broker = {
        "name": "mosquitto",
        "image": IMAGE,
        "command": ["mosquitto", "-c", "/mosquitto/config/mosquitto.conf"],
        "securityContext": {"runAsUser": 1883, "runAsGroup": 1883, "allowPrivilegeEscalation": False},
        "ports": [{"name": "mqtt", "containerPort": PORT}],
        "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 1},
        "volumeMounts": [
            {"name": "data", "mountPath": "/mosquitto/data"},
            {"name": "config", "mountPath": "/mosquitto/config"},
        ],
    }
    pod = {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "terminationGracePeriodSeconds": 10,
        "initContainers": [chown],
        "containers": [broker],
        "volumes": [
            {"name": "data", "hostPath": {"path": DATA, "type": "DirectoryOrCreate"}},
            {"name": "config", "configMap": {"name": NAME}},
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"mosquitto.conf": CONFIG}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": labels, "ports": [{"name": "mqtt", "port": PORT, "targetPort": "mqtt"}]},
        },
    ]


class CentralSubscriber:
    """Counts the predictions reaching the central broker; reconnects with the same session."""

    def __init__(self, prefix: str) -> None:
        self.topic = f"{prefix}/machines/+/predictions"
        self.received: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self._client: paho.Client | None = None

    def connect(self, url: str) -> None:
        """Connect (again) to the central broker at ``http://127.0.0.1:PORT`` (a port-forward)."""
        port = int(url.rsplit(":", 1)[1])
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="e2e-central-subscriber", protocol=paho.MQTTv5
        )
        client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call] # paho leaves it untyped
        properties.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=properties)
        client.loop_start()
        client.subscribe(self.topic, qos=1)
        self._client = client

    def disconnect(self) -> None:
        """Drop the connection (the session stays at the broker)."""
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        prediction = Prediction.decode(bytes(message.payload))
        with self._lock:
            self.received[(prediction.machine, prediction.timestamp_ns)] += 1

    def wait_for(self, keys: set[tuple[str, int]], timeout_s: float = 120) -> set[tuple[str, int]]:
        """Until every key arrived (or the timeout); the keys still missing."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                missing = keys - set(self.received)
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.5)
