"""Which serving pods a rollout step creates and deletes, and the one outdated pod it replaces.

Pure functions over the nodes' observations and the targets `vibration_operator.rollout`
decided: a node with a target and no pod gets one; a node that left the selection, or has
nothing it may serve, loses its pod; a pod built from an older pod spec is replaced one node
at a time, while the rest serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vibration_operator.conditions import Event

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from vibration_core.target import ModelTarget
    from vibration_operator.node_state import NodeObservation


@dataclass(frozen=True)
class PodChanges:
    """The nodes whose pod to create and to delete, and the events about replaced pods."""

    create: list[str]
    delete: list[str]
    events: list[Event] = field(default_factory=list)


def _pods_to_delete(observations: Sequence[NodeObservation], targets: Mapping[str, ModelTarget]) -> list[str]:
    """Pods of nodes no longer selected, and of selected nodes with nothing they may serve.

    A Ready pod serves something, whatever its /status said this time: a request that
    timed out once must not take a validated model off its node.
    """
    return sorted(
        o.name
        for o in observations
        if (not o.selected and (o.pod_exists or o.assigned is not None))
        or (o.selected and o.pod_exists and o.name not in targets and o.serving is None and not o.ready)
    )


def _one_outdated_pod(
    nodes: Sequence[NodeObservation],
    targets: Mapping[str, ModelTarget],
    deleting: Sequence[str],
    *,
    hold: bool,
    moving: Collection[str],
) -> list[str]:
    """A pod built from an older pod spec, to replace: one node at a time, while the rest serve.

    A Ready pod only when every other node that should serve and is up (Ready and
    schedulable) has a Ready pod and nothing else goes: so a broken pod spec (a wrong
    broker) stops at the first node it reaches, whose new pod, never Ready, is not
    outdated and holds the rest; a gateway powered off holds nothing. A pod that is
    not Ready serves nothing, so it is replaced whatever the others do, unless a
    pod of the current spec is not Ready either: the spec that mends it (a moved
    broker, rotated credentials) must reach a hall whose every pod waits, one pod
    after the other as each new one proves Ready, and a broken first pod is
    replaced again once the spec is mended. Each pod is replaced once per pod spec, so this cannot loop. The
    pod is deleted here and created from the current spec on the next step (its
    node cache lets it start on the last good version): a short gap on that node,
    as its pod name and MQTT session are its own (and a Coral node's one TPU lets
    no second pod start beside the first anyway). Never while the rollout holds
    (paused, outside its update window), while a node's target changes or a node
    is `moving` to its target (its pod validates it, or has not taken it up yet: a
    new pod's init container would validate it on test data alone, with no shadow
    run, and a Coral node would be without a model meanwhile), while a pod is
    still terminating, or on a node that could not start the new pod.
    """
    serving = [o for o in nodes if o.name in targets]
    busy = bool(moving) or any(o.pod_terminating or targets[o.name] != o.assigned for o in serving)
    if deleting or hold or busy:
        return []
    # A pod of the current spec that is not Ready (yet, or ever: a broken spec) holds the rest,
    # also those that are not Ready just now: a broker restarting must not let a broken spec
    # take every node.
    current_waits = any(o.pod_exists and not o.pod_outdated and not o.ready for o in serving if o.eligible)
    for node in serving:
        if not (node.pod_outdated and node.eligible):
            continue
        others_serve = all(o.pod_exists and o.ready for o in serving if o is not node and o.eligible)
        if others_serve or not (node.ready or current_waits):
            return [node.name]
    return []


def pod_changes(
    observations: Sequence[NodeObservation],
    nodes: Sequence[NodeObservation],
    targets: Mapping[str, ModelTarget],
    *,
    hold: bool,
    moving: Collection[str] = (),
) -> PodChanges:
    """The pods to create and delete, given every observed node and the selected `nodes`' targets.

    `moving`: the nodes whose pods are on their way to their target (see `_one_outdated_pod`).
    """
    gone = _pods_to_delete(observations, targets)
    replaced = _one_outdated_pod(nodes, targets, gone, hold=hold, moving=moving)
    return PodChanges(
        create=[o.name for o in nodes if o.name in targets and not o.pod_exists],
        delete=gone + replaced,
        events=[
            Event(
                "Normal", "PodReplaced", f"replacing the pod on {node}: it was built from an older pod spec"
            )
            for node in replaced
        ],
    )
