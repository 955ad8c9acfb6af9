"""What a drift evaluation is held to (`DriftPolicy`) and what it says (`DriftReport`).

The report carries the latest evaluation of a `vibration_core.drift_monitor.DriftMonitor`
and the verdict so far; `DriftReport.as_flat` is the form a serving pod's
status carries, which the operator turns into the VibrationModel's status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vibration_core.drift import NOT_COMPARED, Comparison

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
    """Windows needed in the rolling window before the first evaluation (at most `window`: `first_after`)."""
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
    def first_after(self) -> int:
        """Windows in the ring before the first evaluation: it never holds more than `window`."""
        return min(self.min_samples, self.window)

    @property
    def stride(self) -> int:
        """New windows between two evaluations."""
        return self.evaluate_every or max(1, self.window // 4)


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
