"""The drift monitor's figures as Prometheus gauges, beside the pod's other metrics.

One evaluation of `vibration_core.drift_monitor` becomes: per feature its
PSI, KS distance and p-value against the training reference; the class
shares' PSI and p-value against the node's baseline, and their PSI against
the training mix (a figure only); how far the baseline is; which tests this
evaluation flagged; the verdict after hysteresis; and the thresholds, so a
dashboard can draw them. The class-share figures are NaN until the baseline
is complete: not evaluated is not the same as no change.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from prometheus_client import Gauge

from vibration_core.drift_monitor import CLASSES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from prometheus_client import CollectorRegistry

    from vibration_core.drift_monitor import DriftReport


class DriftGauges:
    """The gauges of one pod's drift monitor."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.psi = Gauge(
            "vibration_infer_drift_psi",
            "PSI of a feature against the training data in the window's class mix.",
            ["feature"],
            registry=r,
        )
        self.ks = Gauge(
            "vibration_infer_drift_ks",
            "KS distance of a feature to the training data in the window's class mix.",
            ["feature"],
            registry=r,
        )
        self.p_value = Gauge(
            "vibration_infer_drift_p_value",
            "p-value of a feature's chi-square test against the training data.",
            ["feature"],
            registry=r,
        )
        self.class_psi = Gauge(
            "vibration_infer_drift_class_psi",
            "PSI of the predicted class shares against the node's baseline (NaN until it is complete).",
            registry=r,
        )
        self.class_p_value = Gauge(
            "vibration_infer_drift_class_p_value",
            "p-value of the class shares' chi-square test against the node's baseline.",
            registry=r,
        )
        self.class_psi_vs_training = Gauge(
            "vibration_infer_drift_class_psi_vs_training",
            "PSI of the predicted class shares against the training mix (a figure, not a verdict).",
            registry=r,
        )
        self.samples = Gauge("vibration_infer_drift_samples", "Windows the last evaluation saw.", registry=r)
        self.evaluations = Gauge(
            "vibration_infer_drift_evaluations", "Drift evaluations of the serving model.", registry=r
        )
        self.baseline = Gauge(
            "vibration_infer_drift_baseline_windows", "Windows counted into the class baseline.", registry=r
        )
        self.baseline_needed = Gauge(
            "vibration_infer_drift_baseline_needed", "Windows the class baseline needs.", registry=r
        )
        self.flagged = Gauge(
            "vibration_infer_drift_flagged",
            "1 when the last evaluation found this feature (or the classes) significant and large enough.",
            ["test"],
            registry=r,
        )
        self.threshold = Gauge(
            "vibration_infer_drift_threshold",
            "The drift policy: feature_psi, class_psi, p_value (per evaluation), p_per_test.",
            ["name"],
            registry=r,
        )
        self.drifted = Gauge(
            "vibration_infer_drifted",
            "1 when drift is reported: flagged in enough evaluations in a row.",
            registry=r,
        )

    def set(self, report: DriftReport) -> None:
        """Publish one evaluation (features not evaluated yet keep their last value).

        A report with no evaluation yet (a new model's monitor, after a swap) clears the
        per-feature figures: the last model's drift is not this one's.
        """
        if report.evaluations == 0:
            for gauge in (self.psi, self.ks, self.p_value, self.flagged):
                gauge.clear()
        _set_all(self.psi, report.feature_psi)
        _set_all(self.ks, report.feature_ks)
        _set_all(self.p_value, report.feature_p)
        self.class_psi.set(report.classes.psi)
        self.class_p_value.set(report.classes.p_value)
        if report.evaluations == 0 or not math.isnan(report.class_psi_vs_training):
            self.class_psi_vs_training.set(report.class_psi_vs_training)  # NaN: none for this model yet
        self.samples.set(report.samples)
        self.evaluations.set(report.evaluations)
        self.baseline.set(report.baseline_windows)
        self.baseline_needed.set(report.policy.baseline_windows)
        for test in (*report.features, CLASSES):
            self.flagged.labels(test=test).set(1 if test in report.flagged else 0)
        policy = report.policy
        for name, value in (
            ("feature_psi", policy.feature_psi),
            ("class_psi", policy.class_psi),
            ("p_value", policy.p_value),
            ("p_per_test", report.p_per_test),
        ):
            self.threshold.labels(name=name).set(value)
        self.drifted.set(1 if report.drifted else 0)


def _set_all(gauge: Gauge, values: Mapping[str, float]) -> None:
    for feature, value in values.items():
        if not math.isnan(value):
            gauge.labels(feature=feature).set(value)
