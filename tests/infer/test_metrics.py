"""The serving loop's metrics: the batch histogram, and the drift monitor's gauges."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from vibration_core.drift_monitor import DriftMonitor, DriftPolicy
from vibration_core.gate import Check, Figures
from vibration_core.reference import build_reference
from vibration_core.validation import CompactReport
from vibration_infer.serve.metrics import LATENCY_BUCKETS_S, BatchHistogram, ServeMetrics


def test_a_batch_histogram_scrapes_the_same_as_prometheus_clients_histogram() -> None:
    rng = np.random.default_rng(3)
    # Values on every bucket bound too: "le" counts an observation equal to the bound.
    batches = [list(rng.exponential(0.004, size=n)) for n in (1, 64, 17, 0, 5)] + [list(LATENCY_BUCKETS_S)]
    theirs_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    theirs = Histogram("latency_seconds", "Latency.", buckets=LATENCY_BUCKETS_S, registry=theirs_registry)
    ours = BatchHistogram("latency_seconds", "Latency.", LATENCY_BUCKETS_S, ours_registry)
    for batch in batches:
        for value in batch:
            theirs.observe(value)
        ours.observe_many(batch)
    expected = [
        line
        for line in generate_latest(theirs_registry).decode().splitlines()
        if "latency_seconds_created" not in line  # a timestamp, not an observation
    ]
    got = generate_latest(ours_registry).decode().splitlines()
    assert sorted(got) == sorted(expected)
    assert "latency_seconds_count 99.0" in got
    ours.observe_many([float("nan")])  # in no bucket, and not in the sum
    assert generate_latest(ours_registry).decode().splitlines() == got


def test_a_batch_histogram_describes_itself_and_sums_in_float64() -> None:
    # A registry without auto-describe learns a collector's names from describe(): without
    # it a duplicate name would be accepted and a scrape filtered by name would be empty.
    registry = CollectorRegistry()
    ours = BatchHistogram("latency_seconds", "Latency.", LATENCY_BUCKETS_S, registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        BatchHistogram("latency_seconds", "Again.", LATENCY_BUCKETS_S, registry)
    ours.observe_many([np.float32(0.1), *[0.001] * 1000])  # type: ignore[list-item]  # a numpy scalar, as a caller may pass
    text = generate_latest(registry.restricted_registry(["latency_seconds_sum"])).decode()
    assert "latency_seconds_sum 1.100000001490106" in text  # float32 sums would give 1.0999...


def test_predictions_are_counted_by_label_and_batch_sizes_observed_across_batches() -> None:
    metrics = ServeMetrics()
    for labels in (["normal"], ["imbalance", "normal", "normal"], [], ["normal"]):
        metrics.record_batch(labels, [0.001] * len(labels))
    scrape = generate_latest(metrics.registry).decode().splitlines()
    assert 'vibration_infer_windows_total{label="normal"} 4.0' in scrape
    assert 'vibration_infer_windows_total{label="imbalance"} 1.0' in scrape
    # Batches of 1, 3 and 1 (the empty one is no batch): cumulative buckets, count and sum.
    assert 'vibration_infer_batch_size_bucket{le="1.0"} 2.0' in scrape
    assert 'vibration_infer_batch_size_bucket{le="2.0"} 2.0' in scrape
    assert 'vibration_infer_batch_size_bucket{le="4.0"} 3.0' in scrape
    assert "vibration_infer_batch_size_count 3.0" in scrape
    assert "vibration_infer_batch_size_sum 5.0" in scrape
    assert metrics.totals() == (0, 5, 0)


def test_the_gate_figures_of_the_last_candidate_are_exposed() -> None:
    metrics = ServeMetrics()
    report = CompactReport(
        outcome="failed",
        code=14,
        version="v2",
        accuracy=0.9,
        macro_f1=0.88,
        class_recall={"normal": 0.95, "bearing_fault": 0.7},
        reason_code="Regressed",
        champion=Figures(version="v1", accuracy=0.93, macro_f1=0.92, class_recall={"bearing_fault": 0.9}),
        checks=[
            Check(figure="recall[bearing_fault]", value=0.7, threshold=0.8, kind="regression", passed=False)
        ],
    )
    metrics.set_gate(report)
    text = generate_latest(metrics.registry).decode()
    assert 'vibration_infer_gate_passed{reason_code="Regressed",version="v2"} 0.0' in text
    assert (
        'vibration_infer_gate_value{figure="recall[bearing_fault]",role="candidate",version="v2"} 0.7' in text
    )
    assert (
        'vibration_infer_gate_value{figure="recall[bearing_fault]",role="champion",version="v2"} 0.9' in text
    )
    assert (
        'vibration_infer_gate_threshold{figure="recall[bearing_fault]",kind="regression",version="v2"} 0.8'
        in text
    )
    metrics.set_gate(report.model_copy(update={"version": "v3", "champion": None, "checks": []}))
    assert 'version="v2"' not in generate_latest(metrics.registry).decode()  # one candidate at a time


def test_drift_gauges_say_what_was_flagged_and_leave_the_classes_open_until_the_baseline() -> None:
    rng = np.random.default_rng(4)
    labels = np.where(rng.random(4000) < 0.5, "a", "b")
    reference = build_reference(
        rng.random((4000, 2)), labels, feature_names=("x", "y"), label_order=("a", "b")
    )
    policy = DriftPolicy(window=200, min_samples=200, evaluate_every=200, baseline_windows=1000)
    monitor = DriftMonitor(reference, ("a", "b"), policy)
    rows = rng.random((200, 2))
    rows[:, 0] = rows[:, 0] * 0.5 + 0.5  # x moved, y did not
    monitor.update(rows, np.tile([0.8, 0.2], (200, 1)))
    registry = CollectorRegistry()
    metrics = ServeMetrics(registry)
    metrics.set_drift(monitor.report())
    scraped = generate_latest(registry).decode()
    assert 'vibration_infer_drift_flagged{test="x"} 1.0' in scraped
    assert 'vibration_infer_drift_flagged{test="y"} 0.0' in scraped
    assert 'vibration_infer_drift_flagged{test="classes"} 0.0' in scraped
    assert "vibration_infer_drift_class_psi NaN" in scraped  # not evaluated before the baseline
    assert "vibration_infer_drift_baseline_windows 200.0" in scraped
    assert "vibration_infer_drift_baseline_needed 1000.0" in scraped
    assert "vibration_infer_drifted 0.0" in scraped  # one flagged evaluation is not drift yet
    # A swap: the new model's monitor has evaluated nothing; the last model's figures go.
    metrics.set_drift(DriftMonitor(reference, ("a", "b"), policy).report())
    swapped = generate_latest(registry).decode()
    flagged = [line for line in swapped.splitlines() if line.startswith("vibration_infer_drift_flagged{")]
    assert flagged == ['vibration_infer_drift_flagged{test="classes"} 0.0']
    assert 'vibration_infer_drift_psi{feature="x"}' not in swapped
    assert "vibration_infer_drift_evaluations 0.0" in swapped
    assert "vibration_infer_drift_class_psi_vs_training NaN" in swapped  # the last model's class mix
