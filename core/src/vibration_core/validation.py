"""The validator's contract with the operator (contract 4): exit codes and report.

The init container runs ``vibration-infer validate``; the operator reads the
outcome from the pod status, the exit code and the compact report written to
the termination message. Both sides import this module, so the codes and the
report shape have one definition. Kubernetes keeps at most 4096 bytes of a
termination message; `CompactReport.encode` stays under that.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vibration_core.gate import Check, Figures, ReasonCode

TERMINATION_MESSAGE_LIMIT = 4096


class ExitCode(IntEnum):
    """Exit codes of ``vibration-infer validate``, one per failure class."""

    PASSED = 0
    """The model passed every check; the node may serve it."""
    USAGE = 2
    """Bad flags or settings: nothing was tried."""
    CANNOT_FETCH = 10
    """The artifact or its card could not be downloaded (nor found in the cache)."""
    DIGEST_MISMATCH = 11
    """The artifact's sha256 differs from the one the VibrationModel or the card names."""
    CANNOT_LOAD = 12
    """The runtime refused the artifact (corrupt file, unsupported operator, no delegate)."""
    CONTRACT_MISMATCH = 13
    """Labels, features, input name or shape, or signal differ from the card."""
    BELOW_THRESHOLD = 14
    """The model ran, but accuracy, macro F1 or a class recall is below its threshold."""
    BAD_TEST_DATA = 15
    """The node-local test data is missing, unreadable or does not fit the model."""
    INTERNAL = 70
    """An unexpected error; the report holds its type and message."""


Outcome = Literal["passed", "failed"]

REASON_OF_EXIT: dict[int, ReasonCode] = {
    ExitCode.PASSED: "Passed",
    ExitCode.USAGE: "Internal",
    ExitCode.CANNOT_FETCH: "CannotFetch",
    ExitCode.DIGEST_MISMATCH: "DigestMismatch",
    ExitCode.CANNOT_LOAD: "CannotLoad",
    ExitCode.CONTRACT_MISMATCH: "ContractMismatch",
    ExitCode.BELOW_THRESHOLD: "BelowFloor",
    ExitCode.BAD_TEST_DATA: "BadTestData",
    ExitCode.INTERNAL: "Internal",
}
"""The gate's reason code of each exit code; 14 is refined by the verdict (BelowFloor, Regressed, TooSlow)."""
MAX_CHECKS = 24
"""Checks kept in a compact report (the floor, the comparison and latency of up to ten classes)."""


def _passed_checks(report: CompactReport, _excess: int) -> dict[str, object]:
    return {"checks": [c for c in report.checks if not c.passed]}


def _disagreements(_report: CompactReport, _excess: int) -> dict[str, object]:
    return {"disagreements": {}}


def _champion_recall(report: CompactReport, _excess: int) -> dict[str, object]:
    champion = report.champion
    return {"champion": champion.model_copy(update={"class_recall": {}}) if champion else None}


def _reason_tail(report: CompactReport, excess: int) -> dict[str, object]:
    return {"reason": report.reason[: max(0, len(report.reason) - (excess + 3))] + "..."}


def _every_check(_report: CompactReport, _excess: int) -> dict[str, object]:
    return {"checks": []}


def _class_recall(_report: CompactReport, _excess: int) -> dict[str, object]:
    return {"class_recall": {}}


_CUTS = (_passed_checks, _disagreements, _champion_recall, _reason_tail, _every_check, _class_recall)
"""What `CompactReport.encode` gives way, in order: each the fields it changes, given the report and
how many bytes it is over."""


class CompactReport(BaseModel):
    """The short report written to the termination message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outcome: Outcome
    code: int = Field(description="The process exit code, an ExitCode value.")
    reason: str = Field(default="", max_length=600, description="One line: why it failed, or empty.")
    model_id: str | None = None
    version: str | None = None
    sha256: str | None = None
    node: str | None = None
    samples: int | None = Field(default=None, description="Test windows evaluated.")
    accuracy: float | None = None
    macro_f1: float | None = None
    class_recall: dict[str, float] = Field(default_factory=dict)
    p50_ms: float | None = Field(default=None, description="Median latency per batch row, ms.")
    p99_ms: float | None = None
    source: Literal["cache", "registry"] | None = Field(
        default=None,
        description="Where the model came from: this node's cache (no registry needed) or the registry.",
    )
    reason_code: ReasonCode | None = Field(
        default=None, description="The gate's reason code (vibration_core.gate.REASONS)."
    )
    champion: Figures | None = Field(
        default=None, description="What the version the node serves scored on the same windows."
    )
    checks: list[Check] = Field(
        default_factory=list, max_length=MAX_CHECKS, description="Every figure held to its bar."
    )
    shadow_windows: int | None = Field(default=None, description="Live windows the candidate shadowed.")
    agreement: float | None = Field(default=None, description="Its agreement with the champion on them.")
    disagreements: dict[str, int] = Field(
        default_factory=dict, description='Windows by "champion label->candidate label" where they differed.'
    )

    def encode(self) -> bytes:
        """JSON bytes under the termination-message limit, always whole JSON.

        What gives way first: the checks that passed, what a model of many classes adds (the
        shadow's disagreements, the champion's recall per class), the reason's tail, every
        check (the failed ones are also in the reason), the candidate's recall per class. A
        report cut anywhere would not parse, and the operator would lose the reason with it.
        """
        report = self
        data = report.model_dump_json(exclude_none=True).encode()
        for cut in _CUTS:
            if len(data) <= TERMINATION_MESSAGE_LIMIT:
                break
            report = report.model_copy(update=cut(report, len(data) - TERMINATION_MESSAGE_LIMIT))
            data = report.model_dump_json(exclude_none=True).encode()
        return data

    @classmethod
    def decode(cls, text: str | bytes) -> CompactReport:
        """Parse a termination message; raises pydantic's ValidationError when it is not one."""
        return cls.model_validate_json(text)
