"""A rollout step's status and events: its phase, conditions, history and node transitions.

`record` writes the status and the events of one rollout step from the facts
(`Progress`) that `vibration_operator.rollout` derived, with the bookkeeping
of `vibration_operator.conditions`. It compares with the previous status, so
a step applied twice adds no history and emits no event the second time.
Pure: no API server, no clock (the caller hands in ``now``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from vibration_core.status import (
    HistoryEntry,
    NodeStatus,
    ValidationSummary,
    VersionRef,
    VibrationModelStatus,
)
from vibration_operator.conditions import (
    POD_PROBLEM,
    ConditionStatus,
    ConditionType,
    Event,
    append_history,
    ensure_conditions,
    get_condition,
    listing,
    set_condition,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from vibration_operator.schedule import Hold

HistoryAction = Literal["Promoted", "RolledBack", "ValidationFailed"]


@dataclass(frozen=True)
class Progress:
    """The facts of one rollout step that the status and the events are written from."""

    target: VersionRef
    nodes: list[NodeStatus]
    """The new per-node entries, sorted by name."""
    canaries: list[str]
    stopped: bool
    hold: Hold | None
    started: bool = False
    """The target is new: its waves start with this step."""
    canaries_passed: bool = False
    """The canaries serve the target and the other nodes get it with this step."""
    put_back: list[str] = field(default_factory=list)
    """Nodes moved back to the active version by this step."""
    failure: str = ""
    """"validation failed on node X: why", one per failed node."""
    pod_problems: dict[str, str] = field(default_factory=dict)
    """Why a node's pod does not run or serve, by node (a missing Secret, a broker the pod cannot
    reach, a test-data path missing on the node)."""
    down: list[str] = field(default_factory=list)
    """Nodes that keep their pod from the target: not Ready (powered off) or unschedulable."""
    unavailable: int = 0
    """Nodes that match spec.nodeSelector but are not Ready and schedulable, and hold no pod."""
    bad_window: str = ""
    """Why spec.rollout.updateWindow can never open: it holds every change until the spec is mended."""


def _short(ref: VersionRef) -> str:
    return f"{ref.version} ({ref.sha256[:12]})" if ref.sha256 else ref.version


def _history(
    old: VibrationModelStatus, p: Progress, before: dict[str, NodeStatus], now: datetime
) -> tuple[list[HistoryEntry], list[Event]]:
    """History entries and events of failures, rollbacks and promotions first seen in this step."""
    ref = p.target
    entries: list[HistoryEntry] = []
    events: list[Event] = []

    def add(action: HistoryAction, reason: str, node: str | None, event: Event) -> None:
        entry = HistoryEntry(
            action=action, version=ref.version, sha256=ref.sha256, node=node, reason=reason, at=now
        )
        entries.append(entry)
        events.append(event)

    for node in p.nodes:
        if node.state == "Failed" and (node.name not in before or before[node.name].state != "Failed"):
            message = f"validation of {_short(ref)} failed on node {node.name}: {node.reason}"
            add("ValidationFailed", node.reason, node.name, Event("Warning", "ValidationFailed", message))
    if p.put_back and old.active is not None:
        why = f"{', '.join(p.put_back)} back to {old.active.version}"
        add("RolledBack", why, None, Event("Warning", "RolledBack", f"rolled back {_short(ref)}: {why}"))
    serving = [n for n in p.nodes if n.state == "Serving"]
    if p.nodes and len(serving) == len(p.nodes) and not p.stopped and old.active != ref:
        why = f"serves on every selected node ({len(p.nodes)})"
        add("Promoted", why, None, Event("Normal", "Promoted", f"{_short(ref)} promoted: {why}"))
    return entries, events


def _node_events(p: Progress, before: dict[str, NodeStatus]) -> list[Event]:
    events = []
    for node in p.nodes:
        was = before.get(node.name)
        if node.state in {"Validating", "Serving"} and (was is None or was.state != node.state):
            verb = "validates" if node.state == "Validating" else "serves"
            events.append(Event("Normal", f"Node{node.state}", f"node {node.name} {verb} {p.target.version}"))
    return events


Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Waiting", "Paused"]
Verdict = tuple[ConditionStatus, str, str]


def _verdict(
    old: VibrationModelStatus, p: Progress, serving: int
) -> tuple[Phase, dict[ConditionType, Verdict]]:
    """The phase and the Ready, Validated, Progressing and Degraded conditions of a step."""
    total, version = len(p.nodes), p.target.version
    if total == 0:
        reason, says, off = "NoNodes", "no node matches spec.nodeSelector", False
        if p.unavailable:  # a power cut, say: the hall is there, its gateways are not
            says = (
                f"{p.unavailable} nodes match spec.nodeSelector but none is Ready and schedulable"
                if p.unavailable > 1
                else "1 node matches spec.nodeSelector but it is not Ready and schedulable"
            )
            reason, off = "NoReadyNodes", True
        return "Pending", {
            "Ready": ("False", reason, says),
            "Validated": ("Unknown", reason, says),
            "Progressing": ("False", reason, says),
            "Degraded": ("True" if off else "False", reason, says),
        }
    share = f"{serving}/{total} nodes serve {version}"
    if p.stopped:
        failed = p.failure or "validation failed"
        return "Degraded", {
            "Ready": ("False", "ValidationFailed", share),
            "Validated": ("False", "ValidationFailed", failed),
            "Progressing": ("False", "ValidationFailed", f"rollout of {version} stopped: {failed}"),
            "Degraded": ("True", "ValidationFailed", failed),
        }
    passed: Verdict = ("True", "ValidationPassed", f"{version} passed on every node")
    if serving == total:
        return "Ready", {
            "Ready": ("True", "AllNodesServing", share),
            "Validated": passed,
            "Progressing": ("False", "RolloutComplete", share),
            "Degraded": ("False", "AsExpected", ""),
        }
    # A node that is off is no failed deployment, but that machine goes unwatched until it is back.
    down = listing([f"node {node} is not Ready, unschedulable or tainted" for node in p.down])
    degraded: Verdict = ("True", "NodeNotReady", down) if p.down else ("False", "AsExpected", "")
    # A promoted version stays validated while a pod restarts or a new node catches up.
    pending = passed if old.active == p.target else ("Unknown", "ValidationPending", f"{version}: {share}")
    if p.hold is None and serving + len(p.down) == total:  # nothing moves until they are back
        return "Degraded", {
            "Ready": ("False", "NodeNotReady", share),
            "Validated": pending,
            "Progressing": ("False", "NodeNotReady", f"{share}; the rest wait for their nodes: {down}"),
            "Degraded": degraded,
        }
    if p.hold is not None:
        return "Paused" if p.hold.reason == "Paused" else "Waiting", {
            "Ready": ("False", p.hold.reason, share),
            "Validated": pending,
            "Progressing": ("False", p.hold.reason, p.hold.message),
            "Degraded": degraded,
        }
    wave = any(n.target == p.target and n.name not in p.canaries for n in p.nodes)
    return "Progressing", {
        "Ready": ("False", "RolloutInProgress", share),
        "Validated": pending,
        "Progressing": ("True", "RollingOut" if wave else "CanaryRollout", share),
        "Degraded": degraded,
    }


def _pods_not_serving(
    phase: Phase, cases: dict[ConditionType, Verdict], problems: str
) -> tuple[Phase, dict[ConditionType, Verdict]]:
    """Degraded with the pods' own reasons; a version "served" by a pod that cannot work is not Ready."""
    cases = {**cases, "Degraded": ("True", "PodNotServing", problems)}
    if phase == "Ready":
        phase, cases["Ready"] = "Degraded", ("False", "PodNotServing", problems)
    return phase, cases


