"""Prometheus metrics of the serving loop, in a registry of their own.

Names follow Prometheus conventions (base unit seconds, ``_total`` for
counters); the latency buckets are at the millisecond scale the loop works
at (100 us to 250 ms). Each pod owns one `ServeMetrics` with its own
`CollectorRegistry`, so tests can run several side by side, and the plain
totals that the status message carries are kept next to the counters
instead of being read back from them.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections import Counter as TallyCounter
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from vibration_infer.serve.drift_metrics import DriftGauges

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from vibration_core.drift_monitor import DriftReport
    from vibration_core.validation import CompactReport

LATENCY_BUCKETS_S: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
)  # fmt: skip
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class BatchHistogram:
    """A Prometheus histogram observed a batch at a time: one lock per batch, a bisection per value.

    `prometheus_client.Histogram.observe` walks the buckets in Python under a
    lock, for every window; at thousands of windows a second that was a tenth
    of the worker's time. numpy over the batch cost 4 us even for the one
    window a batch holds at a hall's load; a bisection is a fraction of a
    microsecond. The exposition is the same: cumulative ``le`` buckets (an
    observation counts in every bucket whose bound it does not exceed),
    ``_count`` and ``_sum``.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = (*(float(b) for b in buckets), math.inf)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Observe every value of a batch."""
        bounds, counts = self._bounds, self._counts
        with self._lock:
            for value in values:
                if value == value:  # noqa: PLR0124 - a NaN is in no bucket and would spoil the sum
                    counts[bisect.bisect_left(bounds, value)] += 1
                    self._sum += float(value)  # a float32 value would make the sum float32 for good

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histogram as it stands (what the registry scrapes)."""
        with self._lock:
            cumulative, total = list(itertools.accumulate(self._counts)), self._sum
        buckets = [
            (floatToGoString(b), float(c))  # type: ignore[no-untyped-call]  # untyped in prometheus_client
            for b, c in zip(self._bounds, cumulative, strict=True)
        ]
        yield HistogramMetricFamily(self._name, self._documentation, buckets=buckets, sum_value=total)

    def describe(self) -> Iterator[HistogramMetricFamily]:
        """The metric's name and kind, without samples."""
        yield HistogramMetricFamily(self._name, self._documentation)


