"""Apply a rollout `Decision` to the cluster: status, events, target ConfigMaps, pods. Idempotent.

The order is the one `vibration_operator.rollout` prescribes: the status
first (it is what a restarted operator decides from), then the events of the
transitions it records, then the ConfigMaps that tell each node its target,
then pods (a pod of ours without an owner is adopted first). Every write is
conditional on a difference: the status and the ConfigMaps are patched with a
JSON merge patch computed against what was just read (nothing when nothing
changed), a pod that exists already (409) or is gone already (404) is fine,
and an event's name is derived from its content, so posting it twice is a
409, not a duplicate. Applying a decision twice therefore writes nothing the
second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vibration_operator import names
from vibration_operator.builders import (
    build_event,
    build_serving_pod,
    build_target_configmap,
    owner_reference,
)
from vibration_operator.conditions import Event, get_condition
from vibration_operator.kube import (
    CONFIGMAPS,
    EVENTS,
    PODS,
    VIBRATIONMODELS,
    ConflictError,
    KubeApi,
    KubeError,
    NotFoundError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from vibration_core.spec import VibrationModelSpec
    from vibration_core.status import VibrationModelStatus
    from vibration_core.target import ModelTarget
    from vibration_operator.observe import Observed
    from vibration_operator.rollout import Decision
    from vibration_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


@dataclass
class Applied:
    """What one application changed, for the log line."""

    status_patched: bool = False
    events: int = 0
    configmaps: int = 0
    pods_created: int = 0
    pods_deleted: int = 0
    pods_adopted: int = 0

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return any(
            (
                self.status_patched,
                self.events,
                self.configmaps,
                self.pods_created,
                self.pods_deleted,
                self.pods_adopted,
            )
        )


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch that turns `old` into `new` (lists replace, None deletes); {} if equal."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            if sub := merge_patch(before, value):
                patch[key] = sub
        elif key not in old or before != value:
            patch[key] = value
    return patch


def configmap_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The patch that gives `existing` the labels, annotations and data of `desired`; {} if it has them.

    Labels and annotations that others added stay; the data is replaced whole.
    """
    patch: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for field in ("labels", "annotations", "ownerReferences"):
        want = desired["metadata"].get(field)
        have = (existing.get("metadata") or {}).get(field)
        if isinstance(want, dict):
            changed = {key: value for key, value in want.items() if (have or {}).get(key) != value}
            if changed:
                meta[field] = changed
        elif want is not None and want != have:
            meta[field] = want
    if meta:
        patch["metadata"] = meta
    if data := merge_patch(existing.get("data") or {}, desired.get("data") or {}):
        patch["data"] = data
    return patch


