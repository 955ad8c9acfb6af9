"""The result of one validation and its three reports: full JSON, termination message, exit code.

`Outcome` is what `vibration_infer.validate.run_validation` returns; `emit`
prints the full report on stdout and writes the compact one (under 4 KiB)
where the kubelet puts it in the pod status, for the operator to read.
Reasons are single lines with credential values blanked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO

from vibration_core.gate import REASONS, Check, Figures, ReasonCode, Verdict
from vibration_core.validation import MAX_CHECKS, REASON_OF_EXIT, CompactReport, ExitCode
from vibration_infer.errors import InferenceError

if TYPE_CHECKING:
    from collections.abc import Callable

    from vibration_core.gate import ShadowResult
    from vibration_core.modelcard import ModelCard
    from vibration_infer.evaluate import Evaluation
    from vibration_infer.loader import LoadedModel
    from vibration_infer.settings import ValidateSettings

logger = logging.getLogger(__name__)

DEFAULT_TERMINATION_LOG: Final = Path("/dev/termination-log")
"""Kubernetes' default terminationMessagePath, which the operator's pods use."""
_REASON_MAX = 600  # CompactReport.reason's limit


@dataclass
class Outcome:
    """The result of one validation: what `validate` prints, writes and returns."""

    code: ExitCode
    reason: str = ""
    node: str | None = None
    card: ModelCard | None = None
    sha256: str | None = None
    source: Literal["cache", "registry"] | None = None
    """``cache`` (no download) or ``registry``."""
    model: LoadedModel | None = None
    """The loaded model, set only when it passed."""
    evaluation: Evaluation | None = None
    verdict: Verdict | None = None
    """The gate's verdict, once the candidate (and the champion) ran on the test data."""
    shadow: ShadowResult | None = None
    """What the candidate did beside the champion on live windows (the in-pod swap only)."""
    promote_later: Callable[[], None] | None = None
    """Marks the model last good: set instead of done when the caller deferred it (a shadow run)."""
    unpin: Callable[[], None] | None = None
    """Ends the cache pin that keeps a deferred candidate from eviction; the caller calls it once the
    candidate is promoted (its last good record protects it then) or given up."""
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def compact(self) -> CompactReport:
        """The termination-message report."""
        card, figures = self.card, self.evaluation
        return CompactReport(
            outcome="passed" if self.code is ExitCode.PASSED else "failed",
            code=int(self.code),
            reason=self.reason,
            model_id=card.model_id if card else None,
            version=card.version if card else None,
            sha256=self.sha256,
            node=self.node,
            samples=figures.samples if figures else None,
            accuracy=round(figures.accuracy, 4) if figures else None,
            macro_f1=round(figures.macro_f1, 4) if figures else None,
            class_recall={k: round(v, 4) for k, v in figures.class_recall.items()} if figures else {},
            p50_ms=round(figures.p50_ms, 4) if figures else None,
            p99_ms=round(figures.p99_ms, 4) if figures else None,
            source=self.source,
            reason_code=self.reason_code,
            champion=_rounded(self.verdict.champion) if self.verdict and self.verdict.champion else None,
            checks=[_rounded_check(c) for c in self.checks()[:MAX_CHECKS]],
            shadow_windows=self.shadow.windows if self.shadow else None,
            agreement=round(self.shadow.agreement, 4) if self.shadow else None,
            disagreements=dict(self.shadow.disagreements) if self.shadow else {},
        )

    def checks(self) -> list[Check]:
        """The gate's checks: on the test data, then (after a shadow run) on live windows."""
        on_data = list(self.verdict.checks) if self.verdict else []
        return on_data + (list(self.shadow.checks) if self.shadow else [])

    @property
    def reason_code(self) -> ReasonCode:
        """The gate's reason code: the verdict's for a model that ran, else the exit code's."""
        if self.shadow is not None and not self.shadow.passed:
            return "ShadowDisagreed"
        if self.verdict is not None and self.code in {ExitCode.PASSED, ExitCode.BELOW_THRESHOLD}:
            return self.verdict.reason
        return REASON_OF_EXIT[self.code]

    def report(self) -> dict[str, Any]:
        """The full JSON report."""
        card = self.card
        return {
            "outcome": "passed" if self.code is ExitCode.PASSED else "failed",
            "code": int(self.code),
            "code_name": self.code.name,
            "reason": self.reason,
            "node": self.node,
            "model": None
            if card is None
            else {
                "model_id": card.model_id,
                "version": card.version,
                "format": card.format,
                "sha256": self.sha256,
            },
            "source": self.source,
            "backend": self.model.backend.name if self.model else self.details.get("backend"),
            "evaluation": dataclasses.asdict(self.evaluation) if self.evaluation else None,
            "gate": None
            if self.verdict is None
            else {
                "reason_code": self.reason_code,
                "meaning": REASONS[self.reason_code],
                "champion": self.verdict.champion.model_dump() if self.verdict.champion else None,
                "checks": [check.model_dump() for check in self.verdict.checks],
            },
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            **self.details,
        }


def termination_path(given: Path | None) -> Path | None:
    """Where the compact report goes: the path given, else Kubernetes' file if it is there.

    The kubelet mounts ``/dev/termination-log`` into every container, so the
    file exists exactly where someone reads it; a run on a laptop or in CI
    writes nothing under ``/dev``.
    """
    if given is not None:
        return given
    return DEFAULT_TERMINATION_LOG if DEFAULT_TERMINATION_LOG.is_file() else None


def emit(outcome: Outcome, termination_log: Path | None, *, out: TextIO | None = None) -> None:
    """Print the full report and write the compact one (a failed write is logged, not fatal)."""
    out = out or sys.stdout  # looked up now: a test or an embedding program may have replaced it
    out.write(json.dumps(outcome.report(), indent=2, default=str) + "\n")
    out.flush()
    termination_log = termination_path(termination_log)
    if termination_log is None:
        return
    data = outcome.compact().encode()
    try:
        termination_log.write_bytes(data)
    except OSError as exc:
        logger.warning(
            "termination_log_unwritable",
            extra={"path": termination_log, "reason": exc.strerror or type(exc).__name__},
        )


def _rounded(figures: Figures) -> Figures:
    return figures.model_copy(
        update={
            "accuracy": round(figures.accuracy, 4),
            "macro_f1": round(figures.macro_f1, 4),
            "class_recall": {k: round(v, 4) for k, v in figures.class_recall.items()},
            "p99_ms": None if figures.p99_ms is None else round(figures.p99_ms, 4),
        }
    )


def _rounded_check(check: Check) -> Check:
    return check.model_copy(update={"value": round(check.value, 4), "threshold": round(check.threshold, 4)})


def secrets_of(settings: ValidateSettings) -> tuple[str, ...]:
    """Credential values to blank out of a reason, as far as they can be read."""
    try:
        values = settings.s3_credentials()
    except InferenceError:
        values = (None, None)
    return tuple(v for v in values if v)


def one_line(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A single line of at most 600 characters, with any credential value blanked."""
    for secret in secrets:
        text = text.replace(secret, "***")
    line = " ".join(text.split())
    return line if len(line) <= _REASON_MAX else line[: _REASON_MAX - 3] + "..."
