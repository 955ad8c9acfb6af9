"""The real operator (kopf, our handlers, our API client) against kmock's Kubernetes emulator.

A fake kubelet (`FakeKubelet`) starts the serving pods and answers their
``/status`` over real HTTP. The assertions are on what a real API server
would also show: objects read back over HTTP, status written only through
the status subresource, ``observedGeneration`` equal to the generation the
test (standing in for the API server) set.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from vibration_core import api as vm_api
from vibration_core.status import VibrationModelStatus
from vibration_operator import names
from vibration_operator.kube import RBAC_RULES
from vibration_operator.logging import quiet_successes
from vibration_operator.settings import OperatorSettings
from vibration_testkit.fake_kubelet import FakeKubelet, running_operator, uncovered, verbs_used
from vibration_testkit.kmock_cluster import KmockCluster, eventually, kmock_cluster

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "hall-a"
HALL = {"edge.vibration.io/hall": "hall-a"}
NODES = ["edge-1", "edge-2", "edge-3"]
V2 = "2" * 64
V3 = "3" * 64


def manifest(version: str = "v3", sha256: str = V3) -> dict[str, Any]:
    """The CPU sample, without its nightly update window (a test cannot wait for 22:00 UTC)."""
    sample: dict[str, Any] = yaml.safe_load((ROOT / "crds" / "samples" / "cpu-model.yaml").read_text())
    out = copy.deepcopy(sample)
    out["spec"]["version"] = version
    out["spec"]["artifact"]["sha256"] = sha256
    out["spec"]["artifact"]["uri"] = f"s3://models/spindle-classifier/{version}/model.onnx"
    del out["spec"]["rollout"]["updateWindow"]
    return out


NAME = manifest()["metadata"]["name"]


@pytest.fixture
async def cluster() -> AsyncIterator[KmockCluster]:
    async with kmock_cluster() as api:
        for node in NODES:
            await api.add_node(node, {**HALL, "kubernetes.io/arch": "arm64"})
        await api.add_node("elsewhere-1", {"edge.vibration.io/hall": "hall-b"})
        yield api


@pytest.fixture
async def kubelet(cluster: KmockCluster) -> AsyncIterator[FakeKubelet]:
    async with FakeKubelet.for_nodes(cluster, NAMESPACE, NODES) as fake:
        yield fake


@pytest.fixture
def settings(kubelet: FakeKubelet) -> OperatorSettings:
    return OperatorSettings(
        namespaces=[NAMESPACE],
        status_poll_interval_s=0.3,
        drift_interval_s=0.5,
        http_port=kubelet.port,
        log_format="text",
    )


def condition(vm: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in (vm.get("status") or {}).get("conditions", []) if c["type"] == type_]
    return found[0] if found else {}


async def phase_is(cluster: KmockCluster, phase: str, *, active: str | None = None) -> bool:
    status = (await cluster.model(NAMESPACE, NAME)).get("status") or {}
    return status.get("phase") == phase and (
        active is None or (status.get("active") or {}).get("version") == active
    )


async def targets(cluster: KmockCluster) -> dict[str, str]:
    """The version each node's ConfigMap holds."""
    out = {}
    for node, cm in (await cluster.configmaps(NAMESPACE)).items():
        record = cm["metadata"]["annotations"][names.ANNOTATION_TARGET]
        out[node] = yaml.safe_load(record)["version"]
    return out


def assert_status_only_via_subresource(cluster: KmockCluster) -> None:
    """What a real API server enforces: status changes go to /status, and nothing else does."""
    for write in cluster.writes():
        if write.method != "PATCH" or write.plural != vm_api.PLURAL:
            continue
        if write.subresource == "status":
            assert set(write.data) == {"status"}, write.data
        else:  # kopf's own patches: annotations and the finalizer, never status
            assert isinstance(write.data, list) or "status" not in write.data, write.data


def reasons(events: list[dict[str, Any]]) -> list[str]:
    return [event["reason"] for event in events]


