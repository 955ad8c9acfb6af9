"""Readers of observed state: what a node's pod, its ConfigMap and its /status say, as a NodeObservation.

Pure functions over the objects the API server returned (no client): the init
container's termination message, the pod's /status, the records on the target
ConfigMap, whether a pod was built from an older pod spec, and why a pod does
not run or serve (a stuck container, an unschedulable pod, its own word, the
kubelet's Warning events), and whether a node's taints keep a pod off it.
Everything a pod reports is untrusted input.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from vibration_core.status import VersionRef
from vibration_core.target import ModelTarget
from vibration_core.validation import CompactReport
from vibration_operator import names
from vibration_operator.builders import SERVE, VALIDATE, build_serving_pod
from vibration_operator.node_state import Candidate, NodeObservation

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from vibration_core.messages import ModelStatus
    from vibration_core.spec import VibrationModelSpec
    from vibration_operator.settings import OperatorSettings


def read_target_configmap(
    configmap: Mapping[str, Any] | None,
) -> tuple[ModelTarget | None, ModelTarget | None]:
    """The target and active records of a ConfigMap; None for a missing or unreadable one."""
    annotations = ((configmap or {}).get("metadata") or {}).get("annotations") or {}
    out: list[ModelTarget | None] = []
    for key in (names.ANNOTATION_TARGET, names.ANNOTATION_ACTIVE):
        try:
            out.append(ModelTarget.model_validate_json(annotations[key]) if key in annotations else None)
        except ValidationError:
            out.append(None)  # edited by hand: the next decision writes it anew
    return out[0], out[1]


def _init_verdict(pod: Mapping[str, Any]) -> tuple[CompactReport | None, int | None]:
    """The init container's last report and exit code, from the pod status."""
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    mine: Mapping[str, Any] = next((s for s in statuses if s.get("name") == VALIDATE), {})
    done = (mine.get("state") or {}).get("terminated") or (mine.get("lastState") or {}).get("terminated")
    if not done:
        return None, None
    try:
        report = CompactReport.decode(done.get("message") or "")
    except ValidationError:
        report = None  # logs, with FallbackToLogsOnError, or a crash before the report was written
    return report, done.get("exitCode")


