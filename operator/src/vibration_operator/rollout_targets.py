"""What a rollout `Plan` means for each node: its target, its entry in the status, the hall's progress.

Pure functions of a plan (`vibration_operator.rollout_plan`): `want` is the target a node's
ConfigMap must hold, `moving` whether its pod is on its way there (pod replacements wait for
it), and `node_statuses` and `progress` the facts the status, its conditions and the events are
written from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vibration_operator.conditions import POD_PROBLEM
from vibration_operator.node_state import node_status, same_version
from vibration_operator.rollout_status import Progress

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from vibration_core.status import NodeStatus
    from vibration_core.target import ModelTarget
    from vibration_operator.node_state import NodeObservation
    from vibration_operator.rollout_plan import Plan


def want(plan: Plan, obs: NodeObservation) -> ModelTarget | None:
    """The target a node's ConfigMap must hold; None: the node has nothing it may serve."""
    if plan.stopped:
        target = plan.active  # rolling back is never held: it restores what passed
    elif plan.hold is not None:
        old = plan.before.get(obs.name)
        kept = plan.goal if old is not None and old.target == plan.ref else None
        target = obs.assigned or kept or plan.active
    elif plan.past_canaries or obs.name in plan.canaries:
        target = plan.goal
    else:
        target = plan.active
    if (
        target is not None
        and target.ref == plan.ref
        and plan.outcomes[obs.name].failed
        and obs.serving is None
    ):
        return None  # it failed this very version and has no last good: a pod would only crash-loop
    return target


def moving(obs: NodeObservation, target: ModelTarget, plan: Plan) -> bool:
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


def _why_waiting(plan: Plan, want: ModelTarget | None) -> str:
    """Why a node that is not moving to the target waits: the hall's reason."""
    if plan.stopped:
        return f"rollout of {plan.ref.version} stopped"
    if plan.hold is not None:
        return plan.hold.message
    if want is None:
        return "waiting for the canary nodes to pass"
    return f"serves {want.version} until the canary nodes pass"


def node_statuses(plan: Plan, targets: Mapping[str, ModelTarget], now: datetime) -> list[NodeStatus]:
    """Each selected node's entry in the status, given the targets decided for the nodes."""
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


def _put_back(plan: Plan, targets: Mapping[str, ModelTarget]) -> list[str]:
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


def progress(plan: Plan, statuses: list[NodeStatus], targets: Mapping[str, ModelTarget]) -> Progress:
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
