"""Where a hall's rollout stands: the `Plan` that `vibration_operator.rollout.decide` derives once a step.

From the spec, the last status and the nodes' observations: each node's outcome for the target,
the canaries, whether the rollout stopped or holds (update window, approval), and the active
version nodes go back to. `last_known` and `with_recorded_active` first fill in what a /status
that went unanswered, or a status that was lost, leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vibration_core.status import NodeStatus, VersionRef, VibrationModelStatus
from vibration_core.target import ModelTarget
from vibration_operator import schedule
from vibration_operator.conditions import get_condition, is_stopped, listing
from vibration_operator.node_state import NodeObservation, Outcome, assess

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from vibration_core.spec import VibrationModelSpec


@dataclass(frozen=True)
class Plan:
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
        """Why the rollout stopped: each failed node's reason, or the Degraded message the status kept."""
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


def plan(
    name: str,
    spec: VibrationModelSpec,
    old: VibrationModelStatus,
    observations: Sequence[NodeObservation],
    now: datetime,
) -> Plan:
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
    return Plan(
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


def last_known(
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


def with_recorded_active(
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
