"""The rollout state machine: which model each node should serve, decided as a pure function.

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
| Canary (Progressing) | spec's version/digest is new   | first ``canaryNodes`` by name: | Rest; Stopped     |
|                      | (differs from status.target)   | D; others: active (first       |                   |
|                      |                                | rollout: no pod, Waiting)      |                   |
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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from vibration_core.spec import NodeGate, NodeStatus, VersionRef, VibrationModelStatus
from vibration_core.target import ModelTarget
from vibration_core.validation import ExitCode
from vibration_operator import schedule
from vibration_operator.conditions import POD_PROBLEM, Event, Progress, get_condition, is_stopped, record
from vibration_operator.gate_view import gate_of

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from vibration_core.messages import CandidateState
    from vibration_core.spec import VibrationModelSpec
    from vibration_core.validation import CompactReport


def same_version(served: VersionRef, target: VersionRef) -> bool:
    """Whether `served` is `target`: by digest when the target has one, else by version."""
    return served.sha256 == target.sha256 if target.sha256 else served.version == target.version


@dataclass(frozen=True)
class Candidate:
    """What a serving pod says about the last target it was asked to swap to."""

    sha256: str | None
    state: CandidateState
    version: str | None = None
    report: CompactReport | None = None


@dataclass(frozen=True)
class NodeObservation:
    """What the cluster shows for one node: selected, or still holding a pod or ConfigMap of ours."""

    name: str
    selected: bool = True
    pod_exists: bool = False
    ready: bool = False
    """The serving pod's Ready condition."""
    serving: VersionRef | None = None
    """What the pod's /status says it serves."""
    candidate: Candidate | None = None
    init_report: CompactReport | None = None
    """The init container's termination message (its last run)."""
    init_exit_code: int | None = None
    assigned: ModelTarget | None = None
    """The target the node's ConfigMap holds now."""
    recorded_active: ModelTarget | None = None
    """The active version's record on that ConfigMap (for rollbacks after a restart)."""
    pod_outdated: bool = False
    """The pod was built from another pod spec than the VibrationModel and operator build now."""
    pod_terminating: bool = False
    """The pod is being deleted (it may still show Ready for its grace period)."""
    eligible: bool = True
    """The node is Ready and schedulable: a pod deleted there can start again."""
    pod_problem: str = ""
    """Why the serving pod does not run or serve, in the kubelet's or the pod's words ('' if fine)."""


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
class _Outcome:
    serving: bool = False
    failed: bool = False
    reason: str = ""
    accuracy: float | None = None
    p99_ms: float | None = None
    from_cache: bool = False
    """The validation that let it serve took the model from the node's cache (no registry needed)."""
    problem: str = ""
    """Why the node cannot get there for now, through no fault of the model (the registry)."""
    gate: NodeGate | None = None


def _matches(sha256: str | None, version: str | None, ref: VersionRef) -> bool | None:
    """Whether a report is about `ref`; None when it names neither digest nor version."""
    if sha256 and ref.sha256:
        return sha256 == ref.sha256
    if version:
        return version == ref.version
    return None


def _assess(obs: NodeObservation, ref: VersionRef, old: NodeStatus | None) -> _Outcome:
    """Whether the node serves `ref`, failed it, or neither yet. `old` is its entry for this `ref`."""
    mine = (obs.assigned.ref if obs.assigned else (old.target if old else None)) == ref
    report: CompactReport | None = None
    failed = False
    cand, init = obs.candidate, obs.init_report
    about = _matches(init.sha256, init.version, ref) if init is not None else False
    if cand is not None and _matches(cand.sha256, cand.version, ref):
        # The pod's own swap is newer than its init container's verdict. A pod that starts on the
        # version its init container just validated reports that candidate without a report of its
        # own: the init container's stands for it.
        report, failed = cand.report or (init if about else None), cand.state == "failed"
    elif init is not None and (about or (about is None and mine)):
        # A report that names no digest (say, the card could not be fetched) is about what the node was given.
        report, failed = init, init.outcome == "failed"
    accuracy = report.accuracy if report else (old.accuracy if old else None)
    p99 = report.p99_ms if report else (old.p99_latency_ms if old else None)
    gate = (gate_of(report) if report else None) or (old.gate if old else None)
    if obs.serving is not None and same_version(obs.serving, ref):
        cached = report is not None and report.source == "cache" and report.outcome == "passed"
        return _Outcome(serving=True, accuracy=accuracy, p99_ms=p99, from_cache=cached, gate=gate)
    code = (
        report.code
        if failed and report is not None
        else (obs.init_exit_code if report is None and mine else None)
    )
    if code == ExitCode.CANNOT_FETCH:
        # The registry's fault (down, or refusing the node's keys), not the model's: the pod tries
        # again by itself (serve's swap, the kubelet's init container), so the rollout waits.
        said = report.reason if report is not None else "init container exit 10"
        return _Outcome(
            problem=f"cannot fetch {ref.version}, retrying: {said}", accuracy=accuracy, p99_ms=p99
        )
    if failed:
        code_name = f"{report.reason_code}: " if report is not None and report.reason_code else ""
        why = (
            f"{code_name}{report.reason or 'validation failed'} (exit {report.code})"
            if report
            else "failed in the pod"
        )
        return _Outcome(failed=True, reason=why, accuracy=accuracy, p99_ms=p99, gate=gate)
    if report is None and mine and obs.init_exit_code not in {None, 0}:
        return _Outcome(failed=True, reason=f"init container exited with code {obs.init_exit_code}")
    if old is not None and old.state == "Failed":  # sticky: no retry until the spec changes
        return _Outcome(failed=True, reason=old.reason, accuracy=accuracy, p99_ms=p99, gate=gate)
    return _Outcome(accuracy=accuracy, p99_ms=p99, gate=gate)


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


