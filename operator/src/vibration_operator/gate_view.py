"""The promotion gate's decision in a validation report, as a node's status shows it (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vibration_core.status import GateFigures, NodeGate

if TYPE_CHECKING:
    from vibration_core.gate import Figures
    from vibration_core.validation import CompactReport


def gate_of(report: CompactReport) -> NodeGate | None:
    """The gate's decision in `report`: reason code, both models' figures, every check; None without one."""
    if report.reason_code is None:
        return None
    candidate = GateFigures(
        version=report.version,
        accuracy=report.accuracy,
        macro_f1=report.macro_f1,
        class_recall=dict(report.class_recall),
        p99_latency_ms=report.p99_ms,
    )
    return NodeGate(
        reason_code=report.reason_code,
        candidate=candidate,
        champion=None if report.champion is None else _figures(report.champion),
        checks=[check.line() for check in report.checks],
        shadow_windows=report.shadow_windows,
        agreement=report.agreement,
    )


def _figures(figures: Figures) -> GateFigures:
    return GateFigures(
        version=figures.version,
        accuracy=figures.accuracy,
        macro_f1=figures.macro_f1,
        class_recall=dict(figures.class_recall),
        p99_latency_ms=figures.p99_ms,
    )
