"""The serving loop's metrics: the batch histogram exposes what prometheus_client's own would."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from vibration_infer.serve.metrics import LATENCY_BUCKETS_S, BatchHistogram


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