async def assert_ready_on_v3(cluster: KmockCluster, generation: int = 1) -> dict[str, Any]:
    """The end state of a successful rollout of v3 to the three nodes, as an API server shows it."""
    vm = await cluster.model(NAMESPACE, NAME)
    status = vm["status"]
    assert status["observedGeneration"] == generation
    assert status["readyNodes"] == "3/3"
    assert status["target"] == status["active"] == {"version": "v3", "sha256": V3}
    assert [(n["name"], n["state"]) for n in status["nodes"]] == [(node, "Serving") for node in NODES]
    assert condition(vm, "Ready")["status"] == "True"
    assert condition(vm, "Validated")["status"] == "True"
    assert condition(vm, "Progressing")["status"] == "False"
    assert condition(vm, "Degraded")["status"] == "False"
    assert all(c["observedGeneration"] == generation for c in status["conditions"])
    pods = await cluster.pods(NAMESPACE)
    assert sorted(p["metadata"]["annotations"][names.ANNOTATION_NODE] for p in pods) == NODES
    assert await targets(cluster) == dict.fromkeys(NODES, "v3")
    # kopf's bookkeeping (progress, last-handled spec, finalizer) stays out of status.
    assert set(status) <= {field.alias for field in VibrationModelStatus.model_fields.values()}
    assert_status_only_via_subresource(cluster)
    assert uncovered(verbs_used(cluster), RBAC_RULES) == set()
    return vm


async def test_rollout_reaches_ready_canary_first(
    cluster: KmockCluster, kubelet: FakeKubelet, settings: OperatorSettings
) -> None:
    kubelet.paused = True  # the canary cannot pass before the pods are looked at
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest())
        await eventually(lambda: targets_are(cluster, {"edge-1": "v3"}), what="the canary's target only")
        assert [
            p["metadata"]["annotations"][names.ANNOTATION_NODE] for p in await cluster.pods(NAMESPACE)
        ] == ["edge-1"]  # the first rollout has no active version: the other nodes wait without a pod
        kubelet.paused = False
        await eventually(lambda: phase_is(cluster, "Ready", active="v3"), what="Ready on v3")

    vm = await assert_ready_on_v3(cluster)
    assert [h["action"] for h in vm["status"]["history"]] == ["Promoted"]
    events = reasons(await cluster.events(NAMESPACE))
    assert (events.count("TargetChanged"), events.count("CanariesPassed"), events.count("Promoted")) == (
        1,
        1,
        1,
    )
    assert not [p for p in await cluster.pods(NAMESPACE) if "elsewhere" in p["metadata"]["name"]]


@pytest.mark.parametrize(
    ("verb", "plural", "forbidden"),
    [
        # PodSecurity (restricted) or a ResourceQuota refuses every serving pod: without the event
        # the rollout looked "in progress" to kubectl, the reason only in the operator's log.
        (
            "POST",
            "pods",
            'pods "vibm-spindle-classifier-edge-1" is forbidden: violates PodSecurity "restricted:latest"',
        ),
        # The chart installed without its ClusterRole: listing nodes is refused at every reconcile.
        # Only writes were said on the object: the model had no status, no event, forever.
        (
            "GET",
            "nodes",
            'nodes is forbidden: User "system:serviceaccount:hall-a:op" cannot list resource "nodes"',
        ),
    ],
    ids=["writing-a-pod", "reading-the-nodes"],
)
async def test_a_refusal_is_said_once_as_an_event_with_the_api_servers_words(
    cluster: KmockCluster,
    kubelet: FakeKubelet,
    settings: OperatorSettings,
    *,
    verb: str,
    plural: str,
    forbidden: str,
) -> None:
    cluster.emulator.refusals[verb, plural] = (403, forbidden)
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest())

        async def said() -> bool:
            return "ApplyFailed" in reasons(await cluster.events(NAMESPACE))

        await eventually(said, timeout_s=30, what="an ApplyFailed event")
        await asyncio.sleep(6)  # a retry comes 5-30 s later; the same refusal is not said again
        refused = [e for e in await cluster.events(NAMESPACE) if e["reason"] == "ApplyFailed"]
        assert len(refused) == 1
        assert refused[0]["type"] == "Warning"
        assert forbidden in refused[0]["message"]
        del cluster.emulator.refusals[verb, plural]
        await eventually(lambda: phase_is(cluster, "Ready", active="v3"), what="Ready once it is let in")
    assert kubelet is not None


