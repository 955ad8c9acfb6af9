"""What the cluster shows for one VibrationModel: its nodes, its pods, their targets and reports.

Three list calls (nodes by the spec's selector, the model's pods and target
ConfigMaps by label) and one short ``GET /status`` per serving pod, in
parallel. A node takes part when it matches ``spec.nodeSelector`` and is
Ready and schedulable (not cordoned, and no NoSchedule or NoExecute taint the
serving pod does not tolerate: disk pressure, maintenance), or when it
matches and already runs our pod (a node that reboots keeps its pod and its
place in the rollout instead of being dropped, which would delete its pod).
Nodes that no longer match but still hold a pod or ConfigMap are observed as
unselected, so the decision removes them. Everything a pod reports is
untrusted input: a termination message or a ``/status`` body that does not
parse is treated as unknown, never as a crash.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from vibration_core.errors import MessageError
from vibration_core.messages import ModelStatus
from vibration_operator import names
from vibration_operator.builders import SERVING_TOLERATIONS
from vibration_operator.kube import CONFIGMAPS, EVENTS, NODES, PODS, KubeApi, KubeError
from vibration_operator.readers import POD_WARNINGS, is_ready, observe_node, repelled

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from vibration_core.spec import VibrationModelSpec
    from vibration_operator.node_state import NodeObservation

logger = logging.getLogger(__name__)

_STATUS_LIMIT = 64 * 1024
"""A /status body larger than this is not a ModelStatus."""
_OK = 200
_GONE_PHASES = frozenset({"Failed", "Succeeded"})
WARNING_WINDOW_S = 180
"""The kubelet repeats a failed mount every two minutes at most: older warnings are history."""


@dataclass(frozen=True)
class Observed:
    """The observations `decide` takes, and the raw objects `apply` compares against."""

    nodes: list[NodeObservation]
    pods: dict[str, dict[str, Any]]
    """Our pods by node name."""
    configmaps: dict[str, dict[str, Any]]
    """Our target ConfigMaps by node name."""
    finished_pods: list[str]
    """Names of pods that ended (evicted, or Failed): they will never serve again."""
    reports: dict[str, ModelStatus]
    """The /status of each pod that answered, by node name."""
    unavailable: int = 0
    """Nodes that match spec.nodeSelector but are left out: not Ready or schedulable, and no pod of ours."""


def node_is_eligible(
    node: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]] = SERVING_TOLERATIONS
) -> bool:
    """Ready, schedulable, no taint the serving pod does not tolerate: a new serving pod can start there."""
    unschedulable = (node.get("spec") or {}).get("unschedulable", False)
    return is_ready(node) and not unschedulable and not repelled(node, tolerations)


def node_of(obj: Mapping[str, Any]) -> str | None:
    """The node a pod or ConfigMap of ours belongs to (the label value may be shortened)."""
    meta = obj.get("metadata") or {}
    annotated = (meta.get("annotations") or {}).get(names.ANNOTATION_NODE)
    node = annotated or (obj.get("spec") or {}).get("nodeName")
    return str(node) if node else None


def _by_node(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for obj in objects:
        node = node_of(obj)
        if node is not None:
            out[node] = obj
    return out


def status_url(pod: Mapping[str, Any], default_port: int) -> str | None:
    """``http://<podIP>:<port>/status`` of a serving pod, None while it has no IP."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    port = default_port
    for container in (pod.get("spec") or {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == "http" and isinstance(declared.get("containerPort"), int):
                port = declared["containerPort"]
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/status"


async def read_status(session: aiohttp.ClientSession, url: str) -> ModelStatus | None:
    """A pod's /status, or None when it does not answer, or answers something else."""
    try:
        async with session.get(url, allow_redirects=False) as response:
            if response.status != _OK:
                logger.debug("pod_status_refused", extra={"url": url, "http_status": response.status})
                return None
            body = await response.content.read(_STATUS_LIMIT + 1)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        logger.debug("pod_status_unreachable", extra={"url": url, "reason": type(exc).__name__})
        return None
    if len(body) > _STATUS_LIMIT:
        logger.warning("pod_status_invalid", extra={"url": url, "reason": "too large"})
        return None
    try:
        return ModelStatus.decode(body)
    except MessageError as exc:
        logger.warning("pod_status_invalid", extra={"url": url, "reason": str(exc)})
        return None


async def observe(
    kube: KubeApi,
    http: aiohttp.ClientSession,
    *,
    namespace: str,
    vm_name: str,
    spec: VibrationModelSpec,
    http_port: int,
) -> Observed:
    """Everything `decide` needs about one VibrationModel, read fresh from the cluster."""
    mine = names.selector_labels(vm_name)
    nodes, pod_list, configmap_list = await asyncio.gather(
        kube.list(NODES, None, spec.node_selector),
        kube.list(PODS, namespace, mine),
        kube.list(CONFIGMAPS, namespace, mine),
    )
    all_pods = _by_node(pod_list)
    finished = [
        pod["metadata"]["name"]
        for pod in all_pods.values()
        if (pod.get("status") or {}).get("phase") in _GONE_PHASES
    ]
    pods = {node: pod for node, pod in all_pods.items() if pod["metadata"]["name"] not in finished}
    configmaps = _by_node(configmap_list)
    matching = {str(node["metadata"]["name"]): node for node in nodes}
    eligible = {name for name, node in matching.items() if node_is_eligible(node)}
    selected = eligible | (set(matching) & set(pods))
    # Matching but not eligible, with only a ConfigMap: left alone until it is Ready again.
    unselected = (set(pods) | set(configmaps)) - set(matching)

    urls = {node: status_url(pods[node], http_port) for node in selected if node in pods}
    wanted = {node: url for node, url in urls.items() if url is not None}
    unready = {node: pods[node] for node in selected if node in pods and not is_ready(pods[node])}
    answers, warnings = await asyncio.gather(
        asyncio.gather(*(read_status(http, url) for url in wanted.values())),
        pod_warnings(kube, namespace, unready),
    )
    reports = {node: answer for node, answer in zip(wanted, answers, strict=True) if answer is not None}

    observations = [
        observe_node(
            node,
            selected=node in selected,
            eligible=node in eligible,
            pod=pods.get(node),
            configmap=configmaps.get(node),
            pod_status=reports.get(node),
            warnings=warnings.get(node, []),
        )
        for node in sorted(selected | unselected)
    ]
    return Observed(observations, pods, configmaps, finished, reports, len(set(matching) - selected))


async def pod_warnings(
    kube: KubeApi, namespace: str, pods: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """The Warning events that say why each of `pods` (by node) cannot start, oldest first.

    One list of the namespace's pod warnings for all of them. Only those about the pod as it is
    now (its uid), of the last `WARNING_WINDOW_S`, and newer than its containers' last start: a
    Secret that has since been created no longer counts once the pod got past it. A failed list
    costs only the explanation, never the reconcile.
    """
    if not pods:
        return {}
    try:
        found = await kube.list(EVENTS, namespace, fields={"type": "Warning", "involvedObject.kind": "Pod"})
    except KubeError as exc:
        logger.warning("pod_warnings_unreadable", extra={"namespace": namespace, "reason": str(exc)[:200]})
        return {}
    now = datetime.now(UTC)
    out: dict[str, list[dict[str, Any]]] = {}
    for node, pod in pods.items():
        uid, since = (pod.get("metadata") or {}).get("uid"), _last_start(pod)
        recent = [
            event
            for event in found
            if event.get("reason") in POD_WARNINGS
            and (event.get("involvedObject") or {}).get("uid") == uid
            and since < _when(event)
            and (now - _when(event)).total_seconds() <= WARNING_WINDOW_S
        ]
        out[node] = sorted(recent, key=_when)
    return out


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _when(event: Mapping[str, Any]) -> datetime:
    return _stamp(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp"))


def _stamp(value: object) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return _EPOCH


def _last_start(pod: Mapping[str, Any]) -> datetime:
    """When a container of the pod last started (the epoch when none has)."""
    status = pod.get("status") or {}
    starts = [
        _stamp(state.get("startedAt"))
        for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        for state in ((container.get("state") or {}).get("running") or {},
                      (container.get("state") or {}).get("terminated") or {})
        if state.get("startedAt")
    ]  # fmt: skip
    return max(starts, default=_EPOCH)


async def read_reports(
    kube: KubeApi, http: aiohttp.ClientSession, namespace: str, vm_name: str, http_port: int
) -> tuple[dict[str, ModelStatus], set[str]]:
    """The /status of every running serving pod of a VibrationModel, by node (for drift checks).

    Also the nodes whose Ready pod did not answer: their last verdict stands for this check (a
    pod that is not Ready, crash-looping say, has no verdict to keep).
    """
    pods = _by_node(await kube.list(PODS, namespace, names.selector_labels(vm_name)))
    urls = {node: status_url(pod, http_port) for node, pod in pods.items()}
    wanted = {node: url for node, url in urls.items() if url is not None}
    answers = await asyncio.gather(*(read_status(http, url) for url in wanted.values()))
    reports = {node: answer for node, answer in zip(wanted, answers, strict=True) if answer is not None}
    return reports, silent_ready(pods, wanted, reports)


def silent_ready(
    pods: Mapping[str, Mapping[str, Any]], asked: Iterable[str], answered: Iterable[str]
) -> set[str]:
    """The nodes asked whose pod is Ready but did not answer: their last drift verdict stands."""
    return {node for node in set(asked) - set(answered) if is_ready(pods[node])}


def status_session(timeout_s: float = 1.0) -> aiohttp.ClientSession:
    """The session for the pods' /status: short timeouts, no proxies, no cookies."""
    timeout = aiohttp.ClientTimeout(total=timeout_s, connect=timeout_s)
    return aiohttp.ClientSession(
        timeout=timeout,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=64, force_close=True),
    )
