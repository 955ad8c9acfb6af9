"""The broker configuration the chart renders, run by a real Mosquitto (Debian's, as the tests use)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest

from vibration_testkit.helm import component, of_kind, render, scenario_file
from vibration_testkit.mosquitto import require_mosquitto
from vibration_testkit.net import free_port

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

_START_DEADLINE_S = 10.0


def _broker_objects(*sets: str) -> tuple[dict[str, Any], dict[str, Any]]:
    objects = render((scenario_file("cpu-only"),), sets)
    configmap = next(o for o in of_kind(objects, "ConfigMap") if component(o) == "broker")
    deployment = next(o for o in of_kind(objects, "Deployment") if component(o) == "broker")
    return configmap, deployment


def test_config_has_nodelay_persistence_and_no_anonymous() -> None:
    configmap, deployment = _broker_objects()
    conf = configmap["data"]["mosquitto.conf"].splitlines()
    assert {"set_tcp_nodelay true", "persistence true", "allow_anonymous false"} <= set(conf)
    assert "max_packet_size 2097152" in conf, "one huge message must not take the broker down"
    # The files of the auth Secret (examples/broker/aclfile is one; test_broker_acl.py runs it).
    assert {"password_file /mosquitto/auth/passwordfile", "acl_file /mosquitto/auth/aclfile"} <= set(conf)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == deployment["metadata"]["name"]
    assert volumes["auth"]["secret"]["secretName"] == "hall-a-mqtt-users"


def test_mosquitto_starts_with_the_rendered_config_and_bridge(tmp_path: Path) -> None:
    mosquitto = require_mosquitto()
    configmap, deployment = _broker_objects(
        "broker.bridge.enabled=true",
        f"broker.bridge.address=127.0.0.1:{free_port()}",
        "broker.bridge.credentialsSecret=uplink",
        "broker.bridge.tls.enabled=false",
    )
    root = tmp_path / "mosquitto"
    for folder in ("config", "data", "auth", "bridge", "bridge-template", "bridge-credentials"):
        (root / folder).mkdir(parents=True)
    (root / "auth" / "passwordfile").write_text("")
    (root / "auth" / "aclfile").write_text("pattern read factory/#\n")
    (root / "bridge-credentials" / "username").write_text("hall-a\n")
    (root / "bridge-credentials" / "password").write_text("not-a-real-password\n")
    (root / "bridge-template" / "bridge.conf").write_text(configmap["data"]["bridge.conf"])

    # The init container's own script, with /mosquitto moved under tmp_path.
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    script = init["command"][-1].replace("/mosquitto/", f"{root}/")
    subprocess.run(["/bin/sh", "-ec", script], check=True, timeout=30)
    bridge = (root / "bridge" / "bridge.conf").read_text()
    assert bridge.endswith("remote_username hall-a\nremote_password not-a-real-password\n")
    assert oct((root / "bridge" / "bridge.conf").stat().st_mode & 0o777) == "0o600"

    port = free_port()
    conf = configmap["data"]["mosquitto.conf"].replace("/mosquitto/", f"{root}/")
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    if os.geteuid() == 0:
        conf += "user root\n"  # the test runs as root here; the pod runs as uid 1883
    (root / "config" / "mosquitto.conf").write_text(conf)
    process = subprocess.Popen(
        [mosquitto, "-c", str(root / "config" / "mosquitto.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + _START_DEADLINE_S
        while True:
            assert process.poll() is None, process.communicate()[0].decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen"
                time.sleep(0.1)
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    # A config error stops mosquitto at start (caught above); the bridge then dials the central
    # broker, which is not there: the hall broker keeps serving and queues for it.
    assert "Connecting bridge (step 1) central" in output, output
    assert "Unknown configuration variable" not in output, output


def test_anonymous_clients_get_the_aclfile_not_an_open_broker() -> None:
    # allowAnonymous is for sensors that cannot log in: the users and ACLs stay in force.
    configmap, deployment = _broker_objects("broker.auth.allowAnonymous=true")
    conf = set(configmap["data"]["mosquitto.conf"].splitlines())
    assert "allow_anonymous true" in conf
    assert {"password_file /mosquitto/auth/passwordfile", "acl_file /mosquitto/auth/aclfile"} <= conf
    volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "auth" in volumes


def test_a_gateway_away_cannot_queue_the_broker_past_its_memory() -> None:
    # Its session keeps its share of the hall's windows: bounded in bytes, and the broker's heap
    # below the container's limit, so it refuses messages rather than being OOM-killed.
    configmap, deployment = _broker_objects()
    conf = configmap["data"]["mosquitto.conf"].splitlines()
    assert "max_queued_bytes 33554432" in conf
    assert "memory_limit 201326592" in conf
    (broker,) = deployment["spec"]["template"]["spec"]["containers"]
    assert broker["resources"]["limits"]["memory"] == "256Mi"
    unbounded, _ = _broker_objects("broker.maxQueuedBytes=0", "broker.memoryLimitBytes=0")
    assert not [
        line
        for line in unbounded["data"]["mosquitto.conf"].splitlines()
        if "queued_bytes" in line or "memory_limit" in line
    ]