async def test_a_converged_model_is_not_written_or_logged_at_each_tick(
    cluster: KmockCluster, kubelet: FakeKubelet, settings: OperatorSettings, caplog: pytest.LogCaptureFixture
) -> None:
    # Each drift check wrote status.drift.checkedAt and logged, and kopf said every timer's success:
    # with 200 quiet models, 3 status writes and 27 log lines a second.
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest())
        await eventually(lambda: phase_is(cluster, "Ready", active="v3"), what="Ready")
        await asyncio.sleep(1.5)
        before = len(cluster.writes())
        logging.getLogger("kopf.objects").addFilter(quiet_successes)  # as setup_logging installs it
        try:
            caplog.clear()
            with caplog.at_level(logging.INFO):
                await asyncio.sleep(5)  # several drift checks and rollout ticks at the tests' intervals
        finally:
            logging.getLogger("kopf.objects").removeFilter(quiet_successes)
        writes = cluster.writes()[before:]
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and quiet_successes(r)]
    assert [(w.method, w.plural, w.subresource) for w in writes] == []
    assert said == []
    assert kubelet is not None


async def targets_are(cluster: KmockCluster, expected: dict[str, str]) -> bool:
    return await targets(cluster) == expected


async def test_failing_canary_stops_the_rollout_and_keeps_the_old_version(
    cluster: KmockCluster, kubelet: FakeKubelet, settings: OperatorSettings
) -> None:
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest("v2", V2))
        await eventually(lambda: phase_is(cluster, "Ready", active="v2"), what="Ready on v2")
        kubelet.failing.add(("edge-1", "v3"))
        await cluster.apply_model(manifest("v3", V3))
        await eventually(lambda: phase_is(cluster, "Degraded"), what="Degraded")
        await eventually(lambda: targets_are(cluster, dict.fromkeys(NODES, "v2")), what="edge-1 back on v2")

    vm = await cluster.model(NAMESPACE, NAME)
    status = vm["status"]
    assert status["observedGeneration"] == 2  # the spec change bumped it, as an API server does
    assert status["active"] == {"version": "v2", "sha256": V2}
    assert status["target"] == {"version": "v3", "sha256": V3}
    degraded = condition(vm, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ValidationFailed")
    assert "edge-1" in degraded["message"]
    assert condition(vm, "Ready")["status"] == "False"
    failed = [n for n in status["nodes"] if n["state"] == "Failed"]
    assert [n["name"] for n in failed] == ["edge-1"]
    assert "accuracy 0.41" in failed[0]["reason"]
    assert "ValidationFailed" in [h["action"] for h in status["history"]]
    assert "ValidationFailed" in reasons(await cluster.events(NAMESPACE))
    # Every node kept its pod and serves v2; the nodes after the canary never got v3.
    assert len(await cluster.pods(NAMESPACE)) == 3
    assert {
        node.name: node.last_good.version for node in kubelet.nodes.values() if node.last_good
    } == dict.fromkeys(NODES, "v2")
    assert not v3_written_for(cluster, ["edge-2", "edge-3"])
    # The canary's pod was told of each new target at once (the kubelet refreshes its mount on it).
    nudges = pod_nudges(cluster)
    assert nudges[-2:] == [f"v3@sha256:{V3}", f"v2@sha256:{V2}"], nudges
    assert nudges.count(f"v3@sha256:{V3}") == 1, nudges
    assert_status_only_via_subresource(cluster)


def pod_nudges(cluster: KmockCluster) -> list[str]:
    """The targets the operator annotated serving pods with, in order."""
    return [
        write.data["metadata"]["annotations"][names.ANNOTATION_TARGET_REF]
        for write in cluster.writes()
        if write.plural == "pods" and write.method == "PATCH" and write.subresource is None
    ]


def v3_written_for(cluster: KmockCluster, nodes: list[str]) -> list[str]:
    """Nodes whose target ConfigMap was ever written with v3 (from the write log, as sent)."""
    hit = []
    for write in cluster.writes():
        if write.plural != "configmaps" or not isinstance(write.data, dict):
            continue
        annotations = (write.data.get("metadata") or {}).get("annotations") or {}
        node = next((n for n in nodes if names.target_configmap_name(NAME, n) in str(write.data)), None)
        record = annotations.get(names.ANNOTATION_TARGET) or ""
        if node is not None and '"v3"' in record:
            hit.append(node)
    return hit


async def test_restarted_operator_reaches_the_same_end_state(
    cluster: KmockCluster, kubelet: FakeKubelet, settings: OperatorSettings
) -> None:
    kubelet.paused = True
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest())
        await eventually(lambda: targets_are(cluster, {"edge-1": "v3"}), what="the canary's target")
        await eventually(lambda: pods_on(cluster, ["edge-1"]), what="the canary's pod")
    # The operator is down while the canary validates and starts serving.
    kubelet.paused = False
    await eventually(lambda: canary_booted(cluster), what="the canary pod to start")
    async with running_operator(cluster, settings):
        await eventually(
            lambda: phase_is(cluster, "Ready", active="v3"), what="Ready on v3 after the restart"
        )

    vm = await assert_ready_on_v3(cluster)
    assert [h["action"] for h in vm["status"]["history"]] == ["Promoted"]
    events = reasons(await cluster.events(NAMESPACE))
    assert (events.count("TargetChanged"), events.count("CanariesPassed"), events.count("Promoted")) == (
        1,
        1,
        1,
    )


