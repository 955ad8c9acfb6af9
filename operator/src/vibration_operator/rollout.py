"""The rollout state machine of a hall: which model each node should serve, decided as a pure function.

`decide` takes the hall-level steps (the plan, each node's target, the status, the pods to
create and delete); what one node's pod says about a version, and that node's entry in the
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

from vibration_core.status import NodeStatus, VersionRef, VibrationModelStatus
from vibration_core.target import ModelTarget
from vibration_operator import schedule
from vibration_operator.conditions import (
    POD_PROBLEM,
    Event,
    Progress,
    get_condition,
    is_stopped,
    listing,
    record,
)
from vibration_operator.node_state import NodeObservation, Outcome, assess, node_status, same_version
from vibration_operator.pod_lifecycle import pod_changes

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from vibration_core.spec import VibrationModelSpec


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


@dataclass(frozen=True)
class _Plan:
    """The facts `decide` derives once and its steps share."""

    ref: VersionRef
    goal: ModelTarget
    """The spec's target, with the hall's active version as its champion."""
    old: VibrationModelStatus
    fresh: bool
    """The spec names another target than the last status: the waves start again."""
    before: dict[str, NodeStatus]
    """Last status's node entries, when they are about this target."""
    nodes: list[NodeObservation]
    """The selected nodes, by name."""
    canaries: list[str]
    outcomes: dict[str, Outcome]
    active: ModelTarget | None
    was_stopped: bool
    stopped: bool
    hold: schedule.Hold | None
    pods_held: bool
    """No pod is replaced for a newer pod spec: the rollout holds, or the window is closed."""
    canaries_passed: bool
    """Every canary serves the target and the other nodes still wait for them."""
    past_canaries: bool
    bad_window: str
    """Why spec.rollout.updateWindow can never open ('' when it can), whatever the rollout does."""

    def failures(self) -> str:
        said = [f"validation failed on node {n}: {o.reason}" for n, o in self.outcomes.items() if o.failed]
        degraded = get_condition(self.old.conditions, "Degraded")
        kept = degraded.message if degraded is not None and self.before and is_stopped(self.old) else ""
        return listing(said) or kept  # a failed node may have left the selection since


def _recover_active(
    ref: VersionRef | None, goal: ModelTarget, obs: Sequence[NodeObservation]
) -> ModelTarget | None:
    """The full record of the active version: the spec's, or one kept on a ConfigMap.

    Without a champion: the active version is what nodes go back to, and going back to what
    passed is never held to another version (it would refuse a rollback).
    """
    if ref is None:
        return None
    if goal.ref == ref:
        return goal.as_active()
    records = [r for o in obs for r in (o.assigned, o.recorded_active) if r is not None and r.ref == ref]
    return records[0].as_active() if records else None


def _canaries(
    count: int, old: VibrationModelStatus, nodes: Sequence[NodeObservation], *, fresh: bool
) -> list[str]:
    """The canary nodes: the first `count` selected by name when the target is new, then the same ones.

    A node that is not Ready (a gateway powered off with its pod still bound to it) comes after
    every Ready one: as a canary it would hold the whole rollout until it came back. Chosen
    again at each step, a node that joins and sorts first, one that leaves, or a lower
    `canaryNodes` would make a node that was given the target as a canary look like one of the
    rest, and the rest would get the target before the canaries passed. A canary that leaves
    before they pass is replaced by the next node, Ready ones first, by name.
    """
    if not fresh and not old.canaries:  # a status written before canaries were kept: by name, as then
        return [o.name for o in nodes][:count]
    names = [o.name for o in nodes if o.eligible] + [o.name for o in nodes if not o.eligible]
    if fresh:
        return names[:count]
    kept = [n for n in old.canaries if n in names]
    begun = any(n.target == old.target and n.name not in old.canaries for n in old.nodes)
    if begun or len(kept) >= count:
        return kept
    return kept + [n for n in names if n not in kept][: count - len(kept)]


