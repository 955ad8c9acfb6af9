"""Alert debounce: one alert per sustained fault, not one per window.

Per machine, a *run* is a sequence of consecutive windows whose label may
alert, each at or above the confidence threshold. When a run reaches
`consecutive` windows, one `Alert` goes out, naming the run's most frequent
label (the latest of those tied) with that label's severity; the windows
after that extend the run silently, except that a critical label reaching
`consecutive` windows in a run that alerted a warning raises one critical
alert (a fault that worsens with no normal window in between). A run may mix
fault labels: a fault the model cannot tell apart (bearing wear with
misalignment) flips between them and is still one sustained fault. Any other
window (a normal one, a confidence below the threshold) ends the run, so a
fault that comes back after a break alerts again. Which labels alert is
policy: every label of the model card except the normal ones by default,
never a list in code.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from vibration_core.messages import Alert

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from vibration_core.messages import Severity
    from vibration_infer.serve.settings import ServeSettings


class Predicted(Protocol):
    """What a run needs of a prediction: a `Prediction`, or serve's `PredictionRow` of one."""

    @property
    def machine(self) -> str: ...  # noqa: D102 - the prediction's fields
    @property
    def timestamp_ns(self) -> int: ...  # noqa: D102
    @property
    def model_id(self) -> str: ...  # noqa: D102
    @property
    def model_version(self) -> str: ...  # noqa: D102
    @property
    def label(self) -> str: ...  # noqa: D102
    @property
    def confidence(self) -> float: ...  # noqa: D102


@dataclass(frozen=True)
class AlertPolicy:
    """When a run of abnormal windows becomes an alert, and how severe it is."""

    confidence: float = 0.8
    """Confidence a window needs to count towards a run."""
    consecutive: int = 3
    """Windows in a row before the alert."""
    normal_labels: frozenset[str] = frozenset({"normal"})
    """Labels that never alert."""
    alert_labels: frozenset[str] | None = None
    """If set, only these labels alert."""
    severity: Mapping[str, Severity] = field(default_factory=dict)
    """Severity per label."""
    default_severity: Severity = "warning"
    """Severity of a label not in `severity`."""

    def __post_init__(self) -> None:
        """Refuse a policy that could never alert or always would."""
        if self.consecutive < 1:
            raise ValueError(f"consecutive must be >= 1, got {self.consecutive}")
        if not 0 <= self.confidence <= 1:
            raise ValueError(f"confidence must lie in [0, 1], got {self.confidence}")

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> AlertPolicy:
        """The policy the serving settings describe."""
        return cls(
            confidence=settings.alert_confidence,
            consecutive=settings.alert_consecutive,
            normal_labels=frozenset(settings.normal_labels),
            alert_labels=None if settings.alert_labels is None else frozenset(settings.alert_labels),
            severity=dict(settings.alert_severity),
            default_severity=settings.alert_default_severity,
        )

    def mismatch(self, labels: Sequence[str]) -> str:
        """What is wrong with this policy for a card of these `labels` ('' if nothing).

        A card names its own classes: where none of them is a normal one, every window of
        a healthy machine would alert; where none may alert, no fault would.
        """
        alerting = [label for label in labels if self.alerts_on(label)]
        if len(alerting) == len(labels):
            return (
                f"every class alerts: none of the normal labels {sorted(self.normal_labels)} is a class "
                f"of the model ({list(labels)}); set spec.alerts.normalLabels"
            )
        if not alerting:
            return (
                f"no class can alert: the model's classes {list(labels)} are all normal or not in "
                "spec.alerts.alertLabels; set spec.alerts.normalLabels or alertLabels"
            )
        return ""

    def alerts_on(self, label: str) -> bool:
        """Whether windows of `label` can raise an alert."""
        if self.alert_labels is not None:
            return label in self.alert_labels
        return label not in self.normal_labels

    def severity_of(self, label: str) -> Severity:
        """The severity of an alert for `label`."""
        return self.severity.get(label, self.default_severity)


MAX_RUNS = 10_000
"""Machines in a run at once, at most: far more than a hall has; beyond, the longest idle run goes."""


@dataclass
class _Run:
    """One machine's run: each label's windows and the position of its latest, and what it alerted."""

    labels: dict[str, tuple[int, int]] = field(default_factory=dict)
    length: int = 0
    alerted: Severity | None = None
    confidence: dict[str, float] = field(default_factory=dict)
    """Each label's confidence in its latest window of the run (at or above the threshold)."""

    def top(self, among: Iterable[str] | None = None) -> str:
        """The label with the most windows (of a tie, the latest), among `among` if given."""
        names = self.labels if among is None else [name for name in self.labels if name in among]
        return max(names, key=self.labels.__getitem__)


class AlertTracker:
    """The current run of every machine; `observe` each prediction in arrival order."""

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy
        # Insertion-ordered: a machine's run moves to the end at each window, so the first is
        # the one that has waited longest; beyond MAX_RUNS it goes (a sensor inventing machine
        # names must not grow the pod without bound: 200 000 names held 52 MB).
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    def observe(self, prediction: Predicted) -> Alert | None:
        """Extend or end the machine's run; return an alert when the run just reached its length.

        One alert per run, naming its most frequent label with that label's severity; and one
        more, critical, when a critical label reaches `consecutive` windows in a run that
        alerted a warning (a fault that worsens with no normal window in between).
        """
        policy = self.policy
        machine = prediction.machine
        counts = policy.alerts_on(prediction.label) and prediction.confidence >= policy.confidence
        with self._lock:
            if not counts:
                self._runs.pop(machine, None)
                return None
            run = self._runs.pop(machine, None) or _Run()
            self._runs[machine] = run
            if len(self._runs) > MAX_RUNS:
                del self._runs[next(iter(self._runs))]
            run.length += 1
            run.labels[prediction.label] = (run.labels.get(prediction.label, (0, 0))[0] + 1, run.length)
            run.confidence[prediction.label] = prediction.confidence
            label: str | None = None
            if run.alerted is None and run.length == policy.consecutive:
                label = run.top()
            elif run.alerted == "warning":
                critical = [
                    name
                    for name, (n, _) in run.labels.items()
                    if n >= policy.consecutive and policy.severity_of(name) == "critical"
                ]
                label = run.top(critical) if critical else None
            if label is None:
                return None
            severity = policy.severity_of(label)
            run.alerted = severity
            length, confidence = run.length, run.confidence[label]
        return Alert(
            machine=machine,
            timestamp_ns=prediction.timestamp_ns,
            model_id=prediction.model_id,
            model_version=prediction.model_version,
            label=label,
            confidence=confidence,
            consecutive=length,
            severity=severity,
        )

    def active(self) -> dict[str, tuple[str, int]]:
        """Machines in a run: its most frequent label and its length (for status and tests)."""
        with self._lock:
            return {machine: (run.top(), run.length) for machine, run in self._runs.items()}
