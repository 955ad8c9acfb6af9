"""The promotion gate: may a candidate model replace the one a node serves? Pure, and shown with its numbers.

A node judges a candidate on its own labelled test data, in the runtime it
will serve with (`vibration-infer validate`, the init container and the
in-pod swap alike), by three rules, each producing the figure, the bar and
the outcome, so that a refusal can always say which number missed which
threshold:

1. **The floor**, absolute. Thresholds the VibrationModel sets are used as
   they are. Where it sets none, the default floor applies: macro F1 at
   least halfway from chance to perfect, ``1/k + (1 - 1/k) / 2`` for ``k``
   classes (0.625 for the four classes), and every class's recall at least a
   quarter of the way, ``1/k + (1 - 1/k) / 4`` (0.4375). A model that
   predicts no better than chance, such as one trained on shuffled labels,
   sits near ``1/k`` on both and misses by a wide margin on any test set
   with each class present, while a model worth serving clears them easily
   (the simulated data's models score about 0.95). The floor is derived
   from the class count, not from the candidate's own held-out figures: a
   floor the candidate sets for itself can never refuse a bad candidate.
2. **No regression against the champion.** Where the node serves a version
   (the champion), the candidate is evaluated beside it on the same windows
   and passes only if its macro F1 and each class's recall are at most
   `max_regression` below the champion's. Defaults: 0.05 for macro F1, 0.10
   for a class recall (per-class overrides). Why these: a node's test set
   holds some hundreds of windows per class, where a recall near 0.9 has a
   standard error of about 0.03, and two models scored on the same windows
   move together, so differences of a few points are noise, while a loss
   of 10 or more points on one class (a bearing fault missed one time in
   ten more often) is the kind of trade an average hides and a factory
   must not take silently.
3. **Latency**, where the VibrationModel sets ``maxP99LatencyMs``.

`judge` returns a `Verdict` with a reason code from `REASONS`, the figures
of both models and every check made. Shadow agreement (live windows) and
manual approval are later steps of the same gate, decided by the serving
pod and the operator with the same vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

ReasonCode = Literal[
    "Passed",
    "BelowFloor",
    "Regressed",
    "TooSlow",
    "ShadowDisagreed",
    "AwaitingApproval",
    "CannotFetch",
    "DigestMismatch",
    "CannotLoad",
    "ContractMismatch",
    "BadTestData",
    "Internal",
]
REASONS: Final[dict[str, str]] = {
    "Passed": "every check met: the node may serve the candidate",
    "BelowFloor": "a figure is below its floor (the spec's threshold, or the default floor)",
    "Regressed": "a figure is more than the allowed regression below the champion's on the same windows",
    "TooSlow": "p99 latency per window above spec.validation.maxP99LatencyMs",
    "ShadowDisagreed": "on live windows, the candidate agreed with the champion less than the policy asks",
    "AwaitingApproval": "the canaries passed; approval is manual and this version is not approved yet",
    "CannotFetch": "the artifact or its card could not be downloaded (retried; not the model's fault)",
    "DigestMismatch": "the artifact's sha256 is not the one the VibrationModel names",
    "CannotLoad": "the runtime refused the artifact",
    "ContractMismatch": "features, input, labels or signal differ from the card",
    "BadTestData": "the node's test data is missing, unreadable, in another unit, or mislabelled",
    "Internal": "an unexpected error; the reason holds its type",
}
"""The gate's reason codes and what each means: the vocabulary of statuses, events and reports."""

DEFAULT_MAX_REGRESSION_MACRO_F1: Final = 0.05
DEFAULT_MAX_REGRESSION_CLASS_RECALL: Final = 0.10


def default_floor(n_classes: int) -> tuple[float, float]:
    """The default (macro F1, class recall) floor of `n_classes` classes: 1/2, 1/4 of the way from chance."""
    chance = 1.0 / n_classes
    return chance + (1 - chance) / 2, chance + (1 - chance) / 4


class Figures(BaseModel):
    """What one model scored on a node's test windows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str | None = None
    accuracy: float
    macro_f1: float
    class_recall: dict[str, float] = Field(default_factory=dict)
    p99_ms: float | None = None


class Check(BaseModel):
    """One figure held to one bar."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    figure: str = Field(description="accuracy, macro_f1, recall[label], p99_ms, or agreement[...]")
    value: float
    threshold: float
    kind: Literal["floor", "regression", "ceiling"] = Field(
        description="floor: value >= threshold; regression: value >= champion - allowed (the threshold); "
        "ceiling: value <= threshold"
    )
    passed: bool

    def line(self) -> str:
        """``recall[bearing_fault] 0.712 < 0.850 (regression)``."""
        op = (">=" if self.passed else "<") if self.kind != "ceiling" else ("<=" if self.passed else ">")
        return f"{self.figure} {self.value:.3f} {op} {self.threshold:.3f} ({self.kind})"


