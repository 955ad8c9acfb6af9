"""The classification report, laid out like scikit-learn's `classification_report`, and the split.

It is printed from the `Metrics` the model card stores, not recomputed from
the predictions, so what a person reads is what the card says. The macro and
weighted averages of precision and recall are derived from the per-class
figures exactly as scikit-learn derives them (unweighted mean, mean weighted
by support). `format_held_out` says how the held-out windows were chosen and
how many held-out recordings the model gets right by majority vote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vibration_core.modelcard_parts import HeldOut, Metrics

_HEADERS = ("precision", "recall", "f1-score", "support")
_SHOWN_MACHINES = 10


def format_report(metrics: Metrics, labels: Sequence[str], digits: int = 4) -> str:
    """Return the report as text: one row per class, accuracy, macro and weighted averages."""
    rows = [metrics.per_class[label] for label in labels]
    total = sum(row.support for row in rows)
    macro = (
        sum(row.precision for row in rows) / len(rows),
        sum(row.recall for row in rows) / len(rows),
        metrics.macro_f1,
    )
    weighted = (
        sum(row.precision * row.support for row in rows) / total,
        sum(row.recall * row.support for row in rows) / total,
        metrics.weighted_f1,
    )
    width = max(len(name) for name in [*labels, "weighted avg"])
    head_fmt = "{:>{width}s} " + " {:>9}" * len(_HEADERS)
    row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    lines = [head_fmt.format("", *_HEADERS, width=width), "\n\n"]
    lines.extend(
        row_fmt.format(label, row.precision, row.recall, row.f1, row.support, width=width, digits=digits)
        for label, row in zip(labels, rows, strict=True)
    )
    lines.append("\n")
    accuracy_fmt = "{:>{width}s} " + " {:>9}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
    lines.append(accuracy_fmt.format("accuracy", "", "", metrics.accuracy, total, width=width, digits=digits))
    for name, values in (("macro avg", macro), ("weighted avg", weighted)):
        lines.append(row_fmt.format(name, *values, total, width=width, digits=digits))
    return "".join(lines)


def format_held_out(held_out: HeldOut | None, reason: str = "") -> str:
    """Return two lines: the split (and why, when given) and the per-recording accuracy."""
    if held_out is None:
        return "split: not recorded (a card from before it was: windows split one by one)\n"
    why = f" ({reason})" if reason else ""
    machines = ", ".join(held_out.machines[:_SHOWN_MACHINES])
    if len(held_out.machines) > _SHOWN_MACHINES:
        machines += f", ... ({len(held_out.machines)} in all)"
    where = f"; held-out windows from {machines}" if machines else ""
    right = round(held_out.recording_accuracy * held_out.recordings)
    return (
        f"split: {held_out.split}{why}{where}\n"
        f"recording accuracy {held_out.recording_accuracy:.4f}: {right} of {held_out.recordings} held-out "
        "recordings (machine and class) right by majority vote\n"
    )
