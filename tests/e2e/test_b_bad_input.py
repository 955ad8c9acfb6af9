"""A hall's bad input on a real cluster: it shows as a condition and an event naming the node and the
object, and mending the cause recovers without deleting anything.

Runs after ``test_a_rollouts.py`` on the same hall, with a second VibrationModel (``bad-input``,
v2's artifact) so the first one keeps serving:

- its MQTT credentials Secret does not exist: the canary's pod cannot mount it (the kubelet says
  so only in a Warning event), Degraded names the node, the pod's reason and the Secret; creating
  the Secret lets the kubelet start the pod, and the model becomes Ready;
- its broker address is wrong: the pod validates, serves nothing, and says why on /status;
  Degraded names the node and the broker; the right address replaces the pod and it is Ready;
- the registry refuses the nodes' keys (the Secret's secret key changed) while the first model
  rolls out v7, a version no node has cached: the canary waits, Degraded names it and the
  registry's refusal, the rest never get v7; the right key back, the pod tries again by itself
  and the rollout ends Ready;
- its test-data path does not exist on the nodes: each node's pod, replaced in turn, cannot
  mount it; Degraded names that node and the path; once the node's administrator puts the test
  set there, the pod starts, validates, and the next node follows.
"""

from __future__ import annotations

import base64
import os
import secrets
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from demo_k8s import wait_job
from demo_k8s_cluster import REGISTRY_SECRET, SERVING_SECRET
from demo_k8s_hall import Hall, node_status, run_or_fail
from demo_k8s_models import condition

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set: no cluster to test"),
    pytest.mark.timeout(900),
]

NAME = "bad-input"
MISSING = "mqtt-bad-input"


def _degraded_by_pods(vm: dict[str, Any]) -> bool:
    degraded = condition(vm, "Degraded")
    return degraded.get("status") == "True" and degraded.get("reason") == "PodNotServing"


def _ready(vm: dict[str, Any]) -> bool:
    status = vm.get("status") or {}
    return (
        status.get("observedGeneration") == vm["metadata"]["generation"]
        and condition(vm, "Ready").get("status") == "True"
    )


def _waits_for_registry(vm: dict[str, Any]) -> bool:
    return _degraded_by_pods(vm) and "cannot fetch v7" in condition(vm, "Degraded")["message"]


def _apply(hall: Hall, **mqtt: str) -> None:
    manifest = yaml.safe_load(hall.manifests["v2"].read_text())
    manifest["metadata"]["name"] = NAME
    manifest["spec"]["mqtt"] |= mqtt
    path = hall.cluster.out / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    hall.cluster.run("kubectl", "apply", "-f", str(path), quiet=True)


def test_a_missing_secret_is_named_with_its_node_and_creating_it_recovers(hall: Hall) -> None:
    canary = hall.nodes[0]
    hall.kubectl("delete", "secret", MISSING, "--ignore-not-found")
    _apply(hall, credentialsSecret=MISSING)
    vm = hall.wait("Degraded by a pod that cannot start", _degraded_by_pods, name=NAME, timeout_s=180)
    message = condition(vm, "Degraded")["message"]
    assert f"node {canary}" in message, message
    assert MISSING in message, message
    assert MISSING in node_status(vm, canary)["reason"]
    warned = [e["message"] for e in hall.events("PodNotServing", name=NAME)]
    assert any(canary in m and MISSING in m for m in warned), warned

    serving = hall.json(f"secret/{SERVING_SECRET}")["data"]
    hall.cluster.apply("mended-secret", [{
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": serving,
        "metadata": {"name": MISSING, "namespace": hall.ns},
    }], private=hall.cluster.out)  # fmt: skip
    hall.wait("Ready once the Secret exists", _ready, name=NAME, timeout_s=300)
    assert [e["message"] for e in hall.events("PodServing", name=NAME)]


def test_a_wrong_broker_is_named_and_the_right_one_recovers(hall: Hall) -> None:
    wrong = f"mqtt://no-broker.{hall.ns}:1883"
    uids = {node: pod["metadata"]["uid"] for node, pod in hall.pods(NAME).items()}
    _apply(hall, credentialsSecret=MISSING, broker=wrong)
    vm = hall.wait(
        "Degraded by a pod that cannot reach its broker", _degraded_by_pods, name=NAME, timeout_s=300
    )
    message = condition(vm, "Degraded")["message"]
    assert "not connected to the MQTT broker" in message, message
    assert f"no-broker.{hall.ns}:1883" in message, message
    assert any(f"node {node}" in message for node in hall.nodes), message

    _apply(hall, credentialsSecret=MISSING, broker=hall.cluster.hall.broker_url)
    hall.wait("Ready with the right broker", _ready, name=NAME, timeout_s=400)
    assert set(hall.pods(NAME)) == set(uids), "every node has its pod again"