async def pods_on(cluster: KmockCluster, nodes: list[str]) -> bool:
    pods = await cluster.pods(NAMESPACE)
    return sorted(p["metadata"]["annotations"][names.ANNOTATION_NODE] for p in pods) == nodes


async def pod_on(cluster: KmockCluster, node: str) -> bool:
    pods = await cluster.pods(NAMESPACE)
    return any(p["metadata"]["annotations"][names.ANNOTATION_NODE] == node for p in pods)


async def canary_booted(cluster: KmockCluster) -> bool:
    pods = await cluster.pods(NAMESPACE)
    return any((p.get("status") or {}).get("podIP") for p in pods)


async def test_drift_reported_by_a_pod_sets_drifted(
    cluster: KmockCluster, kubelet: FakeKubelet, settings: OperatorSettings
) -> None:
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest())
        await eventually(lambda: phase_is(cluster, "Ready", active="v3"), what="Ready on v3")
        kubelet.drift["edge-2"] = {
            "psi.rms": 0.61, "p.rms": 1e-9, "flagged.rms": 1.0, "psi.kurtosis": 0.05, "p.kurtosis": 0.4,
            "class_psi": 0.7, "class_p": 0.2, "tests": 11.0,
        }  # fmt: skip
        await eventually(lambda: drifted_is(cluster, "True"), what="Drifted=True")
        vm = await cluster.model(NAMESPACE, NAME)
        drift = vm["status"]["drift"]
        assert (drift["drifted"], drift["nodes"], drift["worstFeature"]) == (True, ["edge-2"], "rms")
        assert (drift["psi"], drift["pValue"], drift["maxPsi"]) == pytest.approx((0.61, 1e-9, 0.7))
        assert condition(vm, "Drifted")["message"].startswith(
            "drift on edge-2: rms PSI 0.610 (>= 0.05), p 1e-09"
        )
        kubelet.drift.clear()
        await eventually(lambda: drifted_is(cluster, "False"), what="Drifted=False")

    assert condition(await cluster.model(NAMESPACE, NAME), "Ready")["status"] == "True"
    events = reasons(await cluster.events(NAMESPACE))
    assert events.count("DriftDetected") == 1
    assert_status_only_via_subresource(cluster)


async def drifted_is(cluster: KmockCluster, value: str) -> bool:
    return condition(await cluster.model(NAMESPACE, NAME), "Drifted").get("status") == value