def _started(pod: Mapping[str, Any], container: str) -> bool:
    """Whether the pod's `container` runs now or has run (it restarted, or ended once)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    mine: Mapping[str, Any] = next((s for s in statuses if s.get("name") == container), {})
    last = (mine.get("lastState") or {}).get("terminated")
    return "running" in (mine.get("state") or {}) or bool(mine.get("restartCount")) or bool(last)


def _from_pod_status(report: ModelStatus | None) -> tuple[VersionRef | None, Candidate | None]:
    """What a pod serves, and its last swap, from its /status."""
    if report is None:
        return None, None
    serving = VersionRef(version=report.version, sha256=report.sha256) if report.version else None
    if report.candidate_state is None:
        return serving, None
    candidate = Candidate(
        sha256=report.candidate_sha256,
        state=report.candidate_state,
        version=report.candidate_version,
        report=report.candidate_report,
    )
    return serving, candidate


_STUCK = frozenset({
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff",
    "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
})  # fmt: skip
"""Container waiting reasons that do not pass by themselves: something outside the pod must change."""
POD_WARNINGS = frozenset({"FailedMount", "FailedAttachVolume", "FailedScheduling", "FailedCreatePodSandBox"})
"""Warning events about a pod that say why it cannot start (a missing Secret or hostPath, no room)."""
_PROBLEM_CHARS = 300


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Whether a pod's (or a node's) Ready condition is True."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


_REPELLING = frozenset({"NoSchedule", "NoExecute"})
"""The taint effects that keep a pod without a matching toleration off a node (not PreferNoSchedule)."""


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Whether `toleration` tolerates `taint`, matched as Kubernetes matches them.

    An empty effect matches every effect, an empty key (with ``operator: Exists``) every key;
    ``Exists`` matches any value, ``Equal`` (the default) only the taint's. A NoExecute taint
    tolerated only for ``tolerationSeconds`` evicts the pod in the end: not tolerated here.
    """
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    if taint.get("effect") == "NoExecute" and toleration.get("tolerationSeconds") is not None:
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def repelled(node: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the node has a NoSchedule or NoExecute taint that none of `tolerations` tolerates."""
    taints = (node.get("spec") or {}).get("taints") or []
    return any(
        taint.get("effect") in _REPELLING and not any(tolerates(t, taint) for t in tolerations)
        for taint in taints
    )


def _stuck_container(status: Mapping[str, Any]) -> str:
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _STUCK:
            said = f"{container.get('name')}: {waiting['reason']}: {waiting.get('message') or ''}"
            return said.rstrip(": ")
    return ""


def _unscheduled(conditions: Sequence[Mapping[str, Any]]) -> str:
    for condition in conditions:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"not scheduled: {condition.get('message') or condition.get('reason')}"
    return ""


def pod_problem(
    pod: Mapping[str, Any] | None, warnings: Sequence[Mapping[str, Any]], report: ModelStatus | None
) -> str:
    """Why a serving pod does not run or serve ('' when nothing says so), for a person to act on.

    In order: a container stuck waiting (its reason and the kubelet's message), a pod that cannot be
    scheduled, and, for a pod that is not Ready, its own word (its /status message while it has a
    model) or the newest Warning event about it (`warnings`, newest last: a Secret or a hostPath
    that does not exist shows up only there).
    """
    if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return ""
    status = pod.get("status") or {}
    said = _stuck_container(status) or _unscheduled(status.get("conditions") or [])
    if not said and not is_ready(pod):
        if report is not None and not report.ready and report.state == "serving" and report.message:
            said = f"serve: {report.message}"
        elif warnings:
            said = f"{warnings[-1].get('reason')}: {warnings[-1].get('message') or ''}".strip()
    return said[:_PROBLEM_CHARS]


def observe_node(
    node: str,
    *,
    selected: bool,
    eligible: bool = True,
    pod: Mapping[str, Any] | None,
    configmap: Mapping[str, Any] | None,
    pod_status: ModelStatus | None,
    warnings: Sequence[Mapping[str, Any]] = (),
) -> NodeObservation:
    """What the rollout needs to know about a node, from its pod, its ConfigMap and the pod's /status."""
    serving, candidate = _from_pod_status(pod_status)
    assigned, recorded_active = read_target_configmap(configmap)
    report, code = _init_verdict(pod) if pod is not None else (None, None)
    ready = pod is not None and is_ready(pod)
    return NodeObservation(
        name=node,
        selected=selected,
        eligible=eligible,
        pod_exists=pod is not None,
        pod_terminating=pod is not None and bool((pod.get("metadata") or {}).get("deletionTimestamp")),
        ready=ready,
        serving=serving,
        candidate=candidate,
        init_report=report,
        init_exit_code=code,
        serve_started=pod is not None and _started(pod, SERVE),
        assigned=assigned,
        recorded_active=recorded_active,
        pod_problem=pod_problem(pod, warnings, pod_status),
    )


def with_outdated_pods(  # noqa: PLR0917 - the observations, then the pod's identity and content
    nodes: Sequence[NodeObservation],
    pods: Mapping[str, Mapping[str, Any]],
    vm_name: str,
    namespace: str,
    uid: str,
    spec: VibrationModelSpec,
    settings: OperatorSettings,
) -> list[NodeObservation]:
    """`nodes`, each pod marked outdated when its pod-spec hash is not the one the builder gives now.

    A change of the VibrationModel's MQTT, alert, drift or resource settings, or a new
    operator release (images, probes), changes the pod spec; a new model version does not.
    """
    marked = []
    for observation in nodes:
        pod = pods.get(observation.name)
        if pod is None or not observation.selected:
            marked.append(observation)
            continue
        want = build_serving_pod(vm_name, namespace, uid, spec, observation.name, settings)
        have = (pod.get("metadata") or {}).get("annotations") or {}
        outdated = have.get(names.ANNOTATION_POD_SPEC_HASH) != _pod_hash(want)
        marked.append(replace(observation, pod_outdated=outdated))
    return marked


def _pod_hash(pod: Mapping[str, Any]) -> str:
    return str(pod["metadata"]["annotations"][names.ANNOTATION_POD_SPEC_HASH])
