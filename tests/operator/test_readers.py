"""Why a serving pod does not run or serve, read from what the API server shows (readers.pod_problem)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vibration_core.messages import ModelStatus
from vibration_operator.kube import KubeError
from vibration_operator.observe import node_is_eligible, pod_warnings
from vibration_operator.readers import pod_problem

NOT_READY = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}]
MOUNT = {
    "reason": "FailedMount",
    "message": 'MountVolume.SetUp failed for volume "mqtt-credentials" : secret "mqtt-serving" not found',
}


def pod(*, conditions: list[dict[str, Any]] = NOT_READY, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "vibm-m-edge-1"}, "status": {"conditions": conditions, **status}}


def serving(*, ready: bool, message: str) -> ModelStatus:
    return ModelStatus(
        node="edge-1", version="v1", state="serving", ready=ready, windows_total=0, errors_total=0,
        message=message, updated_ns=1,
    )  # fmt: skip


def test_a_stuck_container_is_named_with_the_kubelets_message() -> None:
    waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s3" not found'}}
    found = pod(initContainerStatuses=[{"name": "validate", "state": waiting}])
    assert pod_problem(found, [], None) == 'validate: CreateContainerConfigError: secret "s3" not found'


def test_an_image_the_node_cannot_get_is_named() -> None:
    waiting = {"waiting": {"reason": "ErrImageNeverPull"}}
    assert pod_problem(pod(containerStatuses=[{"name": "serve", "state": waiting}]), [], None) == (
        "serve: ErrImageNeverPull"
    )


def test_a_pod_that_cannot_be_scheduled_says_why() -> None:
    conditions = [{"type": "PodScheduled", "status": "False", "message": "0/2 nodes are available"}]
    assert pod_problem(pod(conditions=conditions), [], None) == "not scheduled: 0/2 nodes are available"


def test_a_missing_secret_volume_shows_only_in_the_pods_warning_events() -> None:
    old = {"reason": "FailedScheduling", "message": "earlier"}
    assert pod_problem(pod(), [old, MOUNT], None) == f"FailedMount: {MOUNT['message']}"


def test_a_serving_pod_that_is_not_ready_says_why_in_its_own_words() -> None:
    report = serving(ready=False, message="not connected to the MQTT broker wrong:1883: refused")
    assert (
        pod_problem(pod(), [MOUNT], report) == "serve: not connected to the MQTT broker wrong:1883: refused"
    )


@pytest.mark.parametrize(
    ("found", "warnings"),
    [
        (pod(conditions=[{"type": "Ready", "status": "True"}]), [MOUNT]),  # Ready: old warnings are history
        ({**pod(), "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}, [MOUNT]),  # on its way out
        (pod(), []),  # starting, nothing said yet
        (None, [MOUNT]),
    ],
    ids=["ready", "terminating", "starting", "no-pod"],
)
def test_no_problem_where_nothing_is_wrong_or_nothing_can_be_done(
    found: dict[str, Any] | None, warnings: list[dict[str, Any]]
) -> None:
    assert pod_problem(found, warnings, serving(ready=False, message="")) == ""


def test_a_long_message_is_cut() -> None:
    assert len(pod_problem(pod(), [{"reason": "FailedMount", "message": "x" * 2000}], None)) == 300


class EventsOnly:
    """A KubeApi that only lists events (or fails to)."""

    def __init__(self, events: list[dict[str, Any]] | None) -> None:
        self.events, self.calls = events, 0

    async def list(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        self.calls += 1
        if self.events is None:
            raise KubeError(
                "GET", "/api/v1/namespaces/hall-a/events", 403, "Forbidden", "events is forbidden"
            )
        return self.events


def event(uid: str, reason: str, seconds_ago: float, message: str = "") -> dict[str, Any]:
    stamp = (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()
    return {"involvedObject": {"uid": uid}, "reason": reason, "message": message, "lastTimestamp": stamp}


async def test_pod_warnings_keep_only_what_still_explains_each_pod() -> None:
    started = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    pods = {
        "edge-1": {"metadata": {"uid": "a"}, "status": {}},
        "edge-2": {"metadata": {"uid": "b"}, "status": {
            "initContainerStatuses": [{"name": "validate", "state": {"running": {"startedAt": started}}}]}},
    }  # fmt: skip
    kube = EventsOnly([
        event("a", "FailedMount", 10, "new"), event("a", "FailedMount", 60, "older"),
        event("a", "FailedMount", 900, "history"), event("a", "Unhealthy", 5, "a probe while starting"),
        event("b", "FailedMount", 60, "before its containers started"),
        event("c", "FailedMount", 1, "another pod"),
    ])  # fmt: skip
    found = await pod_warnings(kube, "hall-a", pods)  # type: ignore[arg-type]  # the one call it makes
    assert kube.calls == 1, "one list for every pod"
    assert [e["message"] for e in found["edge-1"]] == ["older", "new"]
    assert found["edge-2"] == []


async def test_pod_warnings_that_cannot_be_read_explain_nothing_and_break_nothing() -> None:
    pods = {"edge-1": {"metadata": {"uid": "a"}, "status": {}}}
    assert await pod_warnings(EventsOnly(None), "hall-a", pods) == {}  # type: ignore[arg-type]
    assert await pod_warnings(EventsOnly(None), "hall-a", {}) == {}  # type: ignore[arg-type]


READY = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
DISK_PRESSURE = {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"}
MAINTENANCE = {"key": "factory.example/maintenance", "value": "line-3", "effect": "NoExecute"}


@pytest.mark.parametrize(
    ("taint", "tolerations", "eligible"),
    [
        (None, [], True),
        (DISK_PRESSURE, [], False),
        (MAINTENANCE, [], False),
        ({"key": "gpu", "effect": "PreferNoSchedule"}, [], True),  # a preference, never Pending
        (DISK_PRESSURE, [{"operator": "Exists"}], True),  # an empty key with Exists: every taint
        (DISK_PRESSURE, [{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists"}], True),
        (DISK_PRESSURE, [{"key": "node.kubernetes.io/disk-pressure", "effect": "NoExecute"}], False),
        (MAINTENANCE, [{"key": "factory.example/maintenance", "value": "line-3"}], True),  # Equal
        (MAINTENANCE, [{"key": "factory.example/maintenance", "value": "line-4"}], False),
        (MAINTENANCE, [{"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}], False),
        (MAINTENANCE, [DISK_PRESSURE, {"operator": "Exists", "effect": "NoExecute"}], True),
    ],
)
def test_a_node_with_a_taint_the_serving_pod_does_not_tolerate_gets_no_new_pod(
    taint: dict[str, Any] | None, tolerations: list[dict[str, Any]], *, eligible: bool
) -> None:
    node = {**READY, "spec": {"taints": [taint] if taint else []}}
    assert node_is_eligible(node, tolerations) is eligible


def test_the_serving_pod_tolerates_no_taint() -> None:
    assert not node_is_eligible({**READY, "spec": {"taints": [DISK_PRESSURE]}})
    assert node_is_eligible({**READY, "spec": {}})