def _plan(
    name: str,
    spec: VibrationModelSpec,
    old: VibrationModelStatus,
    observations: Sequence[NodeObservation],
    now: datetime,
) -> _Plan:
    """Where the rollout stands: each node's outcome, the canaries, and whether it stopped or holds."""
    ref = VersionRef(version=spec.version, sha256=spec.artifact.sha256)
    # The champion of a new version is the one the hall serves: each node holds the candidate
    # to it on its own test data (the promotion gate, vibration_core.gate). A version this hall
    # promoted before is a rollback: held to the one that replaced it, it could be refused as a
    # regression just when the newer one misbehaves in ways its test data does not show.
    rollback = any(
        h.action == "Promoted" and (h.version, h.sha256) == (ref.version, ref.sha256) for h in old.history
    )
    goal = ModelTarget.from_spec(
        name, spec, champion=old.active if old.active != ref and not rollback else None
    )
    fresh = old.target != ref
    before = {} if fresh else {n.name: n for n in old.nodes}
    nodes = sorted((o for o in observations if o.selected), key=lambda o: o.name)
    outcomes = {o.name: assess(o, ref, before.get(o.name)) for o in nodes}
    was_stopped = not fresh and is_stopped(old)
    stopped = was_stopped or any(out.failed for out in outcomes.values())
    count = spec.rollout.canary_nodes
    if spec.rollout.approval == "manual" and len(nodes) > 1 and old.active is not None:
        count = min(count, len(nodes) - 1)  # a node is left for the approval to hold back
    canaries = _canaries(count, old, nodes, fresh=fresh)
    were = {*canaries, *old.canaries}  # a canary that left was given the target as one
    recorded_past = any(n.target == ref and n.name not in were for n in before.values())
    canaries_serve = bool(canaries) and all(outcomes[c].serving for c in canaries)
    # The canaries have just passed and other nodes wait for them: a manual rollout asks now.
    rest_waits = canaries_serve and not recorded_past and len(nodes) > len(canaries)
    window = None if stopped else schedule.hold(spec.rollout, now)
    hold = None
    # Rolling back to the active version restores what passed on every node: never held. Pods
    # built from an older spec still wait for the window (`pods_held`).
    if not stopped and old.active != ref:
        hold = window
        if hold is None and rest_waits:
            hold = schedule.awaiting_approval(spec.rollout, spec.version, canaries)
        elif hold is None and len(nodes) == 1 and old.active is not None:
            # A hall of one node: no canary can go first, so the approval is asked before it (not
            # on a first rollout, which replaces nothing), and kept once the node was given it.
            given = any(n.target == ref for n in before.values())
            hold = (
                None if given else schedule.awaiting_approval_alone(spec.rollout, spec.version, nodes[0].name)
            )
    return _Plan(
        ref=ref,
        goal=goal,
        old=old,
        fresh=fresh,
        before=before,
        nodes=nodes,
        canaries=canaries,
        outcomes=outcomes,
        active=_recover_active(old.active, goal, observations),
        was_stopped=was_stopped,
        stopped=stopped,
        hold=hold,
        pods_held=hold is not None or window is not None,
        canaries_passed=rest_waits and hold is None and not stopped,
        past_canaries=recorded_past or (canaries_serve and hold is None),
        bad_window=schedule.window_problem(spec.rollout.update_window),
    )


def _want(plan: _Plan, obs: NodeObservation) -> ModelTarget | None:
    """The target a node's ConfigMap must hold; None: the node has nothing it may serve."""
    if plan.stopped:
        want = plan.active  # rolling back is never held: it restores what passed
    elif plan.hold is not None:
        old = plan.before.get(obs.name)
        kept = plan.goal if old is not None and old.target == plan.ref else None
        want = obs.assigned or kept or plan.active
    elif plan.past_canaries or obs.name in plan.canaries:
        want = plan.goal
    else:
        want = plan.active
    if want is not None and want.ref == plan.ref and plan.outcomes[obs.name].failed and obs.serving is None:
        return None  # it failed this very version and has no last good: a pod would only crash-loop
    return want


def _moving(obs: NodeObservation, target: ModelTarget, plan: _Plan) -> bool:
    """Whether the node's Ready pod is on its way to `target`: validating a candidate, or yet to take it up.

    Only a pod that can get there holds pod replacements up. Not one that is not Ready (a
    shadow run without live windows never ends, and a new pod may be what mends it), not one
    whose candidate for the target failed (it stays where it is), and not one waiting for the
    registry (its pod tries again by itself; a new pod, say with mended credentials, may be
    what it waits for). A Ready pod whose /status did not answer counts as on its way.
    """
    if not obs.ready:
        return False
    candidate = obs.candidate
    if obs.serving is None and candidate is None:
        # Its /status went unanswered this step: where it stands is unknown, so it holds
        # replacements up for the step (a pod the operator can never reach stops the
        # rollout anyway), unless its candidate for the target already failed.
        return not plan.outcomes[obs.name].failed
    if candidate is not None and candidate.state == "validating":
        return True
    if candidate is not None and candidate.state == "failed" and candidate.sha256 == target.sha256:
        return False
    outcome = plan.outcomes[obs.name]
    stuck = outcome.problem if target.ref == plan.ref else ""
    return obs.serving is not None and not same_version(obs.serving, target.ref) and not stuck