@dataclass(frozen=True)
class Policy:
    """The bars of one node's gate, as the VibrationModel (and the defaults) set them."""

    min_accuracy: float | None = None
    min_macro_f1: float | None = None
    """None: the default floor."""
    min_class_recall: dict[str, float] = field(default_factory=dict)
    """Labels not named here get the default floor."""
    max_p99_ms: float | None = None
    max_regression_macro_f1: float = DEFAULT_MAX_REGRESSION_MACRO_F1
    max_regression_class_recall: float = DEFAULT_MAX_REGRESSION_CLASS_RECALL
    max_regression_per_class: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """The outcome: a reason code, the figures of both models and every check."""

    reason: ReasonCode
    candidate: Figures
    champion: Figures | None
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return self.reason == "Passed"

    def failures(self) -> list[str]:
        """One line per failed check."""
        return [check.line() for check in self.checks if not check.passed]


@dataclass(frozen=True)
class ShadowResult:
    """What a finished (or stopped) shadow run counted, and the gate's checks on it."""

    windows: int
    agreement: float
    class_agreement: dict[str, float]
    """Per class the champion predicted at least `min_class_windows` times."""
    disagreements: dict[str, int]
    """``"champion_label->candidate_label"``: windows where they differed."""
    checks: tuple[Check, ...]
    cpu_us_per_window: float
    """CPU time of the candidate's calls per window (this thread's time)."""

    @property
    def passed(self) -> bool:
        """Whether every agreement check passed."""
        return all(check.passed for check in self.checks)

    def failures(self) -> list[str]:
        """One line per failed check."""
        return [check.line() for check in self.checks if not check.passed]


def judge(candidate: Figures, champion: Figures | None, policy: Policy, labels: tuple[str, ...]) -> Verdict:
    """Hold `candidate` to the floor, to `champion` (when there is one) and to the latency bar."""
    floor_f1, floor_recall = default_floor(len(labels))
    checks: list[Check] = []
    if policy.min_accuracy is not None:
        checks.append(_at_least("accuracy", candidate.accuracy, policy.min_accuracy, "floor"))
    min_f1 = floor_f1 if policy.min_macro_f1 is None else policy.min_macro_f1
    checks.append(_at_least("macro_f1", candidate.macro_f1, min_f1, "floor"))
    for label, recall in sorted(candidate.class_recall.items()):
        bar = policy.min_class_recall.get(label, floor_recall)
        checks.append(_at_least(f"recall[{label}]", recall, bar, "floor"))
    floor_ok = all(check.passed for check in checks)
    if champion is not None:
        allowed_f1 = policy.max_regression_macro_f1
        checks.append(_at_least("macro_f1", candidate.macro_f1, champion.macro_f1 - allowed_f1, "regression"))
        for label, recall in sorted(candidate.class_recall.items()):
            if label not in champion.class_recall:
                continue  # the champion does not know the class: nothing to regress from
            allowed = policy.max_regression_per_class.get(label, policy.max_regression_class_recall)
            bar = champion.class_recall[label] - allowed
            checks.append(_at_least(f"recall[{label}]", recall, bar, "regression"))
    regression_ok = all(check.passed for check in checks if check.kind == "regression")
    if policy.max_p99_ms is not None and candidate.p99_ms is not None:
        passed = candidate.p99_ms <= policy.max_p99_ms
        checks.append(
            Check(
                figure="p99_ms",
                value=candidate.p99_ms,
                threshold=policy.max_p99_ms,
                kind="ceiling",
                passed=passed,
            )
        )
    fast_ok = all(check.passed for check in checks if check.kind == "ceiling")
    reason: ReasonCode = (
        "BelowFloor"
        if not floor_ok
        else "Regressed"
        if not regression_ok
        else "TooSlow"
        if not fast_ok
        else "Passed"
    )
    return Verdict(reason=reason, candidate=candidate, champion=champion, checks=tuple(checks))


def _at_least(figure: str, value: float, threshold: float, kind: Literal["floor", "regression"]) -> Check:
    # Rounded to the report's 4 decimals first: a value shown as equal to its bar passes.
    passed = round(value, 4) >= round(threshold, 4)
    return Check(figure=figure, value=value, threshold=max(threshold, 0.0), kind=kind, passed=passed)
