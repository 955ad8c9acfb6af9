"""Status bookkeeping: metav1-style conditions, history and events (a rollout step: `rollout_status`).

Pure functions over the status models of `vibration_core.status`; they return
new lists and objects (the models are frozen) so that the rollout state
machine stays a function of its inputs. `vibration_operator.rollout_status`
writes a rollout step's status with them, `vibration_operator.drift_status`
the Drifted condition. ``lastTransitionTime`` follows the Kubernetes
convention: it moves only when a condition's ``status`` changes, so a reason
or message update does not make an old condition look new.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from vibration_core.status import Condition, HistoryEntry, VibrationModelStatus

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

ConditionType = Literal["Ready", "Validated", "Progressing", "Degraded", "Drifted"]
ConditionStatus = Literal["True", "False", "Unknown"]
CONDITION_TYPES: tuple[ConditionType, ...] = get_args(ConditionType)
HISTORY_LIMIT = 10


MESSAGE_MAX = 32768
"""A condition message's longest (metav1.Condition's maxLength)."""
LISTED = 5
"""Nodes a condition message names before it counts the rest (every one is in status.nodes)."""
POD_PROBLEM = "pod: "
"""What precedes a pod's problem in a node's reason (the only ``pod: `` a reason holds)."""


def listing(parts: Sequence[str]) -> str:
    """`parts` joined with '; ', the first `LISTED` of them and a count of the rest.

    A hall of two hundred nodes that all fail, or whose pods all miss a Secret, would
    otherwise write a message longer than a condition may hold, and no status at all.
    """
    shown = "; ".join(parts[:LISTED])
    return f"{shown}; and {len(parts) - LISTED} more (status.nodes)" if len(parts) > LISTED else shown


def get_condition(conditions: Sequence[Condition], type_: ConditionType) -> Condition | None:
    """The condition of this type, if set."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition],
    type_: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """The conditions with one of them set; its transition time moves only if `status` changed.

    The list keeps the order of `CONDITION_TYPES` so that the status reads the
    same after every reconcile (and an unchanged status patches nothing).
    """
    old = get_condition(conditions, type_)
    since = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:MESSAGE_MAX],
        observed_generation=generation,
        last_transition_time=since,
    )
    rest = {c.type: c for c in conditions if c.type != type_}
    rest[type_] = new
    return [rest[t] for t in CONDITION_TYPES if t in rest]


def ensure_conditions(conditions: Sequence[Condition], generation: int, now: datetime) -> list[Condition]:
    """All five conditions present: the missing ones as Unknown, so clients never guess."""
    out = list(conditions)
    for type_ in CONDITION_TYPES:
        if get_condition(out, type_) is None:
            out = set_condition(
                out, type_, "Unknown", "NotObserved", "not observed yet", generation=generation, now=now
            )
    return out


def append_history(history: Sequence[HistoryEntry], *entries: HistoryEntry) -> list[HistoryEntry]:
    """History with `entries` appended, newest last, keeping the last `HISTORY_LIMIT`."""
    return [*history, *entries][-HISTORY_LIMIT:]


def is_stopped(status: VibrationModelStatus) -> bool:
    """Whether the status records a failed validation of its target (the rollout is stopped)."""
    degraded = get_condition(status.conditions, "Degraded")
    return degraded is not None and degraded.status == "True" and degraded.reason == "ValidationFailed"


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record on the VibrationModel."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