def _pod_problem_events(p: Progress, before: Sequence[NodeStatus]) -> list[Event]:
    """A Warning for each node whose pod starts having a problem, a Normal event when it is mended.

    By node, not by wording: a kubelet rewords its complaint at each back-off, which is no news.
    """
    had = {n.name for n in before if POD_PROBLEM in n.reason and n.state != "Failed"}
    now = {n.name: n for n in p.nodes}
    events = [
        Event("Warning", "PodNotServing", f"node {node}: {problem}")
        for node, problem in sorted(p.pod_problems.items())
        if node not in had
    ]
    events += [
        Event("Normal", "PodServing", f"node {node}: its serving pod runs again")
        for node in sorted(had - set(p.pod_problems))
        if node in now and now[node].state != "Failed"
    ]
    return events


def record(
    old: VibrationModelStatus, p: Progress, generation: int, now: datetime
) -> tuple[VibrationModelStatus, list[Event]]:
    """The status after one rollout step, and the events of its transitions."""
    ref, version, total = p.target, p.target.version, len(p.nodes)
    before = {} if p.started else {n.name: n for n in old.nodes}
    serving = sum(n.state == "Serving" for n in p.nodes)
    all_serving = total > 0 and serving == total and not p.stopped
    added, events = _history(old, p, before, now)
    active = ref if all_serving else old.active
    if p.started:
        wave = ", ".join(p.canaries) or "none yet"
        was = old.active.version if old.active else "none"
        message = f"target {_short(ref)}; canary nodes: {wave}; active: {was}"
        events.insert(0, Event("Normal", "TargetChanged", message))
    if p.canaries_passed:
        events.append(
            Event(
                "Normal", "CanariesPassed", f"{version} passed on {', '.join(p.canaries)}; rolling out to all"
            )
        )
    events += _node_events(p, before)
    held = p.hold.reason if p.hold else None
    progressing = get_condition(old.conditions, "Progressing")
    news = progressing is None or progressing.reason != held
    if p.hold is not None and held != "InvalidUpdateWindow" and not all_serving and news:  # that one: below
        events.append(Event("Normal", p.hold.reason, p.hold.message))
    degraded = get_condition(old.conditions, "Degraded")
    if p.bad_window and not p.stopped and (degraded is None or degraded.reason != "InvalidUpdateWindow"):
        events.append(Event("Warning", "InvalidUpdateWindow", p.bad_window))

    phase, cases = _verdict(old, p, serving)
    if p.pod_problems and not p.stopped:
        said = listing([f"node {node}: {problem}" for node, problem in sorted(p.pod_problems.items())])
        phase, cases = _pods_not_serving(phase, cases, said)
    if p.bad_window and not p.stopped:  # it holds every change, the one that would mend a pod too
        phase, cases["Degraded"] = "Degraded", ("True", "InvalidUpdateWindow", p.bad_window)
    events += _pod_problem_events(p, old.nodes)
    conditions = ensure_conditions(old.conditions, generation, now)
    for type_, (state, reason, message) in cases.items():
        conditions = set_condition(conditions, type_, state, reason, message, generation=generation, now=now)
    accuracies = [n.accuracy for n in p.nodes if n.accuracy is not None]
    status = old.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "target": ref,
            "active": active,
            "ready_nodes": f"{serving}/{total}",
            "canaries": p.canaries,
            "nodes": p.nodes,
            "validation": ValidationSummary(
                accuracy=min(accuracies) if accuracies else None,
                nodes_passed=serving,
                nodes_failed=sum(n.state == "Failed" for n in p.nodes),
            ),
            "history": append_history(old.history, *added),
            "conditions": conditions,
        }
    )
    return status, events
