"""The drift monitor of one serving model: a rolling window, the node's class baseline, a debounced verdict.

What a serving pod calls: `DriftMonitor.update` with every batch's feature
rows and class probabilities, `DriftMonitor.report` whenever it publishes its
status. The statistics are those of `vibration_core.drift`, the policy and
the report those of `vibration_core.drift_report`; this module adds the
state around them:

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
import threading
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from vibration_core.drift import NOT_COMPARED, class_mix, class_share_psi, compare_classes, compare_feature
from vibration_core.drift_reference import feature_references
from vibration_core.drift_report import CLASSES, DriftPolicy, DriftReport

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vibration_core.reference import ReferenceDistribution

# The policy and the report are part of what a monitor's caller (the serving pod) imports from here.
__all__ = ["CLASSES", "DriftMonitor", "DriftPolicy", "DriftReport", "Hysteresis"]


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
        self._baseline_count = 0
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
        # No conversion here: assigning into the float64 window converts, and a batch is
        # often one row at a hall's load, where each numpy call is most of the cost.
        rows, probs = np.asarray(features), np.asarray(probabilities)
        n_features, n_labels = len(self._features), len(self._labels)
        if rows.ndim != 2 or rows.shape[1] != n_features or probs.shape != (rows.shape[0], n_labels):  # noqa: PLR2004
            raise ValueError(
                f"need (n, {n_features}) features and (n, {n_labels}) probabilities, "
                f"got {rows.shape} and {probs.shape}"
            )
        n = rows.shape[0]
        with self._lock:
            missing = self._policy.baseline_windows - self._baseline_count
            if missing > 0:
                picked = np.argmax(probs[:missing], axis=1)
                self._baseline += np.bincount(picked, minlength=n_labels)
                self._baseline_count = int(self._baseline.sum())
            size = self._rows.shape[0]
            if n == 1:  # a hall's batch: one row, no slices to cut
                start = self._next
                self._rows[start] = rows[0]
                self._probabilities[start] = probs[0]
                self._next = (start + 1) % size
                self._filled = min(size, self._filled + 1)
                self._fresh += 1
                return
            # The last `size` rows go into the ring at `_next`, in at most two slices.
            kept = min(n, size)
            start = self._next
            first = min(kept, size - start)
            self._rows[start : start + first] = rows[n - kept : n - kept + first]
            self._probabilities[start : start + first] = probs[n - kept : n - kept + first]
            if first < kept:
                self._rows[: kept - first] = rows[n - kept + first :]
                self._probabilities[: kept - first] = probs[n - kept + first :]
            self._next = (start + kept) % size
            self._filled = min(size, self._filled + n)
            self._fresh += n

    def report(self) -> DriftReport:
        """Evaluate the window if enough new windows arrived since the last time; return the latest report."""
        with self._evaluating:
            with self._lock:
                due = self._filled >= self._policy.first_after and self._fresh >= self._policy.stride
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
