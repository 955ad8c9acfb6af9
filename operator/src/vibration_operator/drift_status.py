"""``status.drift`` and the ``Drifted`` condition, from the serving pods' drift figures.

Pure. Every serving pod tests its own windows (`vibration_core.drift_monitor`)
and reports a verdict that has already been through hysteresis
(`ModelStatus.drifted`) beside flat figures (`ModelStatus.drift`):
``psi.<feature>``, ``p.<feature>``, ``class_psi``, ``class_p``,
``flagged.<test>``, ``tests``, ``baseline_windows``, ``baseline_needed``
and more. The operator does not second-guess the verdict (it has neither the
window nor the node's baseline); it names the test behind it, node by node,
so the condition says what drifted, by how much, how surely, and against
which thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from vibration_core.status import DriftStatus
from vibration_operator.conditions import ConditionStatus, set_condition

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from datetime import datetime

    from vibration_core.messages import ModelStatus
    from vibration_core.spec import DriftSpec
    from vibration_core.status import VibrationModelStatus

CLASS_SHARES = "classes"
"""The name the predicted class shares go by in `DriftStatus.worst_feature` and the pods' figures."""
_MAX_NODES_NAMED = 5


@dataclass(frozen=True)
class Finding:
    """One test of one node's last evaluation."""

    node: str
    test: str
    """A feature, or `CLASS_SHARES`."""
    psi: float | None
    p_value: float | None
    flagged: bool
    """Significant and over its floor in that evaluation."""
    tests: int
    """Tests that shared the significance (Bonferroni)."""

    def sort_key(self) -> tuple[bool, float, float, str, str]:
        """Flagged first, then the lowest p-value, then the largest PSI; ties by name."""
        p = self.p_value if self.p_value is not None else 1.0
        return (not self.flagged, p, -(self.psi or 0.0), self.test, self.node)

    def describe(self, policy: DriftSpec) -> str:
        """E.g. ``rms PSI 0.412 (>= 0.05), p 3.1e-12 (< 0.00091: pValue 0.01 over 11 tests)``."""
        floor = policy.class_psi if self.test == CLASS_SHARES else policy.feature_psi
        text = "class shares" if self.test == CLASS_SHARES else self.test
        if self.psi is not None:
            text += f" PSI {self.psi:.3f} ({'>=' if self.psi >= floor else '<'} {floor:g})"
        if self.p_value is not None:
            per_test = policy.p_value / self.tests
            sign = "<" if self.p_value < per_test else ">="
            bonferroni = f"pValue {policy.p_value:g} over {self.tests} tests"
            text += f", p {self.p_value:.2g} ({sign} {per_test:.2g}: {bonferroni})"
        return text


def findings(node: str, figures: Mapping[str, float]) -> list[Finding]:
    """Every test a pod's figures describe (pods from before p-values give PSI only)."""
    names = sorted(name.removeprefix("psi.") for name in figures if name.startswith("psi."))
    tests = int(figures.get("tests", len(names) + 1))
    out = [
        Finding(
            node,
            name,
            _finite(figures.get(f"psi.{name}")),
            _finite(figures.get(f"p.{name}")),
            figures.get(f"flagged.{name}") == 1.0,
            tests,
        )
        for name in names
    ]
    if "class_psi" in figures or "class_p" in figures:
        psi, p = _finite(figures.get("class_psi")), _finite(figures.get("class_p"))
        out.append(Finding(node, CLASS_SHARES, psi, p, figures.get(f"flagged.{CLASS_SHARES}") == 1.0, tests))
    return out


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _waiting_for_baseline(reports: Mapping[str, ModelStatus]) -> list[str]:
    out = []
    for node in sorted(reports):
        figures = reports[node].drift
        have, need = figures.get("baseline_windows"), figures.get("baseline_needed")
        if have is not None and need is not None and have < need:
            out.append(f"{node} ({have:.0f}/{need:.0f} windows)")
    return out


