"""The drift monitor of one serving model: a rolling window, the node's class baseline, a debounced verdict.

What a serving pod calls: `DriftMonitor.update` with every batch's feature
rows and class probabilities, `DriftMonitor.report` whenever it publishes its
status. The statistics are those of `vibration_core.drift`; this module adds
the state around them:

- **Evaluations by count, not by clock.** `report` evaluates the rolling
  window only once `DriftPolicy.evaluate_every` new windows have arrived
  since the last evaluation (by default a quarter of the window), and returns the
  last evaluation otherwise. A quiet hall is not tested on the same rows over
  and over, and "3 evaluations in a row" means 3 spans of fresh windows.
- **The class baseline is the node's own.** The predicted classes of the
  first `DriftPolicy.baseline_windows` windows this monitor sees (a pod
  makes a new monitor for every model it installs, so a swap starts a new
  baseline) are what later windows' class shares are compared with. Until
  it is complete the class shares are not tested; the report says how far
  it is (``baseline_windows`` of ``baseline_needed``).
- **Flagged needs significance and size.** A feature (or the class shares)
  is flagged in an evaluation when its chi-square p-value is below
  ``p_value / tests`` (Bonferroni over the features and the class shares:
  ``p_value`` is the chance that an evaluation of unchanged data flags
  anything) *and* its PSI is at least the policy's floor.
- **Hysteresis.** The verdict, `DriftReport.drifted`, turns true after
  `raise_after` flagged evaluations in a row and back after `clear_after`
  clean ones, so one noisy evaluation does not flap the operator's
  condition.

Thread-safe: `update` (the batch worker) and `report` (the status publisher)
may run on different threads.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from vibration_core.drift import (
    NOT_COMPARED,
    Comparison,
    class_mix,
    class_share_psi,
    compare_classes,
    compare_feature,
    feature_references,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vibration_core.reference import ReferenceDistribution

CLASSES = "classes"
"""The name the predicted class shares go by among the flagged tests."""


@dataclass(frozen=True)
class DriftPolicy:
    """When a serving model's inputs or predictions count as drifted."""

    window: int = 500
    """Most recent windows each evaluation sees."""
    feature_psi: float = 0.05
    """Smallest PSI of a feature against its training reference that can count as drift."""
    class_psi: float = 0.1
    """Smallest PSI of the predicted class shares against the node's baseline that can count as drift."""
    p_value: float = 0.01
    """Significance of one evaluation, over all its tests together (Bonferroni)."""
    baseline_windows: int = 2000
    """Windows after a model starts serving whose predicted class mix is the class baseline."""
    raise_after: int = 3
    """Flagged evaluations in a row that turn the verdict to drifted."""
    clear_after: int = 3
    """Clean evaluations in a row that turn it back."""
    min_samples: int = 200
    """Windows needed in the rolling window before the first evaluation."""
    evaluate_every: int | None = None
    """New windows between two evaluations; None: a quarter of the window."""

    def __post_init__(self) -> None:
        """Refuse a policy that could never or always fire, naming the field."""
        for name in ("feature_psi", "class_psi"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"drift policy {name} must be > 0, got {value!r}")
        if not 0 < self.p_value < 1:
            raise ValueError(f"drift policy p_value must lie in (0, 1), got {self.p_value!r}")
        for name in ("window", "baseline_windows", "raise_after", "clear_after", "min_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"drift policy {name} must be >= 1, got {getattr(self, name)!r}")
        if self.evaluate_every is not None and self.evaluate_every < 1:
            raise ValueError(f"drift policy evaluate_every must be >= 1, got {self.evaluate_every!r}")

    @property
    def stride(self) -> int:
        """New windows between two evaluations."""
        return self.evaluate_every or max(1, self.window // 4)


class Hysteresis:
    """A verdict that follows a run of evaluations, not a single one."""

    def __init__(self, raise_after: int, clear_after: int) -> None:
        self._raise_after, self._clear_after = raise_after, clear_after
        self.drifted = False
        self.flagged_in_a_row = 0
        self.clean_in_a_row = 0

    def observe(self, *, flagged: bool) -> bool:
        """Count one evaluation; return the verdict after it."""
        if flagged:
            self.flagged_in_a_row, self.clean_in_a_row = self.flagged_in_a_row + 1, 0
            if self.flagged_in_a_row >= self._raise_after:
                self.drifted = True
        else:
            self.flagged_in_a_row, self.clean_in_a_row = 0, self.clean_in_a_row + 1
            if self.clean_in_a_row >= self._clear_after:
                self.drifted = False
        return self.drifted


@dataclass(frozen=True)
class DriftReport:
    """The latest evaluation of a monitor, and the verdict so far."""

    samples: int
    """Windows in the rolling window when it was evaluated."""
    policy: DriftPolicy
    evaluations: int = 0
    baseline_windows: int = 0
    """Windows counted into the class baseline so far."""
    features: dict[str, Comparison] = field(default_factory=dict)
    classes: Comparison = NOT_COMPARED
    """The class shares against the node's baseline; not compared until the baseline is complete."""
    class_psi_vs_training: float = float("nan")
    """PSI of the predicted class shares against the training mix: a figure, never a verdict."""
    flagged: tuple[str, ...] = ()
    """Features (and ``classes``) significant and over their floor in this evaluation."""
    drifted: bool = False
    """The verdict, after hysteresis."""
    flagged_in_a_row: int = 0
    clean_in_a_row: int = 0

    @property
    def tests(self) -> int:
        """Tests per evaluation that share the significance: every feature and the class shares."""
        return len(self.features) + 1

    @property
    def p_per_test(self) -> float:
        """The p-value a single test must stay under (Bonferroni)."""
        return self.policy.p_value / self.tests

    @property
    def feature_psi(self) -> dict[str, float]:
        """PSI of each feature against its training reference."""
        return {name: c.psi for name, c in self.features.items()}

    @property
    def feature_ks(self) -> dict[str, float]:
        """KS distance of each feature to its expected distribution."""
        return {name: c.ks for name, c in self.features.items()}

    @property
    def feature_p(self) -> dict[str, float]:
        """p-value of each feature's chi-square test."""
        return {name: c.p_value for name, c in self.features.items()}

    @property
    def max_psi(self) -> float:
        """Largest per-feature PSI (NaN before the first evaluation)."""
        return max(self.feature_psi.values(), default=float("nan"))

    @property
    def max_ks(self) -> float:
        """Largest per-feature KS distance (NaN before the first evaluation)."""
        return max(self.feature_ks.values(), default=float("nan"))

    def as_flat(self) -> dict[str, float]:
        """The figures by name, as the pod's status carries them; non-finite ones left out.

        ``psi.<feature>``, ``ks.<feature>``, ``p.<feature>``; ``class_psi`` and
        ``class_p`` (against the baseline), ``class_psi_vs_training``;
        ``flagged.<feature or classes>`` (1 when flagged in this evaluation);
        ``samples``, ``evaluations``, ``baseline_windows``, ``baseline_needed``,
        ``tests``, ``flagged_in_a_row``, ``clean_in_a_row``; the policy as
        ``threshold.feature_psi``, ``threshold.class_psi``, ``threshold.p_value``
        (per evaluation), ``threshold.p_per_test``, ``threshold.raise_after``,
        ``threshold.clear_after``. JSON and `ModelStatus` refuse NaN, hence
        the leaving out.
        """
        p = self.policy
        flat = {
            "samples": float(self.samples),
            "evaluations": float(self.evaluations),
            "baseline_windows": float(self.baseline_windows),
            "baseline_needed": float(p.baseline_windows),
            "tests": float(self.tests),
            "flagged_in_a_row": float(self.flagged_in_a_row),
            "clean_in_a_row": float(self.clean_in_a_row),
            "threshold.feature_psi": p.feature_psi,
            "threshold.class_psi": p.class_psi,
            "threshold.p_value": p.p_value,
            "threshold.p_per_test": self.p_per_test,
            "threshold.raise_after": float(p.raise_after),
            "threshold.clear_after": float(p.clear_after),
        }
        for name, c in self.features.items():
            flat.update({f"psi.{name}": c.psi, f"ks.{name}": c.ks, f"p.{name}": c.p_value})
        flat.update(
            {
                "class_psi": self.classes.psi,
                "class_p": self.classes.p_value,
                "class_psi_vs_training": self.class_psi_vs_training,
                "psi_max": self.max_psi,
                "ks_max": self.max_ks,
            }
        )
        flat.update({f"flagged.{name}": 1.0 for name in self.flagged})
        # Six significant digits: enough for any threshold, and p-values keep their exponent.
        return {name: float(f"{value:.6g}") for name, value in flat.items() if math.isfinite(value)}


class DriftMonitor:
    """The last `policy.window` feature rows and class probabilities of one model, and their drift."""

    def __init__(
        self, reference: ReferenceDistribution, labels: Sequence[str], policy: DriftPolicy | None = None
    ) -> None:
        self._policy = policy or DriftPolicy()
        self._features = feature_references(reference, labels)
        self._labels = tuple(labels)
        self._prior = np.array([reference.class_shares.get(label, 0.0) for label in self._labels])
        size = self._policy.window
        self._rows = np.zeros((size, len(self._features)), dtype=np.float64)
        self._probabilities = np.zeros((size, len(self._labels)), dtype=np.float64)
        self._next = self._filled = self._fresh = 0
        self._baseline = np.zeros(len(self._labels), dtype=np.int64)
        self._hysteresis = Hysteresis(self._policy.raise_after, self._policy.clear_after)
        self._last: DriftReport | None = None
        self._lock = threading.Lock()
        self._evaluating = threading.Lock()

    @property
    def policy(self) -> DriftPolicy:
        """The policy `report` applies."""
        return self._policy

    def update(self, features: npt.ArrayLike, probabilities: npt.ArrayLike) -> None:
        """Add a batch: feature rows ``(n, n_features)`` and class probabilities ``(n, n_labels)``.

        The predicted class of a row is its most probable one.
        """
        rows = np.asarray(features, dtype=np.float64)
        probs = np.asarray(probabilities, dtype=np.float64)
        n_features, n_labels = len(self._features), len(self._labels)
        if rows.ndim != 2 or rows.shape[1] != n_features or probs.shape != (rows.shape[0], n_labels):  # noqa: PLR2004
            raise ValueError(
                f"need (n, {n_features}) features and (n, {n_labels}) probabilities, "
                f"got {rows.shape} and {probs.shape}"
            )
        with self._lock:
            missing = self._policy.baseline_windows - int(self._baseline.sum())
            if missing > 0:
                picked = np.argmax(probs[:missing], axis=1)
                self._baseline += np.bincount(picked, minlength=n_labels)
            size = self._rows.shape[0]
            tail_rows, tail_probs = rows[-size:], probs[-size:]
            index = (self._next + np.arange(tail_rows.shape[0])) % size
            self._rows[index] = tail_rows
            self._probabilities[index] = tail_probs
            self._next = (self._next + tail_rows.shape[0]) % size
            self._filled = min(size, self._filled + rows.shape[0])
            self._fresh += rows.shape[0]

    def report(self) -> DriftReport:
        """Evaluate the window if enough new windows arrived since the last time; return the latest report."""
        with self._evaluating:
            with self._lock:
                due = self._filled >= self._policy.min_samples and self._fresh >= self._policy.stride
                if due:
                    rows = self._rows[: self._filled].copy()
                    probs = self._probabilities[: self._filled].copy()
                    self._fresh = 0
                baseline = self._baseline.copy()
                filled = self._filled
            if due:
                self._last = self._evaluate(rows, probs, baseline)
            elif self._last is None:
                return DriftReport(samples=filled, policy=self._policy, baseline_windows=int(baseline.sum()))
            # The baseline fills between evaluations too: the report shows how far it is now.
            return dataclasses.replace(self._last, baseline_windows=int(baseline.sum()))

    def _evaluate(
        self, rows: npt.NDArray[np.float64], probs: npt.NDArray[np.float64], baseline: npt.NDArray[np.int64]
    ) -> DriftReport:
        p = self._policy
        mix = class_mix(probs, self._prior)
        features = {ref.name: compare_feature(rows[:, i], mix, ref) for i, ref in enumerate(self._features)}
        counts = np.bincount(np.argmax(probs, axis=1), minlength=len(self._labels))
        complete = int(baseline.sum()) >= p.baseline_windows
        class_test = compare_classes(counts, baseline) if complete else NOT_COMPARED
        p_per_test = p.p_value / (len(features) + 1)
        flagged = [name for name, c in features.items() if c.p_value < p_per_test and c.psi >= p.feature_psi]
        if class_test.p_value < p_per_test and class_test.psi >= p.class_psi:
            flagged.append(CLASSES)
        drifted = self._hysteresis.observe(flagged=bool(flagged))
        return DriftReport(
            samples=rows.shape[0],
            policy=p,
            evaluations=(self._last.evaluations if self._last else 0) + 1,
            baseline_windows=int(baseline.sum()),
            features=features,
            classes=class_test,
            class_psi_vs_training=class_share_psi(counts, self._prior),
            flagged=tuple(flagged),
            drifted=drifted,
            flagged_in_a_row=self._hysteresis.flagged_in_a_row,
            clean_in_a_row=self._hysteresis.clean_in_a_row,
        )
