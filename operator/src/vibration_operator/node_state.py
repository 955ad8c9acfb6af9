"""One node in a rollout: what its pod says about the target, and the node's entry in the status.

Pure functions over a `NodeObservation` (what the readers made of the node's pod, its ConfigMap
and its /status): `assess` tells whether the node serves a version, failed it, or neither yet;
`node_status` turns that into the node's state (Pending, Validating, Serving, Failed, Waiting)
and its reason. Which target each node should have is the hall's decision
(`vibration_operator.rollout`), which hands it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from vibration_core.status import NodeStatus
from vibration_core.validation import ExitCode
from vibration_operator.conditions import POD_PROBLEM
from vibration_operator.gate_view import gate_of

if TYPE_CHECKING:
    from datetime import datetime

    from vibration_core.messages import CandidateState
    from vibration_core.status import NodeGate, VersionRef
    from vibration_core.target import ModelTarget
    from vibration_core.validation import CompactReport

NodeState = Literal["Pending", "Validating", "Serving", "Failed", "Waiting"]


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
    serve_started: bool = False
    """The pod's serve container has run (running now, or restarted since): the kubelet's word."""
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
class Outcome:
    """Where a node stands with one version: serving it, failed it, or neither yet."""

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


def _report(obs: NodeObservation, ref: VersionRef, *, mine: bool) -> tuple[CompactReport | None, bool]:
    """The pod's newest validation report about `ref`, and whether it failed. `mine`: `ref` is the node's."""
    cand, init = obs.candidate, obs.init_report
    about = _matches(init.sha256, init.version, ref) if init is not None else False
    # A candidate names the target it was given (the card's version may differ): the same artifact
    # under a new spec.version is a retry, and the pod's old verdict on its digest does not count.
    if cand is not None and _matches(cand.sha256, cand.version, ref) and cand.version in {None, ref.version}:
        # The pod's own swap is newer than its init container's verdict. A pod that starts on the
        # version its init container just validated reports that candidate without a report of its
        # own: the init container's stands for it.
        return cand.report or (init if about else None), cand.state == "failed"
    if init is not None and (about or (about is None and mine)):
        if (obs.serve_started or obs.serving is not None) and init.outcome == "failed":
            # Its serve container has started: it validates its target itself when it starts
            # (its candidate says so soon), so the init container's refusal is either told
            # again there, or older than the node's target, kept by the kubelet for the pod's
            # whole life (a retry of the same version after a rollback would fail on it at
            # once). The kubelet's word, not only /status: one unanswered request must not
            # bring the old refusal back.
            return None, False
        # A report that names no digest (say, the card could not be fetched) is about what the node was given.
        return init, init.outcome == "failed"
    return None, False


def _failure_reason(report: CompactReport | None) -> str:
    if report is None:
        return "failed in the pod"
    code_name = f"{report.reason_code}: " if report.reason_code else ""
    return f"{code_name}{report.reason or 'validation failed'} (exit {report.code})"


def assess(obs: NodeObservation, ref: VersionRef, old: NodeStatus | None) -> Outcome:
    """Whether the node serves `ref`, failed it, or neither yet. `old` is its entry for this `ref`."""
    mine = (obs.assigned.ref if obs.assigned else (old.target if old else None)) == ref
    report, failed = _report(obs, ref, mine=mine)
    accuracy = report.accuracy if report else (old.accuracy if old else None)
    p99 = report.p99_ms if report else (old.p99_latency_ms if old else None)
    gate = (gate_of(report) if report else None) or (old.gate if old else None)
    if obs.serving is not None and same_version(obs.serving, ref):
        cached = report is not None and report.source == "cache" and report.outcome == "passed"
        return Outcome(serving=True, accuracy=accuracy, p99_ms=p99, from_cache=cached, gate=gate)
    # The exit code that speaks for `ref`: a failed report's, or the init container's if it wrote none.
    code = (report.code if failed else None) if report is not None else (obs.init_exit_code if mine else None)
    if code == ExitCode.CANNOT_FETCH:
        # The registry's fault (down, or refusing the node's keys), not the model's: the pod tries
        # again by itself (serve's swap, the kubelet's init container), so the rollout waits.
        said = report.reason if report is not None else "init container exit 10"
        return Outcome(problem=f"cannot fetch {ref.version}, retrying: {said}", accuracy=accuracy, p99_ms=p99)
    if failed:
        return Outcome(failed=True, reason=_failure_reason(report), accuracy=accuracy, p99_ms=p99, gate=gate)
    if report is None and mine and obs.init_exit_code not in {None, 0}:
        return Outcome(failed=True, reason=f"init container exited with code {obs.init_exit_code}")
    if old is not None and old.state == "Failed":  # sticky: no retry until the spec changes
        return Outcome(failed=True, reason=old.reason, accuracy=accuracy, p99_ms=p99, gate=gate)
    return Outcome(accuracy=accuracy, p99_ms=p99, gate=gate)


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


def _state(
    obs: NodeObservation, out: Outcome, ref: VersionRef, want: ModelTarget | None, waiting: str
) -> tuple[NodeState, str]:
    if out.failed:
        return "Failed", out.reason
    if want is None or want.ref != ref:
        return "Waiting", waiting
    if out.serving:
        return "Serving", "validated from this node's model cache" if out.from_cache else ""
    if not obs.pod_exists:
        return "Pending", "serving pod to be created"
    if not obs.eligible:  # a gateway powered off, say: its pod validates nothing, and waits for it
        return "Waiting", f"node not Ready, unschedulable or tainted; takes up {ref.version} when it is back"
    return "Validating", f"validating {ref.version}" + ("" if obs.ready else " (pod not ready)")


def node_status(  # noqa: PLR0917 - the node, where it stands, and the hall's word for it
    obs: NodeObservation,
    out: Outcome,
    ref: VersionRef,
    want: ModelTarget | None,
    old: NodeStatus | None,
    waiting: str,
    now: datetime,
) -> NodeStatus:
    """The node's status entry for target `ref`, given the target `want` its ConfigMap gets.

    `old` is its last entry; `waiting` says why a node that is not moving to `ref` waits (the
    hall's reason). A pod problem is added to any state but Failed; `updated_at` moves only
    when the entry changes.
    """
    state, reason = _state(obs, out, ref, want, waiting)
    problem = out.problem or pod_problem_of(obs, old)
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