def adoption_patch(pod: Mapping[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    """The patch that makes `owner` the controller of a pod of ours without one; {} if it has one.

    A pod left by ``kubectl delete vibm --cascade=orphan`` (or Argo CD's orphan prune) keeps our
    labels but loses its owner: found by label, it serves again, but it would outlive the next
    deletion of the model. A pod that another controller owns is not taken.
    """
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    if any(ref.get("controller") for ref in refs):
        return {}
    return {"metadata": {"ownerReferences": [*refs, dict(owner)]}}


async def post_events(kube: KubeApi, vm: Mapping[str, Any], events: Sequence[Event], now: datetime) -> int:
    """Post `events` on the VibrationModel; returns how many were new. Failures are logged, not raised."""
    meta, posted = vm["metadata"], 0
    for event in events:
        body = build_event(meta["name"], meta["namespace"], meta["uid"], event, now)
        try:
            await kube.create(EVENTS, meta["namespace"], body)
        except ConflictError:
            continue  # the same event, posted by an earlier attempt of this very step
        except KubeError as exc:
            # An event is a notification; the status holds the truth. Do not fail the step for it.
            logger.warning(
                "event_not_posted", extra={"reason": event.reason, "status": exc.status, "error": exc.message}
            )
            continue
        posted += 1
        logger.info("event_posted", extra={"type": event.type, "reason": event.reason, "model": meta["name"]})
    return posted


def drift_events(old: VibrationModelStatus, new: VibrationModelStatus) -> list[Event]:
    """An event when the Drifted condition changes its status (not on every check)."""
    before, after = get_condition(old.conditions, "Drifted"), get_condition(new.conditions, "Drifted")
    if after is None or (before is not None and before.status == after.status):
        return []
    if after.status == "True":
        return [Event("Warning", after.reason, after.message)]
    if before is not None and before.status == "True":
        return [Event("Normal", after.reason, after.message)]
    return []


async def _write_configmaps(
    kube: KubeApi, vm: Mapping[str, Any], decision: Decision, observed: Observed, applied: Applied
) -> None:
    meta = vm["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    for node, target in sorted(decision.targets.items()):
        desired = build_target_configmap(name, namespace, uid, node, target, decision.active_target)
        existing = observed.configmaps.get(node)
        if existing is None:
            try:
                await kube.create(CONFIGMAPS, namespace, desired)
            except ConflictError:
                existing = await kube.get(CONFIGMAPS, namespace, desired["metadata"]["name"])
            else:
                applied.configmaps += 1
                logger.info("target_created", extra={"model": name, "node": node, "version": target.version})
                continue
        if patch := configmap_patch(existing, desired):
            await kube.patch(CONFIGMAPS, namespace, existing["metadata"]["name"], patch)
            applied.configmaps += 1
            logger.info("target_updated", extra={"model": name, "node": node, "version": target.version})
        # Also when the ConfigMap was already right: an operator that died between the two
        # writes tells the pod on its next step (a pod already told is left alone).
        await _nudge_pod(kube, namespace, observed.pods.get(node), target_ref(target))


def target_ref(target: ModelTarget) -> str:
    """``version@sha256:digest`` (the version alone for an unverified artifact)."""
    return f"{target.version}@sha256:{target.sha256}" if target.sha256 else target.version


async def _nudge_pod(kube: KubeApi, namespace: str, pod: Mapping[str, Any] | None, ref: str) -> None:
    """Annotate the node's pod with its new target, so the kubelet refreshes the mount now.

    The kubelet rewrites a ConfigMap volume when it syncs the pod: on any change to the pod, or
    periodically. Without this, each rollout step waited about a minute for the periodic sync.
    """
    meta = (pod or {}).get("metadata") or {}
    if not meta.get("name") or meta.get("deletionTimestamp"):
        return  # no pod yet (it mounts the new target when it starts) or one on its way out
    if (meta.get("annotations") or {}).get(names.ANNOTATION_TARGET_REF) == ref:
        return
    patch = {"metadata": {"annotations": {names.ANNOTATION_TARGET_REF: ref}}}
    try:
        await kube.patch(PODS, namespace, meta["name"], patch)
    except NotFoundError:
        return  # gone since it was observed: its successor mounts the new target


async def _adopt_pods(
    kube: KubeApi, vm: Mapping[str, Any], decision: Decision, observed: Observed, applied: Applied
) -> None:
    meta = vm["metadata"]
    owner = owner_reference(meta["name"], meta["uid"])
    for node, pod in sorted(observed.pods.items()):
        patch = adoption_patch(pod, owner)
        if not patch or node in decision.delete_pods:
            continue
        try:
            await kube.patch(PODS, meta["namespace"], pod["metadata"]["name"], patch)
        except NotFoundError:
            continue  # gone since it was observed
        applied.pods_adopted += 1
        logger.info("pod_adopted", extra={"model": meta["name"], "node": node})


async def _delete_pods(
    kube: KubeApi, vm: Mapping[str, Any], decision: Decision, observed: Observed, applied: Applied
) -> None:
    namespace, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
    for pod in observed.finished_pods:
        if await kube.delete(PODS, namespace, pod):
            applied.pods_deleted += 1
            logger.info("finished_pod_deleted", extra={"model": name, "pod": pod})
    for node in decision.delete_pods:
        pod_name = (observed.pods.get(node) or {}).get("metadata", {}).get("name")
        if await kube.delete(PODS, namespace, pod_name or names.serving_pod_name(name, node)):
            applied.pods_deleted += 1
            logger.info("pod_deleted", extra={"model": name, "node": node})
        if node not in decision.targets:
            cm = (observed.configmaps.get(node) or {}).get("metadata", {}).get("name")
            await kube.delete(CONFIGMAPS, namespace, cm or names.target_configmap_name(name, node))


async def _create_pods(
    kube: KubeApi,
    *,
    vm: Mapping[str, Any],
    spec: VibrationModelSpec,
    decision: Decision,
    settings: OperatorSettings,
    applied: Applied,
) -> None:
    meta = vm["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    for node in decision.create_pods:
        if node not in decision.targets:
            continue  # never start a pod without its target ConfigMap: it would validate nothing
        body = build_serving_pod(name, namespace, uid, spec, node, settings)
        try:
            await kube.create(PODS, namespace, body)
        except ConflictError:
            continue  # created by an earlier attempt, or still terminating: the next step sees it
        applied.pods_created += 1
        logger.info("pod_created", extra={"model": name, "node": node, "pod": body["metadata"]["name"]})


async def apply_decision(
    kube: KubeApi,
    *,
    vm: Mapping[str, Any],
    spec: VibrationModelSpec,
    decision: Decision,
    observed: Observed,
    settings: OperatorSettings,
    now: datetime,
) -> Applied:
    """Make the cluster match `decision` for the VibrationModel `vm` (as just read). KubeErrors propagate."""
    applied = Applied()
    new_status = decision.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    applied.status_patched = await patch_status(kube, vm, new_status)
    applied.events = await post_events(kube, vm, decision.events, now)
    await _write_configmaps(kube, vm, decision, observed, applied)
    await _adopt_pods(kube, vm, decision, observed, applied)
    await _delete_pods(kube, vm, decision, observed, applied)
    await _create_pods(kube, vm=vm, spec=spec, decision=decision, settings=settings, applied=applied)
    return applied


async def patch_status(kube: KubeApi, vm: Mapping[str, Any], new_status: Mapping[str, Any]) -> bool:
    """Patch the status subresource to `new_status` (camelCase JSON); False when nothing differs."""
    patch = merge_patch(vm.get("status") or {}, new_status)
    if patch:
        meta = vm["metadata"]
        await kube.patch(
            VIBRATIONMODELS, meta["namespace"], meta["name"], {"status": patch}, subresource="status"
        )
    return bool(patch)