class ServeMetrics:
    """Counters, histograms and gauges of one serving pod."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = BatchHistogram(
            "vibration_infer_latency_seconds",
            "From receipt of a raw window to its prediction ready to publish.",
            LATENCY_BUCKETS_S,
            r,
        )
        self.batch_size = BatchHistogram(
            "vibration_infer_batch_size", "Windows per inference batch.", BATCH_BUCKETS, r
        )
        self.received = Counter("vibration_infer_received", "Raw messages received.", registry=r)
        self.windows = Counter(
            "vibration_infer_windows", "Windows predicted, by predicted class.", ["label"], registry=r
        )
        self.errors = Counter(
            "vibration_infer_errors", "Error messages published, by reason.", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "vibration_infer_duplicates", "Redelivered windows dropped (already answered).", registry=r
        )
        self.alerts = Counter(
            "vibration_infer_alerts",
            "Alerts published, by label and severity.",
            ["label", "severity"],
            registry=r,
        )
        self.swaps = Counter(
            "vibration_infer_swaps",
            "Hot-swap attempts, by outcome (promoted, failed; fetch_failed: the registry, retried).",
            ["outcome"],
            registry=r,
        )
        self.gate_value = Gauge(
            "vibration_infer_gate_value",
            "The last candidate's figures on this node's test data, and the champion's on the same windows.",
            ["version", "role", "figure"],
            registry=r,
        )
        self.gate_threshold = Gauge(
            "vibration_infer_gate_threshold",
            "The bar each figure of the last candidate was held to (kind: floor, regression, ceiling).",
            ["version", "figure", "kind"],
            registry=r,
        )
        self.gate_passed = Gauge(
            "vibration_infer_gate_passed",
            "1 when the last candidate passed the gate, 0 when refused, with its reason code.",
            ["version", "reason_code"],
            registry=r,
        )
        self.model_info = Gauge(
            "vibration_infer_model_info",
            "The model being served (value 1).",
            ["model_id", "version", "sha256", "backend"],
            registry=r,
        )
        self.alert_policy_mismatch = Gauge(
            "vibration_infer_alert_policy_mismatch",
            "1 when the serving model's classes do not fit spec.alerts: every class alerts, or none can.",
            registry=r,
        )
        self.ready = Gauge(
            "vibration_infer_ready", "1 when a validated model serves and MQTT is up.", registry=r
        )
        self.mqtt_connected = Gauge(
            "vibration_infer_mqtt_connected", "1 while connected to the broker.", registry=r
        )
        self.answers_unacknowledged = Gauge(
            "vibration_infer_mqtt_answers_unacknowledged",
            "Answers published whose broker acknowledgement (and so their inputs') is still due: it "
            "grows while the broker falls behind, or sends beyond the pod's Receive Maximum.",
            registry=r,
        )
        self.drift = DriftGauges(r)
        self._windows_by_label: dict[str, Counter] = {}
        self._lock = threading.Lock()
        self._windows_total = 0
        self._errors_total = 0
        self._received_total = 0

    def record_received(self, n: int) -> None:
        """Count `n` raw messages taken from the broker."""
        self.received.inc(n)
        with self._lock:
            self._received_total += n

    def record_batch(self, labels: Sequence[str], latencies_s: Sequence[float]) -> None:
        """Count one batch's predictions and observe their latencies."""
        n = len(labels)
        # A hall's batch is one window: no tally to build for it.
        tally = ((labels[0], 1),) if n == 1 else TallyCounter(labels).items()
        for label, count in tally:
            counter = self._windows_by_label.get(label)
            if counter is None:  # the labelled child, looked up once per label (labels() costs a lock)
                counter = self._windows_by_label[label] = self.windows.labels(label=label)
            counter.inc(count)
        self.latency.observe_many(latencies_s)
        if n:
            self.batch_size.observe_many((n,))
        with self._lock:
            self._windows_total += n

    def record_errors(self, reasons: Iterable[str]) -> None:
        """Count published error messages by reason."""
        tally = TallyCounter(reasons)
        for reason, count in tally.items():
            self.errors.labels(reason=reason).inc(count)
        with self._lock:
            self._errors_total += sum(tally.values())

    def set_model(self, model_id: str, version: str, sha256: str, backend: str) -> None:
        """Point the model-info gauge at the model now serving (only one series at a time)."""
        self.model_info.clear()
        self.model_info.labels(model_id=model_id, version=version, sha256=sha256, backend=backend).set(1)

    def set_gate(self, report: CompactReport) -> None:
        """Expose the gate's figures of the last candidate validated here (one candidate at a time)."""
        for gauge in (self.gate_value, self.gate_threshold, self.gate_passed):
            gauge.clear()
        version = report.version or ""
        code = report.reason_code or ""
        self.gate_passed.labels(version=version, reason_code=code).set(1 if report.outcome == "passed" else 0)
        figures = [("candidate", report.accuracy, report.macro_f1, report.class_recall, report.p99_ms)]
        if report.champion is not None:
            c = report.champion
            figures.append(("champion", c.accuracy, c.macro_f1, c.class_recall, c.p99_ms))
        for role, accuracy, macro_f1, recall, p99 in figures:
            named = {"accuracy": accuracy, "macro_f1": macro_f1, "p99_ms": p99}
            named |= {f"recall[{label}]": value for label, value in recall.items()}
            for figure, value in named.items():
                if value is not None:
                    self.gate_value.labels(version=version, role=role, figure=figure).set(value)
        for check in report.checks:
            self.gate_threshold.labels(version=version, figure=check.figure, kind=check.kind).set(
                check.threshold
            )

    def set_drift(self, report: DriftReport) -> None:
        """Publish the latest drift evaluation."""
        self.drift.set(report)

    def totals(self) -> tuple[int, int, int]:
        """Raw messages received, windows predicted, error messages published, since start."""
        with self._lock:
            return self._received_total, self._windows_total, self._errors_total