def apply_drift(
    status: VibrationModelStatus,
    reports: Mapping[str, ModelStatus],
    policy: DriftSpec,
    now: datetime,
    *,
    unanswered: Collection[str] = (),
) -> VibrationModelStatus:
    """The status with `drift` and the `Drifted` condition set from the serving pods' reports.

    A node counts as drifted when its pod says so: the pod applies the same
    policy (the operator passes it in the pod's environment) and its
    hysteresis. Nodes without a pod are left out of the figures. A node whose
    pod runs but did not answer (`unanswered`) keeps its last verdict: one slow
    answer must not clear a drift the pod still reports, and raise it again
    with a new event at the next check. A check that heard from no pod at all
    changes nothing.
    """
    generation = status.observed_generation or 0
    if not policy.enabled:
        off = "spec.drift.enabled is false"
        conditions = set_condition(
            status.conditions, "Drifted", "False", "DriftCheckDisabled", off, generation=generation, now=now
        )
        return status.model_copy(update={"drift": None, "conditions": conditions})
    if not reports and unanswered and status.drift is not None:
        return status
    were = set(status.drift.nodes) if status.drift is not None else set()
    drifted_nodes = sorted(
        {node for node, report in reports.items() if report.drifted} | (were & set(unanswered))
    )
    per_node = {node: sorted(findings(node, reports[node].drift), key=Finding.sort_key) for node in reports}
    everything = [f for found in per_node.values() for f in found]
    psis = [f.psi for f in everything if f.psi is not None]
    pool = [per_node[node][0] for node in drifted_nodes if per_node.get(node)]
    worst = min(pool or everything, key=Finding.sort_key, default=None)
    figures: tuple[str | None, float | None, float | None] = (
        (worst.test, worst.psi, worst.p_value) if worst else (None, None, None)
    )
    if drifted_nodes and not pool and status.drift is not None:
        # Only silent drifted nodes: the last check's figures, not another node's calm ones.
        figures = (status.drift.worst_feature, status.drift.psi, status.drift.p_value)
    drift = DriftStatus(
        drifted=bool(drifted_nodes),
        worst_feature=figures[0],
        psi=figures[1],
        p_value=figures[2],
        max_psi=max([*psis, *([figures[1]] if figures[1] is not None else [])], default=None),
        nodes=drifted_nodes,
        checked_at=now,
    )
    condition: tuple[ConditionStatus, str, str]
    if not reports and not drifted_nodes:
        condition = ("Unknown", "NoReports", "no serving pod reported drift statistics")
    elif drifted_nodes:
        named = [
            f"{node}: {per_node[node][0].describe(policy)}"
            if per_node.get(node)
            else f"{node}: reported by the pod"
            if node in per_node
            else f"{node}: drifted at the last check (its pod did not answer this one)"
            for node in drifted_nodes[:_MAX_NODES_NAMED]
        ]
        more = len(drifted_nodes) - _MAX_NODES_NAMED
        tail = f"; and {more} more node(s)" if more > 0 else ""
        after = f"; reported after {policy.raise_after} flagged evaluations in a row (raiseAfter)"
        condition = ("True", "DriftDetected", "drift on " + "; ".join(named) + tail + after)
    else:
        closest = f"; closest: {worst.node}: {worst.describe(policy)}" if worst else "; no figures yet"
        waiting = _waiting_for_baseline(reports)
        baseline = f"; class shares not tested yet on {', '.join(waiting)}" if waiting else ""
        condition = ("False", "NoDrift", f"no drift on {len(reports)} node(s){closest}{baseline}")
    state, reason, message = condition
    conditions = set_condition(
        status.conditions, "Drifted", state, reason, message, generation=generation, now=now
    )
    return status.model_copy(update={"drift": drift, "conditions": conditions})


CHECKED_AT_REFRESH = timedelta(minutes=10)
"""How stale `status.drift.checkedAt` may grow while nothing else about drift changes."""


def only_checked_at_moved(old: VibrationModelStatus, new: VibrationModelStatus, now: datetime) -> bool:
    """Whether `new` differs from `old` in its drift check's time alone, and that time is recent.

    Such a check is not written: each write is an etcd revision and a watch event for every
    client of the object. `checkedAt` still moves every `CHECKED_AT_REFRESH`, so a stale one
    shows the operator stopped reading the pods.
    """
    before, after = old.drift, new.drift
    if before is None or after is None or before.checked_at is None:
        return False
    if now - before.checked_at >= CHECKED_AT_REFRESH:
        return False
    return old.conditions == new.conditions and before == after.model_copy(
        update={"checked_at": before.checked_at}
    )