def _names(node: str) -> Callable[[dict[str, Any]], bool]:
    return lambda vm: _degraded_by_pods(vm) and f"node {node}" in condition(vm, "Degraded")["message"]


def _on_node(hall: Hall, node: str, to: str, job: str, script: str) -> None:
    """What a node's administrator does on the node's disk (a Job there, as root)."""
    container = {
        "name": "admin",
        "image": hall.cluster.hall.image("vibration-train"),
        "command": ["/bin/sh", "-ec", script],
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "testdata", "mountPath": "/testdata"},
            {"name": "moved", "mountPath": "/moved"},
        ],
    }
    volumes = [
        {"name": "testdata", "hostPath": {"path": hall.cluster.hall.test_data_path, "type": "Directory"}},
        {"name": "moved", "hostPath": {"path": to, "type": "DirectoryOrCreate"}},
    ]
    spec = {"nodeName": node, "restartPolicy": "Never", "containers": [container], "volumes": volumes}
    hall.cluster.apply(job, [{
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job, "namespace": hall.ns},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 60, "template": {"spec": spec}},
    }])  # fmt: skip
    run_or_fail(lambda: wait_job(hall.cluster, job))
    hall.kubectl("delete", "job", job, "--wait=false")


def test_a_test_set_missing_on_one_node_is_named_and_putting_it_there_recovers(hall: Hall) -> None:
    # Its own path each run: the nodes' disks outlive a cluster restart, and an earlier run's copy
    # would be found there.
    moved = f"/var/lib/vibration-edge/e2e-testdata-{secrets.token_hex(4)}"
    manifest = yaml.safe_load((hall.cluster.out / f"{NAME}.yaml").read_text())
    manifest["spec"]["validation"]["testDataPath"] = moved
    (hall.cluster.out / f"{NAME}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    hall.cluster.run("kubectl", "apply", "-f", str(hall.cluster.out / f"{NAME}.yaml"), quiet=True)
    for node in hall.nodes:  # pods are replaced one node at a time: each misses its test set in turn
        vm = hall.wait(f"{node}'s missing test set named", _names(node), name=NAME, timeout_s=300)
        assert moved in condition(vm, "Degraded")["message"], condition(vm, "Degraded")
        _on_node(
            hall,
            node,
            moved,
            f"copy-testset-{hall.nodes.index(node)}",
            "cp /testdata/testset.parquet /moved/",
        )
    try:
        hall.wait("Ready with a test set on every node", _ready, name=NAME, timeout_s=400)
    finally:
        for i, node in enumerate(hall.nodes):
            gone = f"rm -rf /moved/{moved.rsplit('/', 1)[1]}"  # from its parent: a mount cannot go
            _on_node(hall, node, moved.rsplit("/", 1)[0], f"forget-testset-{i}", gone)


def test_the_bad_input_model_goes_away(hall: Hall) -> None:
    hall.kubectl("delete", f"vibrationmodel/{NAME}", "--wait", "--timeout=120s")
    hall.kubectl("delete", "secret", MISSING, "--ignore-not-found")
    hall.wait_gone(NAME)


def test_a_registry_that_refuses_the_keys_is_waited_for_and_recovers_when_they_are_right(hall: Hall) -> None:
    canary, rest = hall.nodes[0], hall.nodes[1:]
    good = hall.json(f"secret/{REGISTRY_SECRET}")["data"]
    wrong = {**good, "secretKey": base64.b64encode(b"not-the-key").decode()}

    def secret(data: dict[str, str]) -> None:
        hall.cluster.apply("registry-secret", [{
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
            "metadata": {"name": REGISTRY_SECRET, "namespace": hall.ns},
        }], private=hall.cluster.out)  # fmt: skip

    def rest_untouched(vm: dict[str, Any]) -> None:
        assert all(node_status(vm, n).get("target", {}).get("version") != "v7" for n in rest), vm["status"]

    secret(wrong)
    try:
        hall.apply("v7")
        vm = hall.wait("the canary waiting for the registry", _waits_for_registry, each=rest_untouched)
        assert f"node {canary}" in condition(vm, "Degraded")["message"]
        assert node_status(vm, canary)["state"] == "Validating"
        assert condition(vm, "Ready")["status"] == "False"
    finally:
        secret(good)
    vm = hall.settled("Ready", "v7", timeout_s=400)
    assert condition(vm, "Degraded")["status"] == "False"