def _why_waiting(plan: _Plan, want: ModelTarget | None) -> str:
    """Why a node that is not moving to the target waits: the hall's reason."""
    if plan.stopped:
        return f"rollout of {plan.ref.version} stopped"
    if plan.hold is not None:
        return plan.hold.message
    if want is None:
        return "waiting for the canary nodes to pass"
    return f"serves {want.version} until the canary nodes pass"


def _node_statuses(plan: _Plan, targets: Mapping[str, ModelTarget], now: datetime) -> list[NodeStatus]:
    old = {n.name: n for n in plan.old.nodes}
    return [
        node_status(
            o,
            plan.outcomes[o.name],
            plan.ref,
            targets.get(o.name),
            old.get(o.name),
            _why_waiting(plan, targets.get(o.name)),
            now,
        )
        for o in plan.nodes
    ]


def _put_back(plan: _Plan, targets: Mapping[str, ModelTarget]) -> list[str]:
    """Nodes that had been given the target, did not fail it, and now go back to the active version."""
    if plan.was_stopped or not plan.stopped or plan.active is None or plan.active.ref == plan.ref:
        return []
    had = {
        o.name
        for o in plan.nodes
        if not plan.outcomes[o.name].failed  # a failed node never stopped serving the active version
        and (
            (o.assigned is not None and o.assigned.ref == plan.ref)
            or plan.outcomes[o.name].serving
            or (o.name in plan.before and plan.before[o.name].target == plan.ref)
        )
    }
    return sorted(n for n in had if n in targets and targets[n].ref != plan.ref)


def _progress(plan: _Plan, statuses: list[NodeStatus], targets: Mapping[str, ModelTarget]) -> Progress:
    """The facts the conditions, the phase and the events are written from."""
    return Progress(
        target=plan.ref,
        nodes=statuses,
        canaries=plan.canaries,
        stopped=plan.stopped,
        hold=plan.hold,
        started=plan.fresh,
        canaries_passed=plan.canaries_passed,
        put_back=_put_back(plan, targets),
        failure=plan.failures(),
        pod_problems={
            n.name: n.reason.split(POD_PROBLEM, 1)[1]
            for n in statuses
            if POD_PROBLEM in n.reason and n.state != "Failed"
        },
        bad_window=plan.bad_window,
        down=[
            o.name
            for o in plan.nodes
            if not o.eligible and not plan.outcomes[o.name].serving and not plan.outcomes[o.name].failed
        ],
    )


def _last_known(
    observations: Sequence[NodeObservation], status: VibrationModelStatus
) -> list[NodeObservation]:
    """The observations, with what a Ready pod served at the last step where its /status went unanswered.

    One slow answer (the budget is a second; a gateway busy validating may miss it) would
    otherwise read as "serves nothing": the hall flips to Progressing, Ready to False, and
    NodeValidating/NodeServing events come and go, Argo CD's health with them.
    """
    served = {n.name: n.serving for n in status.nodes if n.serving is not None}
    return [
        replace(o, serving=served[o.name])
        if o.ready and o.serving is None and o.candidate is None and o.name in served
        else o
        for o in observations
    ]


def _with_recorded_active(
    status: VibrationModelStatus, observations: Sequence[NodeObservation]
) -> VibrationModelStatus:
    """`status`, with the active version the nodes' ConfigMaps record when the status lost it.

    A status that could not be read is rebuilt from nothing; without this, the hall would
    forget what it serves: a new version would have no champion, and a failed one nothing
    to roll back to. The ConfigMaps agree on one active version, or none is taken.
    """
    if status.active is not None:
        return status
    recorded = {o.recorded_active.ref for o in observations if o.recorded_active is not None}
    if len(recorded) != 1:
        return status
    return status.model_copy(update={"active": recorded.pop()})


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
    observations = _last_known(observations, old)
    plan = _plan(name, spec, _with_recorded_active(old, observations), observations, now)
    targets = {o.name: want for o in plan.nodes if (want := _want(plan, o)) is not None}
    statuses = _node_statuses(plan, targets, now)
    progress = replace(_progress(plan, statuses, targets), unavailable=unavailable)
    new_status, events = record(plan.old, progress, generation, now)
    moving = [o.name for o in plan.nodes if o.name in targets and _moving(o, targets[o.name], plan)]
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