@dataclass(frozen=True)
class _Plan:
    """The facts `decide` derives once and its helpers share."""

    ref: VersionRef
    old: VibrationModelStatus
    before: dict[str, NodeStatus]
    """Last status's node entries, when they are about this target."""
    canaries: list[str]
    outcomes: dict[str, _Outcome]
    active: ModelTarget | None
    stopped: bool
    hold: schedule.Hold | None
    past_canaries: bool

    def failures(self) -> str:
        said = [f"validation failed on node {n}: {o.reason}" for n, o in self.outcomes.items() if o.failed]
        degraded = get_condition(self.old.conditions, "Degraded")
        kept = degraded.message if degraded is not None and self.before and is_stopped(self.old) else ""
        return "; ".join(said) or kept  # a failed node may have left the selection since


def _want(plan: _Plan, obs: NodeObservation, goal: ModelTarget) -> ModelTarget | None:
    """The target a node's ConfigMap must hold; None: the node has nothing it may serve."""
    if plan.stopped:
        want = plan.active  # rolling back is never held: it restores what passed
    elif plan.hold is not None:
        old = plan.before.get(obs.name)
        kept = goal if old is not None and old.target == plan.ref else None
        want = obs.assigned or kept or plan.active
    elif plan.past_canaries or obs.name in plan.canaries:
        want = goal
    else:
        want = plan.active
    if want is not None and want.ref == plan.ref and plan.outcomes[obs.name].failed and obs.serving is None:
        return None  # it failed this very version and has no last good: a pod would only crash-loop
    return want


def pod_problem_of(obs: NodeObservation, old: NodeStatus | None) -> str:
    """The node's pod problem: the one seen now, or the last one while that pod still is not Ready.

    A crash-looping container runs for a moment between its back-offs, and a pod whose Secret has
    just appeared still starts up: neither has been mended until the pod is Ready (or replaced).
    """
    if obs.pod_problem or old is None or POD_PROBLEM not in old.reason:
        return obs.pod_problem
    if not obs.pod_exists or obs.ready or obs.pod_terminating:
        return ""
    return old.reason.split(POD_PROBLEM, 1)[1]


def _node_status(plan: _Plan, obs: NodeObservation, want: ModelTarget | None, now: datetime) -> NodeStatus:
    out, version = plan.outcomes[obs.name], plan.ref.version
    old = next((n for n in plan.old.nodes if n.name == obs.name), None)
    problem = out.problem or pod_problem_of(obs, old)
    state: Literal["Pending", "Validating", "Serving", "Failed", "Waiting"] = "Waiting"
    if out.failed:
        state, reason = "Failed", out.reason
    elif want is not None and want.ref == plan.ref:
        if out.serving:
            state, reason = "Serving", "validated from this node's model cache" if out.from_cache else ""
        elif not obs.pod_exists:
            state, reason = "Pending", "serving pod to be created"
        else:
            state, reason = "Validating", f"validating {version}" + ("" if obs.ready else " (pod not ready)")
    elif plan.stopped:
        reason = f"rollout of {version} stopped"
    elif plan.hold is not None:
        reason = plan.hold.message
    elif want is None:
        reason = "waiting for the canary nodes to pass"
    else:
        reason = f"serves {want.version} until the canary nodes pass"
    if problem and state != "Failed":
        reason = f"{reason}; {POD_PROBLEM}{problem}" if reason else f"{POD_PROBLEM}{problem}"
    entry = NodeStatus(
        name=obs.name,
        state=state,
        serving=obs.serving,
        target=want.ref if want else None,
        reason=reason,
        accuracy=out.accuracy,
        p99_latency_ms=out.p99_ms,
        gate=out.gate,
    )
    unchanged = old is not None and old.model_copy(update={"updated_at": None}) == entry
    return entry.model_copy(update={"updated_at": old.updated_at if old is not None and unchanged else now})


def _put_back(plan: _Plan, nodes: Sequence[NodeObservation], targets: dict[str, ModelTarget]) -> list[str]:
    """Nodes that had been given the target, did not fail it, and now go back to the active version."""
    if plan.active is None or plan.active.ref == plan.ref:
        return []
    had = {
        o.name
        for o in nodes
        if not plan.outcomes[o.name].failed  # a failed node never stopped serving the active version
        and (
            (o.assigned is not None and o.assigned.ref == plan.ref)
            or plan.outcomes[o.name].serving
            or (o.name in plan.before and plan.before[o.name].target == plan.ref)
        )
    }
    return sorted(n for n in had if n in targets and targets[n].ref != plan.ref)