async def test_node_leaving_the_hall_loses_its_pod_and_target(
    cluster: KmockCluster, settings: OperatorSettings
) -> None:
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest())
        await eventually(lambda: phase_is(cluster, "Ready", active="v3"), what="Ready on v3")
        await cluster.call(
            "PATCH", "/api/v1/nodes/edge-3", {"metadata": {"labels": {"edge.vibration.io/hall": "hall-b"}}}
        )
        await eventually(lambda: pods_on(cluster, ["edge-1", "edge-2"]), what="edge-3's pod deleted")
        await eventually(
            lambda: targets_are(cluster, dict.fromkeys(["edge-1", "edge-2"], "v3")), what="its target"
        )
        await eventually(lambda: ready_nodes_is(cluster, "2/2"), what="2/2 nodes")

    vm = await cluster.model(NAMESPACE, NAME)
    assert condition(vm, "Ready")["status"] == "True"
    assert [n["name"] for n in vm["status"]["nodes"]] == ["edge-1", "edge-2"]
    used = verbs_used(cluster)
    assert {("", "pods", "delete"), ("", "configmaps", "delete")} <= used
    assert uncovered(used, RBAC_RULES) == set()


@pytest.mark.usefixtures("kubelet")  # the fake kubelet runs the pods, never edge-0's
async def test_a_tainted_gateway_is_not_made_the_canary(
    cluster: KmockCluster, settings: OperatorSettings
) -> None:
    # edge-0 sorts first and is Ready, but its SD card is full: the scheduler would leave a pod
    # without a toleration Pending there, and the whole hall would wait for that canary.
    taint = {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"}
    await cluster.call(
        "POST", "/api/v1/nodes", {"metadata": {"name": "edge-0", "labels": HALL}, "spec": {"taints": [taint]}}
    )
    await cluster.set_node_ready("edge-0", ready=True)
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest())
        await eventually(lambda: phase_is(cluster, "Ready", active="v3"), what="Ready on v3")

    vm = await assert_ready_on_v3(cluster)
    assert vm["status"]["canaries"] == ["edge-1"]


async def test_a_hall_whose_gateways_are_all_off_says_so_not_that_none_matches(
    cluster: KmockCluster, settings: OperatorSettings
) -> None:
    for node in NODES:
        await cluster.set_node_ready(node, ready=False)  # a power cut in the hall
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest())
        await eventually(lambda: phase_is(cluster, "Pending"), what="Pending")
        vm = await cluster.model(NAMESPACE, NAME)
        for node in NODES:
            await cluster.set_node_ready(node, ready=True)  # the power is back
        # The canary's pod, whatever follows it: with no kubelet here the others come a few
        # hundred ms later, sometimes within one poll.
        await eventually(lambda: pod_on(cluster, NODES[0]), what="the canary's pod")

    ready = condition(vm, "Ready")
    assert (ready["reason"], ready["message"]) == (
        "NoReadyNodes",
        "3 nodes match spec.nodeSelector but none is Ready and schedulable",
    )
    assert condition(vm, "Degraded")["status"] == "True"


async def owned_pods(cluster: KmockCluster, uid: str) -> int:
    """How many of our pods have the VibrationModel `uid` as their controller."""
    pods = await cluster.pods(NAMESPACE)
    return sum(
        any(ref["uid"] == uid and ref.get("controller") for ref in p["metadata"].get("ownerReferences") or [])
        for p in pods
    )


@pytest.mark.usefixtures("kubelet")
async def test_orphaned_pods_are_adopted_so_they_go_with_the_model(
    cluster: KmockCluster, settings: OperatorSettings
) -> None:
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest())
        await eventually(lambda: phase_is(cluster, "Ready", active="v3"), what="Ready on v3")
        uid = (await cluster.model(NAMESPACE, NAME))["metadata"]["uid"]
        # As after `kubectl delete vibm --cascade=orphan` and a new apply: the garbage collector
        # took the dead owner's reference off the pods, which keep our labels.
        for pod in await cluster.pods(NAMESPACE):
            path = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}"
            await cluster.call("PATCH", path, {"metadata": {"ownerReferences": None}})
        assert await owned_pods(cluster, uid) == 0
        await eventually(lambda: _owned_are(cluster, uid, len(NODES)), what="every pod adopted")
        await eventually(lambda: phase_is(cluster, "Ready", active="v3"), what="still Ready")

    assert len(await cluster.pods(NAMESPACE)) == len(NODES), "adopted, not replaced"


