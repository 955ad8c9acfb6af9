"""The rollout state machine of a hall: which model each node should serve, decided as a pure function.

`decide` takes the hall-level steps: where the rollout stands (`vibration_operator.rollout_plan`),
each node's target and status entry (`vibration_operator.rollout_targets`), the status and the
pods to create and delete; what one node's pod says about a version, and that node's entry in the
status, are `vibration_operator.node_state`'s.

Design (the README links here)
------------------------------
**One serving pod per selected node**, a bare Pod owned by its VibrationModel
(``ownerReferences``, ``controller: true``) and bound to its node by required
node affinity on ``metadata.name``, so the scheduler still accounts the
node's resources, the Edge TPU included. Not a DaemonSet: the operator must
choose the order of nodes (canaries first, stop at the first failure), and
a DaemonSet would roll a changed pod template, and so a second pod asking
for the one TPU, across nodes in its own order.

**The pod spec is version-agnostic.** Which model a node should serve lives
in the node's target ConfigMap, written only by the operator (Kubernetes
RBAC is the authenticated channel a model target needs) and mounted into the pod at
``/etc/vibration-edge/target``. The init container validates that target on
the node against hostPath test data and a node-local cache; with
``--fallback-last-good`` it still exits 0 when the target fails but a last
good model is cached, so a rebooted node serves again offline; the verdict
is in its termination message. The serve container watches the same file,
validates a new target with the same code while the old model keeps serving
and swaps between batches, or keeps the old model and reports the failure
on ``/status``. A rollout therefore never replaces a pod: the TPU is held by
exactly one pod and a Coral node is never without a model, also when a
validation fails. CPU nodes use the same path, so there is one path to test.

**The machine.** ``decide(name, spec, generation, status, observations, now)``
returns the target of every node, the pods to create and delete, the new
status and the events. Everything it needs is in the status and in the
cluster (pods, their reports, the target ConfigMaps), so a restarted
operator decides the same, a decision applied twice changes nothing, and
the next decision after applying one converges. Per target digest D:

| state (phase)        | entered when                   | nodes' targets                 | leaves to         |
|----------------------|--------------------------------|--------------------------------|-------------------|
| Canary (Progressing) | spec's version/digest is new   | first ``canaryNodes`` by name, | Rest; Stopped     |
|                      | (differs from status.target)   | Ready ones first: D; others:   |                   |
|                      |                                | active (first rollout: no pod, |                   |
|                      |                                | Waiting)                       |                   |
| Rest (Progressing)   | every canary serves D, or a    | every node: D                  | Promoted; Stopped |
|                      | non-canary was given D before  |                                |                   |
| Promoted (Ready)     | every selected node serves D   | D; status.active = D           | Canary (new spec) |
| Stopped (Degraded)   | a node reports D failed        | active everywhere; no pod      | Canary (new spec) |
|                      | (candidate or init report)     | where nothing passed           |                   |
| Held (Waiting/Paused)| window closed, or paused       | unchanged; mid-validation ends | the state it left |

Rolling back to the active version is never held: it restores what passed.
A spec change mid-rollout resets the waves for the new digest, so nodes on
the abandoned target go back to active unless they are new canaries. Nodes
that join get the active version (D once past the canaries); nodes that
leave the selection lose their pod and ConfigMap. Failures are sticky per
digest (kept in the node status and the Degraded condition) so a stopped
rollout does not retry in a loop. Apply a decision status first, then the
ConfigMaps, then pods: a crash in between is then repaired by the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from vibration_core.status import VibrationModelStatus
from vibration_operator import rollout_plan, rollout_targets
from vibration_operator.pod_lifecycle import pod_changes
from vibration_operator.rollout_status import record

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from vibration_core.spec import VibrationModelSpec
    from vibration_core.target import ModelTarget
    from vibration_operator.conditions import Event
    from vibration_operator.node_state import NodeObservation


@dataclass(frozen=True)
class Decision:
    """What to apply: status first, then the ConfigMaps of `targets`, then pods."""

    targets: dict[str, ModelTarget]
    """The target each listed node's ConfigMap must hold; unlisted nodes' ConfigMaps stay as they are."""
    active_target: ModelTarget | None
    """The active version's record, to keep on every ConfigMap written."""
    create_pods: list[str]
    delete_pods: list[str]
    """Nodes whose pod goes: no longer selected or with nothing to serve (their ConfigMap goes
    too), or built from an older pod spec (created again from the current one next step)."""
    status: VibrationModelStatus
    events: list[Event] = field(default_factory=list)
    wake_at: datetime | None = None
    """When the rollout is held by the update window: when it opens."""


def decide(  # noqa: PLR0917 - identity, then content, as every builder
    name: str,
    spec: VibrationModelSpec,
    generation: int,
    status: VibrationModelStatus | None,
    observations: Sequence[NodeObservation],
    now: datetime,
    *,
    unavailable: int = 0,
) -> Decision:
    """The next step of the rollout of VibrationModel `name`, from its last status and the cluster.

    `unavailable`: the nodes that match spec.nodeSelector but are not observed, being neither
    Ready and schedulable nor holding a pod of ours (said when no node is left).
    """
    old = status or VibrationModelStatus()
    observations = rollout_plan.last_known(observations, old)
    plan = rollout_plan.plan(
        name, spec, rollout_plan.with_recorded_active(old, observations), observations, now
    )
    targets = {o.name: want for o in plan.nodes if (want := rollout_targets.want(plan, o)) is not None}
    statuses = rollout_targets.node_statuses(plan, targets, now)
    progress = replace(rollout_targets.progress(plan, statuses, targets), unavailable=unavailable)
    new_status, events = record(plan.old, progress, generation, now)
    moving = [
        o.name for o in plan.nodes if o.name in targets and rollout_targets.moving(o, targets[o.name], plan)
    ]
    pods = pod_changes(observations, plan.nodes, targets, hold=plan.pods_held, moving=moving)
    return Decision(
        targets=targets,
        active_target=plan.goal.as_active() if new_status.active == plan.ref else plan.active,
        create_pods=pods.create,
        delete_pods=pods.delete,
        status=new_status,
        events=events + pods.events,
        wake_at=plan.hold.until if plan.hold else None,
    )