def _one_outdated_pod(
    nodes: Sequence[NodeObservation],
    targets: Mapping[str, ModelTarget],
    deleting: Sequence[str],
    *,
    hold: bool,
) -> list[str]:
    """A pod built from an older pod spec, to replace: one node at a time, while the rest serve.

    Only when every other node that should serve has a Ready pod and nothing else
    goes: so a broken pod spec (a wrong broker) stops at the first node it reaches,
    and that node's pod, unready, is replaced again once the spec is mended. The
    pod is deleted here and created from the current spec on the next step (its
    node cache lets it start on the last good version): a short gap on that node,
    as its pod name and MQTT session are its own (and a Coral node's one TPU lets
    no second pod start beside the first anyway). Never while the rollout holds
    (paused, outside its update window), while a node's target changes, while a
    pod is still terminating, or on a node that could not start the new pod.
    """
    serving = [o for o in nodes if o.name in targets]
    busy = any(o.pod_terminating or targets[o.name] != o.assigned for o in serving)
    if deleting or hold or busy:
        return []
    for node in serving:
        others_serve = all(o.pod_exists and o.ready for o in serving if o is not node)
        if node.pod_outdated and node.eligible and others_serve:
            return [node.name]
    return []


def decide(  # noqa: PLR0917 - identity, then content, as every builder
    name: str,
    spec: VibrationModelSpec,
    generation: int,
    status: VibrationModelStatus | None,
    observations: Sequence[NodeObservation],
    now: datetime,
) -> Decision:
    """The next step of the rollout of VibrationModel `name`, from its last status and the cluster."""
    old = status or VibrationModelStatus()
    # The champion of a new version is the one the hall serves: each node holds the candidate
    # to it on its own test data (the promotion gate, vibration_core.gate).
    ref = VersionRef(version=spec.version, sha256=spec.artifact.sha256)
    goal = ModelTarget.from_spec(name, spec, champion=old.active if old.active != ref else None)
    fresh = old.target != ref
    before = {} if fresh else {n.name: n for n in old.nodes}
    nodes = sorted((o for o in observations if o.selected), key=lambda o: o.name)
    outcomes = {o.name: _assess(o, ref, before.get(o.name)) for o in nodes}
    was_stopped = not fresh and is_stopped(old)
    stopped = was_stopped or any(out.failed for out in outcomes.values())
    canaries = [o.name for o in nodes[: spec.rollout.canary_nodes]]
    recorded_past = any(n.target == ref and n.name not in canaries for n in before.values())
    canaries_passed = bool(canaries) and all(outcomes[c].serving for c in canaries)
    hold = None if stopped else schedule.hold(spec.rollout, now)
    if hold is None and not stopped and canaries_passed and not recorded_past and len(nodes) > len(canaries):
        hold = schedule.awaiting_approval(spec.rollout, spec.version, canaries)
    plan = _Plan(
        ref=ref,
        old=old,
        before=before,
        canaries=canaries,
        outcomes=outcomes,
        active=_recover_active(old.active, goal, observations),
        stopped=stopped,
        hold=hold,
        past_canaries=recorded_past or (canaries_passed and hold is None),
    )
    targets = {o.name: want for o in nodes if (want := _want(plan, o, goal)) is not None}
    statuses = [_node_status(plan, o, targets.get(o.name), now) for o in nodes]
    progress = Progress(
        target=ref,
        nodes=statuses,
        canaries=canaries,
        stopped=stopped,
        hold=plan.hold,
        started=fresh,
        canaries_passed=(
            canaries_passed
            and not recorded_past
            and plan.hold is None
            and not stopped
            and len(nodes) > len(canaries)
        ),
        put_back=[] if was_stopped or not stopped else _put_back(plan, nodes, targets),
        failure=plan.failures(),
        pod_problems={
            n.name: n.reason.split(POD_PROBLEM, 1)[1]
            for n in statuses
            if POD_PROBLEM in n.reason and n.state != "Failed"
        },
    )
    new_status, events = record(old, progress, generation, now)
    delete = sorted(
        o.name
        for o in observations
        if (not o.selected and (o.pod_exists or o.assigned is not None))
        or (o.selected and o.pod_exists and o.name not in targets and o.serving is None)
    )
    replaced = _one_outdated_pod(nodes, targets, delete, hold=plan.hold is not None)
    delete += replaced
    events += [
        Event("Normal", "PodReplaced", f"replacing the pod on {node}: it was built from an older pod spec")
        for node in replaced
    ]
    return Decision(
        targets=targets,
        active_target=goal.as_active() if new_status.active == ref else plan.active,
        create_pods=[o.name for o in nodes if o.name in targets and not o.pod_exists],
        delete_pods=delete,
        status=new_status,
        events=events,
        wake_at=plan.hold.until if plan.hold else None,
    )