async def _owned_are(cluster: KmockCluster, uid: str, count: int) -> bool:
    return await owned_pods(cluster, uid) == count


async def ready_nodes_is(cluster: KmockCluster, value: str) -> bool:
    return ((await cluster.model(NAMESPACE, NAME)).get("status") or {}).get("readyNodes") == value


async def brokers_of_pods(cluster: KmockCluster) -> dict[str, str]:
    out = {}
    for pod in await cluster.pods(NAMESPACE):
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        out[pod["metadata"]["annotations"][names.ANNOTATION_NODE]] = str(env["VIBRATION_MQTT_URL"])
    return out


async def test_a_changed_broker_replaces_the_pods_one_node_at_a_time_and_ends_ready(
    cluster: KmockCluster, settings: OperatorSettings
) -> None:
    moved = "mqtt://mosquitto-2.hall-a:1883"
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest())
        await eventually(lambda: phase_is(cluster, "Ready", active="v3"), what="Ready on v3")
        changed = manifest()
        changed["spec"]["mqtt"]["broker"] = moved
        await cluster.apply_model(changed)
        await eventually(
            lambda: _brokers_are(cluster, dict.fromkeys(NODES, moved)), what="every pod on the new broker"
        )
        await eventually(lambda: ready_nodes_is(cluster, "3/3"), what="3/3 nodes")

    vm = await cluster.model(NAMESPACE, NAME)
    assert condition(vm, "Ready")["status"] == "True"
    assert vm["status"]["active"]["version"] == "v3", "the model version never changed"
    # One node at a time: never two of our pods deleted without a create between them.
    deletes_in_a_row, previous = 0, ""
    for write in cluster.writes():
        if write.plural == "pods" and write.method in {"DELETE", "POST"}:
            deletes_in_a_row = deletes_in_a_row + 1 if write.method == previous == "DELETE" else 0
            assert deletes_in_a_row == 0, "two pods replaced at once"
            previous = write.method


async def _brokers_are(cluster: KmockCluster, expected: dict[str, str]) -> bool:
    return await brokers_of_pods(cluster) == expected


@pytest.mark.usefixtures("kubelet")  # the fake kubelet runs the pods
async def test_a_manual_rollout_waits_for_approval_across_a_restart_then_proceeds(
    cluster: KmockCluster, settings: OperatorSettings
) -> None:
    async with running_operator(cluster, settings):
        await cluster.apply_model(manifest("v2", V2))
        await eventually(lambda: phase_is(cluster, "Ready", active="v2"), what="Ready on v2")
        manual = manifest("v3", V3)
        manual["spec"]["rollout"]["approval"] = "manual"
        await cluster.apply_model(manual)
        await eventually(lambda: phase_is(cluster, "Waiting"), what="held for approval")
    vm = await cluster.model(NAMESPACE, NAME)
    progressing = condition(vm, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "AwaitingApproval")
    assert "approvedVersion to v3" in progressing["message"]
    assert await targets(cluster) == {"edge-1": "v3", "edge-2": "v2", "edge-3": "v2"}
    canary = next(n for n in vm["status"]["nodes"] if n["name"] == "edge-1")
    assert canary["state"] == "Serving"
    async with running_operator(cluster, settings):  # a restarted operator changes nothing
        await eventually(lambda: phase_is(cluster, "Waiting"), what="still held after a restart")
        await asyncio.sleep(3 * settings.status_poll_interval_s + 1)  # several reconciles of its own
        assert await targets(cluster) == {"edge-1": "v3", "edge-2": "v2", "edge-3": "v2"}
        manual["spec"]["rollout"]["approvedVersion"] = "v3"
        await cluster.apply_model(manual)
        await eventually(lambda: phase_is(cluster, "Ready", active="v3"), what="Ready on v3 once approved")
    assert await targets(cluster) == dict.fromkeys(NODES, "v3")
    assert "AwaitingApproval" in reasons(await cluster.events(NAMESPACE))
