"""The serving loop against a real Mosquitto, real paho clients and tiny models trained here.

Unit tests (batcher, alerts, watcher, settings) run without a broker; the
rest start Debian's mosquitto on a free loopback port (`tests.infer.mosquitto`)
and are marked ``integration``. The pod in this process and the MQTT clients
around it come from `tests.infer.serving`.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from vibration_core.drift_monitor import DriftMonitor
from vibration_core.features import extract_features
from vibration_core.messages import ErrorMessage, ErrorReason, ModelStatus, Prediction
from vibration_core.modelcard import CARD_FILENAME
from vibration_core.raw import (
    RAW_HEADER,
    encode_raw_float32,
    encode_raw_int16,
    encode_raw_json,
    quantize_int16,
)
from vibration_core.target import ModelTarget
from vibration_core.validation import ExitCode
from vibration_infer.cache import ModelCache
from vibration_infer.loader import load_model, predict
from vibration_infer.serve import alerts as alerts_module
from vibration_infer.serve import batcher as batcher_module
from vibration_infer.serve import candidate as candidate_module
from vibration_infer.serve import http as http_module
from vibration_infer.serve import swap as swap_module
from vibration_infer.serve.alerts import AlertPolicy, AlertTracker
from vibration_infer.serve.app import ServeApp
from vibration_infer.serve.batcher import BatchProcessor, Deduper, collect
from vibration_infer.serve.link import Incoming, Outgoing, Receipt
from vibration_infer.serve.metrics import ServeMetrics
from vibration_infer.serve.responder import Active, Responder
from vibration_infer.serve.settings import ServeSettings
from vibration_infer.serve.targets import TargetWatcher, is_serving
from vibration_infer.serve.wire import codec
from vibration_testkit.cards import MODEL_ID, SAMPLE_RATE, WINDOW_LENGTH, TinyModel
from vibration_testkit.net import free_port
from vibration_testkit.serving import (
    LAYOUT,
    PREFIX,
    SLOW,
    Collector,
    Publisher,
    serve_settings,
    serving,
    wait_until,
)
from vibration_testkit.tiny_models import TINY
from vibration_train.card import build_card, write_model
from vibration_train.fit import fit
from vibration_train.onnx_export import to_onnx
from vibration_train.simulator import simulate

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from vibration_core.modelcard import ModelCard
    from vibration_infer.loader import LoadedModel
    from vibration_testkit.mosquitto import Mosquitto
    from vibration_train.data import TrainingTable
    from vibration_train.simulator import SimulatedData

RATE = SAMPLE_RATE
LENGTH = WINDOW_LENGTH


# --- models trained at test time -----------------------------------------------------------


@dataclass(frozen=True)
class ModelFiles:
    artifact: Path
    card_path: Path
    card: ModelCard

    @property
    def uri(self) -> str:
        return self.artifact.as_uri()


@dataclass(frozen=True)
class Models:
    v1: ModelFiles
    v2: ModelFiles
    test_data: Path


@pytest.fixture(scope="module")
def models(
    train_table: TrainingTable,
    onnx_model: TinyModel,
    test_parquet: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Models:
    """v1 is the conftest's tiny model; v2 the same recipe with another seed, so other bytes."""
    root = tmp_path_factory.mktemp("models")
    artifact, card_path = write_model(root / "v1", onnx_model.data, onnx_model.card)
    v1_files = ModelFiles(artifact, card_path, onnx_model.card)
    config = replace(TINY, random_state=43)
    result = fit(train_table, config)
    exported = to_onnx(result.estimator, train_table.features.shape[1])
    card = build_card(
        table=train_table, result=result, config=config, model=exported, model_id=MODEL_ID, version="v2"
    )
    artifact, card_path = write_model(root / "v2", exported.data, card)
    assert card.artifact.sha256 != onnx_model.card.artifact.sha256
    return Models(v1_files, ModelFiles(artifact, card_path, card), test_parquet)


@pytest.fixture(scope="module")
def v1(models: Models) -> LoadedModel:
    return load_model(models.v1.artifact, models.v1.card)


def stream(n: int, seed: int) -> SimulatedData:
    return simulate(n, seed=seed, sample_rate=RATE, window_length=LENGTH, machines=4)


def keys(data: SimulatedData) -> set[tuple[str, int]]:
    return {(str(m), int(t)) for m, t in zip(data.machine, data.timestamp_ns, strict=True)}


# --- the serving pod in this process -------------------------------------------------------


@pytest.fixture(params=["wire", "paho"])
def mqtt_client(request: pytest.FixtureRequest) -> str:
    """Each MQTT client of the serving loop; the must-show tests run against both."""
    return str(request.param)


def settings_for(broker: Mosquitto, models: Models, tmp_path: Path, **overrides: object) -> ServeSettings:
    return serve_settings(
        broker,
        tmp_path,
        artifact=models.v1.artifact,
        card=models.v1.card_path,
        test_data=models.test_data,
        **overrides,
    )


# --- unit: batcher, dedupe, alerts, watcher, settings --------------------------------------


def incoming(topic: str, payload: bytes, mid: int = 1) -> Incoming:
    return Incoming(topic, payload, mid, 1, 1, time.time_ns(), time.perf_counter_ns())


def test_a_batch_is_answered_one_message_each_and_labels_match_an_offline_run(v1: LoadedModel) -> None:
    data = stream(40, seed=3)
    processor = BatchProcessor(LAYOUT, max_payload_bytes=1 << 20, dedupe_keys=100)
    items = [
        incoming(
            LAYOUT.raw(str(data.machine[i])),
            encode_raw_float32(data.windows[i], RATE, int(data.timestamp_ns[i])),
            i,
        )
        for i in range(len(data))
    ]
    broken = incoming(LAYOUT.raw("m"), b"\x00not a window")
    result = processor.process([*items[:20], broken, *items[20:]], v1)
    assert len(result.answers) == 41
    assert [e.reason for e in result.errors] == [ErrorReason.NOT_JSON]
    offline = predict(v1, data.windows, RATE)
    assert [p.label for p in result.predictions] == list(offline.labels)
    assert all(
        p.model_version == "v1" and set(p.probabilities) == set(v1.card.labels) for p in result.predictions
    )
    assert result.features is not None
    assert result.features.shape == (40, 10)
    # each answer is the contract's Prediction, of the very fields serve kept for itself
    answered = [a for a in result.answers if a.prediction is not None]
    assert [Prediction.decode(a.payload) for a in answered] == [
        Prediction(**a.prediction._asdict()) for a in answered if a.prediction is not None
    ]
    # the same windows again are redeliveries: acknowledged, not answered
    again = processor.process(items[:5], v1)
    assert again.answers == []
    assert len(again.duplicates) == 5
    # another window of a timestamp already answered (a sensor clock of one-second ticks) is answered
    first = data.timestamp_ns[0]
    other = processor.process(
        [incoming(items[0].topic, encode_raw_float32(data.windows[1], RATE, int(first)))], v1
    )
    assert (len(other.predictions), other.duplicates) == (1, [])


def test_a_window_whose_features_overflow_does_not_spoil_its_batch(v1: LoadedModel) -> None:
    data = stream(3, seed=4)
    huge = np.full(LENGTH, 3e38, dtype=np.float32)
    huge[::2] = -3e38
    payloads = [
        encode_raw_float32(data.windows[0], RATE, 1),
        encode_raw_float32(huge, RATE, 2),
        encode_raw_float32(data.windows[2], RATE, 3),
    ]
    processor = BatchProcessor(LAYOUT, max_payload_bytes=1 << 20, dedupe_keys=0)
    result = processor.process([incoming(LAYOUT.raw("m1"), p) for p in payloads], v1)
    assert [e.reason for e in result.errors] == [ErrorReason.NON_FINITE]
    assert [p.timestamp_ns for p in result.predictions] == [1, 3]


def test_a_model_that_gives_nan_has_every_window_of_its_batch_answered_with_its_fault(
    v1: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = stream(3, seed=6)
    items = [
        incoming(LAYOUT.raw("m1"), encode_raw_float32(data.windows[i], RATE, i + 1), i) for i in range(3)
    ]
    nan = np.full((3, len(v1.card.labels)), np.nan, dtype=np.float32)
    monkeypatch.setattr(v1.backend, "predict_proba", lambda _: nan)
    processor = BatchProcessor(LAYOUT, max_payload_bytes=1 << 20, dedupe_keys=0)
    result = processor.process(items, v1)
    assert result.predictions == []
    assert [(e.reason, e.field, e.detail) for e in result.errors] == [
        (ErrorReason.INTERNAL, "model", "the model gave a probability that is NaN")
    ] * 3
    assert [a.topic for a in result.answers] == [LAYOUT.errors("m1")] * 3


def test_machine_topics_are_kept_per_machine_and_bounded(
    v1: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batcher_module, "MAX_MACHINES", 3)
    data = stream(8, seed=5)
    processor = BatchProcessor(LAYOUT, max_payload_bytes=1 << 20, dedupe_keys=0)
    machines = ["m1", "m2", "m1", "m3", "m4", "m5", "m1", "m2"]  # more machines than it keeps
    items = [
        incoming(LAYOUT.raw(m), encode_raw_float32(data.windows[i], RATE, i + 1), i)
        for i, m in enumerate(machines)
    ]
    bad = incoming(f"{LAYOUT.prefix}/machines/not a machine/raw", items[0].payload)
    result = processor.process([*items[:5], bad, *items[5:]], v1)
    assert [p.machine for p in result.predictions] == machines
    assert [a.topic for a in result.answers if a.prediction] == [LAYOUT.predictions(m) for m in machines]
    assert [e.reason for e in result.errors] == [ErrorReason.UNKNOWN_TOPIC]
    assert len(processor._machines) <= 3  # the bound is the point


def test_the_deduper_forgets_the_oldest_keys() -> None:
    deduper = Deduper(2)
    deduper.remember([("a", 1, 0), ("a", 2, 0), ("a", 3, 0)])
    assert not deduper.seen(("a", 1, 0))
    assert deduper.seen(("a", 3, 0))
    deduper.remember([("a", 3, 0), ("a", 4, 0)])  # a key it holds keeps its place
    assert (deduper.seen(("a", 3, 0)), deduper.seen(("a", 4, 0)), deduper.seen(("a", 2, 0))) == (
        True,
        True,
        False,
    )
    # hash(t) is t modulo 2**61 - 1: timestamps that far apart are still two keys.
    assert not deduper.seen(("a", 4 + 2**61 - 1, 0))
    assert not deduper.seen(("a", 4, 1)), "another window of the same timestamp"
    off = Deduper(0)
    off.remember([("a", 1, 0)])
    assert not off.seen(("a", 1, 0))


def test_a_full_deduper_takes_a_few_megabytes() -> None:
    # The default capacity fills in under four minutes at a hall's load, and then stays full.
    def key(i: int) -> tuple[str, int, int]:  # as serve makes them: new objects for each window
        return f"cnc-{i % 48:02d}", 1_767_225_600_000_000_000 + i * 160_000_000, (i * 2_654_435_761) % 2**32

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        deduper = Deduper(65_536)
        for start in range(0, 65_536, 64):
            deduper.remember([key(i) for i in range(start, start + 64)])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert all(deduper.seen(key(i)) for i in range(0, 65_536, 97))
    assert held < 8 * 2**20, f"{held / 2**20:.1f} MB for 65 536 keys"


def test_collect_flushes_on_size_and_on_the_deadline() -> None:
    inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
    for i in range(10):
        inbox.put(incoming("t", b"", i))
    assert len(collect(inbox, 4, 1.0, 0.1)) == 4
    assert len(collect(inbox, 64, 0.005, 0.1)) == 6  # the rest, queued already
    assert collect(inbox, 64, 0.005, 0.01) == []
    # A window that comes after the deadline waits for the next batch; one within it joins.
    for deadline_s, together in ((0.05, 1), (2.0, 2)):
        inbox.put(incoming("t", b"", 100))  # arrived now: its deadline counts from here
        later = threading.Timer(0.6, lambda: inbox.put(incoming("t", b"", 101)))
        later.start()
        assert len(collect(inbox, 64, deadline_s, 0.1)) == together, deadline_s
        later.join()
        while not inbox.empty():
            inbox.get()


def prediction(machine: str, label: str, confidence: float, ts: int) -> Prediction:
    return Prediction(
        machine=machine, timestamp_ns=ts, model_id=MODEL_ID, model_version="v1", label=label,
        confidence=confidence, probabilities={label: confidence}, latency_ms=0.1,
    )  # fmt: skip


def test_an_alert_goes_out_once_when_the_run_reaches_its_length() -> None:
    tracker = AlertTracker(AlertPolicy(confidence=0.8, consecutive=3, severity={"bearing_fault": "critical"}))
    sequence = [
        ("bearing_fault", 0.9), ("bearing_fault", 0.95), ("bearing_fault", 0.99),  # alert at the third
        ("bearing_fault", 0.9), ("bearing_fault", 0.9),  # the run goes on: no more alerts
        ("bearing_fault", 0.5),  # below the threshold: the run ends
        ("imbalance", 0.9), ("imbalance", 0.9), ("normal", 0.9),  # a normal window ends it too
        ("imbalance", 0.9), ("imbalance", 0.9), ("imbalance", 0.9),  # alert
        ("normal", 0.99), ("normal", 0.99), ("normal", 0.99),  # never alerts
        # A fault the model flips between two labels is one run, named by its most frequent label.
        ("misalignment", 0.9), ("bearing_fault", 0.9), ("misalignment", 0.9),  # alert
        ("normal", 0.99),
        ("imbalance", 0.9), ("misalignment", 0.9), ("bearing_fault", 0.9),  # a tie: the latest
        ("normal", 0.99),
        # A warning that worsens with no normal window between: one more alert, critical.
        ("imbalance", 0.9), ("imbalance", 0.9), ("imbalance", 0.9),  # alert, warning
        ("bearing_fault", 0.9), ("bearing_fault", 0.9), ("bearing_fault", 0.9),  # alert, critical
        ("bearing_fault", 0.9), ("imbalance", 0.9),  # and no more
    ]  # fmt: skip
    alerts = [tracker.observe(prediction("m1", label, c, i)) for i, (label, c) in enumerate(sequence)]
    raised = [(i, a.label, a.severity, a.consecutive) for i, a in enumerate(alerts) if a is not None]
    assert raised == [
        (2, "bearing_fault", "critical", 3),
        (11, "imbalance", "warning", 3),
        (17, "misalignment", "warning", 3),
        (21, "bearing_fault", "critical", 3),
        (25, "imbalance", "warning", 3),
        (28, "bearing_fault", "critical", 6),
    ]
    assert tracker.active() == {"m1": ("imbalance", 8)}  # 4 and 4: the latest
    # The confidence is the named label's in its latest window, not the last window's own label's.
    mixed = AlertTracker(AlertPolicy(consecutive=3))
    for i, confidence in enumerate((0.9, 0.92)):
        mixed.observe(prediction("m1", "misalignment", confidence, i))
    last = Prediction(
        machine="m1", timestamp_ns=3, model_id=MODEL_ID, model_version="v1", label="bearing_fault",
        confidence=0.85, probabilities={"bearing_fault": 0.85, "misalignment": 0.1, "normal": 0.05},
        latency_ms=0.1,
    )  # fmt: skip
    alert = mixed.observe(last)
    assert alert is not None
    assert (alert.label, alert.confidence) == ("misalignment", 0.92)
    # machines are independent
    other = AlertTracker(AlertPolicy(consecutive=2))
    assert other.observe(prediction("m1", "imbalance", 0.9, 1)) is None
    assert other.observe(prediction("m2", "imbalance", 0.9, 1)) is None
    assert other.observe(prediction("m1", "imbalance", 0.9, 2)) is not None


def test_an_alert_policy_that_does_not_fit_the_cards_classes_is_named() -> None:
    ours = ("normal", "imbalance", "misalignment", "bearing_fault")
    assert AlertPolicy().mismatch(ours) == ""
    # A card whose healthy class has another name: every window of a healthy machine would alert.
    theirs = ("healthy", "unbalance", "misaligned", "bearing")
    assert "every class alerts" in AlertPolicy().mismatch(theirs)
    assert "spec.alerts.normalLabels" in AlertPolicy().mismatch(theirs)
    assert AlertPolicy(normal_labels=frozenset({"healthy"})).mismatch(theirs) == ""
    assert "no class can alert" in AlertPolicy(alert_labels=frozenset({"bearing_fault"})).mismatch(theirs)


@pytest.mark.integration
def test_a_model_whose_classes_do_not_fit_the_alert_policy_says_so_in_status_and_metrics(
    broker: Mosquitto, models: Models, tmp_path: Path
) -> None:
    with serving(settings_for(broker, models, tmp_path, normal_labels=["healthy"])) as app:
        wait_until(lambda: app.status().state == "serving", SLOW, "serving")
        assert "alert policy: every class alerts" in app.status().message
        assert "vibration_infer_alert_policy_mismatch 1.0" in scrape(app, "/metrics")
    with serving(settings_for(broker, models, tmp_path / "fits")) as app:
        wait_until(lambda: app.status().state == "serving", SLOW, "serving")
        assert "alert policy" not in app.status().message
        assert "vibration_infer_alert_policy_mismatch 0.0" in scrape(app, "/metrics")


def test_runs_are_kept_for_a_bounded_number_of_machines_the_longest_idle_going_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(alerts_module, "MAX_RUNS", 3)
    tracker = AlertTracker(AlertPolicy(consecutive=3))
    for ts, machine in enumerate(("m1", "m2", "m3", "m1", "m4")):  # m1 extended, so m2 waited longest
        tracker.observe(prediction(machine, "imbalance", 0.9, ts))
    assert set(tracker.active()) == {"m1", "m3", "m4"}
    assert tracker.observe(prediction("m1", "imbalance", 0.9, 9)) is not None, "m1's run went on: 3 in a row"


def test_alert_labels_restrict_which_labels_alert() -> None:
    policy = AlertPolicy(alert_labels=frozenset({"bearing_fault"}))
    assert policy.alerts_on("bearing_fault")
    assert not policy.alerts_on("imbalance")
    assert AlertPolicy().alerts_on("imbalance")
    assert not AlertPolicy().alerts_on("normal")
    with pytest.raises(ValueError, match="consecutive"):
        AlertPolicy(consecutive=0)


def test_a_swap_collects_the_replaced_model_and_freezes_the_heap_again(
    models: Models, tmp_path: Path
) -> None:
    settings = ServeSettings(
        mqtt_url="mqtt://127.0.0.1:9", topic_prefix=PREFIX, node_name="node-a",
        artifact=models.v1.artifact, card=models.v1.card_path, cache_dir=tmp_path / "cache",
        http_host="127.0.0.1", http_port=0,
    )  # fmt: skip
    app = ServeApp(settings)
    app.http.start()  # the server exists from the constructor on; started, it can be stopped
    app.install(app.load_initial())
    # A loaded model sits in reference cycles (sessions, caches): only the collector frees it,
    # and a frozen one never. Held in a cycle here, as it would be, before the freeze.
    cycle: list[Any] = [app.serving()]
    cycle.append(cycle)
    gc.freeze()  # as serve's main does before serving
    try:
        first = weakref.ref(app.serving())
        del cycle
        app.install(load_model(models.v2.artifact, models.v2.card, threads=1))
        assert first() is not None, "frozen in a cycle, the replaced model outlives its last reference"
        assert gc.get_freeze_count() > 0
        app._maybe_refreeze(time.monotonic() + 5)  # the main loop's step, driven here
        assert first() is None, "the replaced model was collected"
        assert gc.get_freeze_count() > 0, "what lives on is frozen again"
    finally:
        gc.unfreeze()
        app.http.stop()


def test_the_same_artifact_under_a_new_version_is_a_target_of_its_own(v1: LoadedModel) -> None:
    # A retry of one artifact under a new spec.version: validated and served as that version,
    # not taken for the model already serving (whose card names the old one).
    target = ModelTarget(
        name="spindle", version=v1.card.version, model_uri="file:///m.onnx", sha256=v1.sha256
    )
    assert is_serving(v1, target)
    assert not is_serving(v1, target.model_copy(update={"version": "v1-r2"}))
    assert not is_serving(v1, target.model_copy(update={"sha256": "0" * 64}))
    assert is_serving(v1, target.model_copy(update={"sha256": None}))
    assert not is_serving(None, target)


def test_the_watcher_reports_each_new_content_once(tmp_path: Path) -> None:
    path = tmp_path / "target.json"
    watcher = TargetWatcher(path)
    assert watcher.poll() is None  # no file yet
    path.write_text(
        json.dumps({"name": "m", "version": "v1", "model_uri": "file:///m/model.onnx", "sha256": "a" * 64})
    )
    change = watcher.poll()
    assert change is not None
    assert change.target is not None
    assert change.target.sha256 == "a" * 64
    assert watcher.poll() is None
    path.write_text("{not json")
    change = watcher.poll()
    assert change is not None
    assert change.target is None
    assert change.problem


class FirstWriteFails:
    """A link whose first `publish_many` raises before anything goes out; it records the rest."""

    def __init__(self) -> None:
        self.published: list[Outgoing] = []
        self.redelivered: list[Incoming] = []
        self._failed = False

    def publish_many(self, messages: Iterable[Outgoing]) -> None:
        if not self._failed:
            self._failed = True
            raise OSError("the write failed")
        self.published += messages

    def publish(
        self, topic: str, payload: bytes, *, qos: int, retain: bool = False, then_ack: Any = None
    ) -> None:
        self.publish_many([Outgoing(topic, payload, qos, retain, then_ack)])

    def ack_after_pending(self, item: Incoming) -> None:
        self.redelivered.append(item)

    def ack(self, item: Incoming) -> None:
        raise AssertionError(f"{item.topic} acknowledged without an answer")


def test_a_batch_whose_answers_did_not_go_out_is_answered_again_not_taken_for_redeliveries(
    v1: LoadedModel,
) -> None:
    data = stream(4, seed=12)
    items = [
        incoming(
            LAYOUT.raw(str(data.machine[i])),
            encode_raw_float32(data.windows[i], RATE, int(data.timestamp_ns[i])),
            i,
        )
        for i in range(len(data))
    ]
    settings = ServeSettings(model_id="x", topic_prefix=PREFIX)
    link = FirstWriteFails()
    responder = Responder(settings, LAYOUT, ServeMetrics(CollectorRegistry()), link)  # type: ignore[arg-type]
    active = Active(v1, DriftMonitor(v1.card.reference, v1.card.labels, settings.drift_policy))

    responder.answer(items, active, None)

    assert [message.then_ack for message in link.published] == [item.receipt for item in items]
    assert link.redelivered == []  # none taken for a redelivery of itself: each answered once
    assert responder.metrics.totals() == (4, 4, 0)


def test_settings_refuse_what_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mqtt_url must be"):
        ServeSettings(mqtt_url="http://broker", model_id="x")
    with pytest.raises(ValueError, match="must not carry a user or password") as refused:
        ServeSettings(mqtt_url="mqtt://serving:s3cret@broker", model_id="x")
    assert "s3cret" not in str(refused.value)  # it would be logged
    with pytest.raises(ValueError, match="artifact and card go together"):
        ServeSettings(artifact=tmp_path / "m.onnx", model_id="x")
    with pytest.raises(ValueError, match="set target_file, model_id"):
        ServeSettings(target_file=None)
    settings = ServeSettings(mqtt_url="mqtts://broker.local", model_id="x", node_name="n1")
    assert (settings.mqtt_host, settings.mqtt_port, settings.mqtt_tls) == ("broker.local", 8883, True)
    assert settings.effective_client_id == "vibration-infer-n1"
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    with_file = ServeSettings(model_id="x", mqtt_username="u", mqtt_password_file=secret)
    assert with_file.mqtt_credentials() == ("u", "s3cret")
    assert "s3cret" not in repr(with_file)
    # Beyond what an MQTT CONNECT can carry, a pod would retry its connect forever: refused here.
    with pytest.raises(ValueError, match="session_expiry_s"):
        ServeSettings(model_id="x", session_expiry_s=2**32)
    with pytest.raises(ValueError, match="max_payload_bytes"):
        ServeSettings(model_id="x", max_payload_bytes=2**32)
    largest = ServeSettings(model_id="x", session_expiry_s=2**32 - 1, max_payload_bytes=268_304_388)
    assert codec.connect_packet(
        "n1",
        keepalive_s=30,
        clean_start=False,
        session_expiry_s=largest.session_expiry_s,
        receive_maximum=largest.receive_maximum,
        maximum_packet_size=largest.max_packet_bytes,
    )


# --- integration: a real broker ------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("rate_hz", "deadline_ms"),
    [(None, 0.0), (500.0, 0.0), (300.0, 0.0), (300.0, 20.0)],
    ids=["flood", "500-per-s", "hall-load", "hall-load-coalesced"],
)
def test_windows_in_predictions_out_equal_to_an_offline_run(  # noqa: PLR0917 - pytest passes fixtures by name
    broker: Mosquitto,
    models: Models,
    v1: LoadedModel,
    tmp_path: Path,
    mqtt_client: str,
    rate_hz: float | None,
    deadline_ms: float,
) -> None:
    # As fast as one client can publish (batches of what queued), at the bench's 500 windows/s
    # and one by one at a hall's load (batches of one), and one by one held back for company:
    # the same answers, as `make bench` loads serve.
    data = stream(300, seed=5)
    drift = {
        "drift_window": 100,
        "drift_min_samples": 50,
        "drift_evaluate_every": 50,
        "drift_baseline_windows": 200,
        "batch_deadline_ms": deadline_ms,
    }
    with serving(settings_for(broker, models, tmp_path, mqtt_client=mqtt_client, **drift)) as app:
        collector = Collector(broker)
        sensor = Publisher(broker)
        started = time.monotonic()
        for i in range(len(data)):
            if rate_hz is not None:
                time.sleep(max(0.0, started + i / rate_hz - time.monotonic()))
            machine, ts = str(data.machine[i]), int(data.timestamp_ns[i])
            if i % 3 == 0:
                payload = encode_raw_float32(data.windows[i], RATE, ts)
            elif i % 3 == 1:
                quantized, scale = quantize_int16(data.windows[i])
                payload = encode_raw_int16(quantized, scale, RATE, ts)
            else:
                payload = encode_raw_json(data.windows[i], RATE, ts)
            sensor.send(machine, payload)
        wait_until(lambda: collector.count("predictions") >= len(data), SLOW, "every prediction")
        received = {(p.machine, p.timestamp_ns): p for p in collector.predictions()}
        assert set(received) == keys(data)
        offline = predict(v1, data.windows, RATE)
        # float32 and JSON windows are bit-identical inputs (JSON carries each float32 exactly)
        for i in (i for i in range(len(data)) if i % 3 != 1):
            p = received[(str(data.machine[i]), int(data.timestamp_ns[i]))]
            assert p.label == offline.labels[i]
            assert p.confidence == pytest.approx(float(offline.confidences[i]), abs=1e-6)
        same = sum(
            received[(str(data.machine[i]), int(data.timestamp_ns[i]))].label == offline.labels[i]
            for i in range(len(data))
        )
        assert same >= len(data) - 3  # int16 quantization may flip a borderline window
        assert {p.model_version for p in received.values()} == {"v1"}
        assert collector.errors() == []
        sensor.close()
        collector.close()
        assert app.metrics.totals() == (len(data), len(data), 0)
        # The drift monitor saw every window: its figures are in the status and on /metrics.
        figures = app.publish_status().drift
        assert (figures["baseline_windows"], figures["baseline_needed"], figures["samples"]) == (
            200,
            200,
            100,
        )
        assert {"p.rms", "psi.rms", "class_p", "class_psi_vs_training", "threshold.p_per_test"} <= set(
            figures
        )
        metrics = scrape(app, "/metrics")
        assert "vibration_infer_drift_baseline_windows 200.0" in metrics
        assert 'vibration_infer_drift_p_value{feature="rms"}' in metrics
        assert 'vibration_infer_drift_threshold{name="feature_psi"}' in metrics


@pytest.mark.integration
def test_an_answer_waiting_for_the_broker_keeps_its_inputs_receipt_not_its_window(
    broker: Mosquitto, models: Models, tmp_path: Path, mqtt_client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An answer waits in the link until the broker has it; in a flood thousands wait at once
    # (430 MB of RSS for 20 000 windows when each kept its 16 KB window; docs/benchmarks.md).
    data = stream(60, seed=8)
    with serving(settings_for(broker, models, tmp_path, mqtt_client=mqtt_client)) as app:
        handed: list[Outgoing] = []
        publish_many = app.link.publish_many

        def recording(messages: Iterable[Outgoing]) -> None:
            batch = list(messages)
            handed.extend(batch)
            publish_many(batch)

        monkeypatch.setattr(app.responder.link, "publish_many", recording)
        collector, sensor = Collector(broker), Publisher(broker)
        for i in range(len(data)):
            ts = int(data.timestamp_ns[i])
            sensor.send(str(data.machine[i]), encode_raw_float32(data.windows[i], RATE, ts))
        wait_until(lambda: collector.count("predictions") >= len(data), SLOW, "every prediction")
        answers = [m for m in handed if m.then_ack is not None]
        assert len(answers) == len(data)
        assert all(type(m.then_ack) is Receipt for m in answers)
        assert len({m.then_ack for m in answers}) == len(data)
        wait_until(lambda: app.link.unacknowledged() == 0, SLOW, "every input acknowledged")
        assert "vibration_infer_mqtt_answers_unacknowledged 0.0" in scrape(app, "/metrics")
        # What a broker that falls behind, or ignores the Receive Maximum, looks like on /metrics.
        monkeypatch.setattr(app.link, "unacknowledged", lambda: 21758)
        assert "vibration_infer_mqtt_answers_unacknowledged 21758.0" in scrape(app, "/metrics")
        sensor.close()
        collector.close()


@pytest.mark.integration
def test_a_window_whose_handling_fails_gets_an_internal_error_message_and_the_rest_are_answered(
    broker: Mosquitto, models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Contract 3: every message that cannot be used gets an error message, even where the fault
    # is the pod's own; it used to be acknowledged in silence while errors_total counted it.
    data = stream(3, seed=21)
    cursed = int(data.timestamp_ns[1])
    real = extract_features

    def breaks_on_one(windows: Any, sample_rate: float) -> Any:
        if isinstance(windows, np.ndarray) and windows.ndim == 1 and windows[0] == data.windows[1][0]:
            raise RuntimeError("a bug")
        if (
            isinstance(windows, np.ndarray)
            and windows.ndim == 2
            and (windows[:, 0] == data.windows[1][0]).any()
        ):
            raise RuntimeError("a bug")
        return real(windows, sample_rate)

    monkeypatch.setattr(batcher_module, "extract_features", breaks_on_one)
    with serving(settings_for(broker, models, tmp_path)) as app:
        collector = Collector(broker)
        sensor = Publisher(broker)
        sensor.send_all(data)
        wait_until(
            lambda: collector.count("predictions") >= 2 and collector.count("errors") >= 1, SLOW, "answers"
        )
        (error,) = collector.errors()
        assert (error.reason, error.field, error.machine) == (
            ErrorReason.INTERNAL,
            "window",
            str(data.machine[1]),
        )
        assert error.detail.startswith("RuntimeError while answering this window")
        answered = {(p.machine, p.timestamp_ns) for p in collector.predictions()}
        assert answered == keys(data) - {(str(data.machine[1]), cursed)}
        wait_until(lambda: app.link.unacknowledged() == 0, SLOW, "every input acknowledged")
        assert 'vibration_infer_errors_total{reason="internal"} 1.0' in scrape(app, "/metrics")
        sensor.close()
        collector.close()


def raw_with(sample_rate: int, n: int, dtype: int = 1) -> bytes:
    return RAW_HEADER.pack(b"VW", 1, dtype, sample_rate, n, 5, 1.0) + np.zeros(n, dtype="<f4").tobytes()


@pytest.mark.integration
def test_every_kind_of_bad_payload_gets_its_reason_and_the_loop_goes_on(
    broker: Mosquitto, models: Models, tmp_path: Path, mqtt_client: str
) -> None:
    good = stream(1, seed=6)
    nan_window = np.zeros(LENGTH, dtype="<f4")
    nan_window[7] = np.nan
    bad: list[tuple[str, bytes, ErrorReason]] = [
        ("m-length", raw_with(int(RATE), LENGTH)[:-4], ErrorReason.BAD_LENGTH),
        (
            "m-nan-binary",
            RAW_HEADER.pack(b"VW", 1, 1, int(RATE), LENGTH, 5, 1.0) + nan_window.tobytes(),
            ErrorReason.NON_FINITE,
        ),
        (
            "m-nan-json",
            b'{"timestamp_ns": 5, "sample_rate": 25600, "samples": [0.1, NaN]}',
            ErrorReason.NON_FINITE,
        ),
        ("m-not-json", b"hello, broker", ErrorReason.NOT_JSON),
        ("m-broken-json", b'{"timestamp_ns": 5,', ErrorReason.NOT_JSON),
        ("m-dtype", raw_with(int(RATE), LENGTH, dtype=9), ErrorReason.BAD_DTYPE),
        ("m-oversized", b"VW" + bytes(70_000), ErrorReason.OVERSIZED),
        ("m-rate", raw_with(12800, LENGTH), ErrorReason.SAMPLE_RATE_MISMATCH),
        ("m-window", raw_with(int(RATE), 1024), ErrorReason.WINDOW_LENGTH_MISMATCH),
        (
            "m-unit",
            encode_raw_json(np.zeros(LENGTH, dtype=np.float32), RATE, 5, unit="m/s^2"),
            ErrorReason.UNIT_MISMATCH,
        ),
    ]
    with serving(
        settings_for(broker, models, tmp_path, mqtt_client=mqtt_client, max_payload_bytes=65_536)
    ) as app:
        collector = Collector(broker)
        sensor = Publisher(broker)
        for machine, payload, _ in bad:
            sensor.send(machine, payload)
        sensor.send("", b"{}", topic=f"{PREFIX}/machines/not a valid id/raw")
        sensor.send("m-good", encode_raw_float32(good.windows[0], RATE, int(good.timestamp_ns[0])))
        wait_until(
            lambda: collector.count("errors") >= len(bad) + 1 and collector.count("predictions") > 0,
            SLOW,
            "answers",
        )
        errors = {e.machine: e for e in collector.errors()}
        for machine, _, reason in bad:
            assert errors[machine].reason == reason, machine
        with collector._lock:
            hall = [ErrorMessage.decode(p) for t, p in collector.messages if t == LAYOUT.hall_errors()]
        assert [(e.reason, e.machine) for e in hall] == [(ErrorReason.UNKNOWN_TOPIC, None)]
        assert [p.machine for p in collector.predictions()] == ["m-good"]
        metrics = scrape(app, "/metrics")
        assert 'vibration_infer_errors_total{reason="non_finite"} 2.0' in metrics
        sensor.close()
        collector.close()


@pytest.mark.integration
def test_a_broker_restart_mid_stream_loses_no_window_and_answers_each_once(
    broker: Mosquitto, models: Models, tmp_path: Path, mqtt_client: str
) -> None:
    # At QoS 1 a restart may hand the subscriber a transport copy of a prediction the pod sent
    # once: byte-identical, keyed by the window.
    data = stream(800, seed=8)
    with serving(settings_for(broker, models, tmp_path, mqtt_client=mqtt_client)) as app:
        collector = Collector(broker, "collector-restart", persistent=True)
        sensor = Publisher(broker, "sensor-restart")

        def restart_at(i: int) -> None:
            if i == 300:
                broker.restart(down_s=0.5)

        sensor.send_all(data, rate_hz=800, on_each=restart_at)
        wait_until(
            lambda: {(p.machine, p.timestamp_ns) for p in collector.predictions()} == keys(data),
            SLOW,
            "every prediction after the restart",
        )
        answers: dict[tuple[str, int], set[bytes]] = defaultdict(set)
        for payload in collector.leaf("predictions"):
            p = Prediction.decode(payload)
            answers[(p.machine, p.timestamp_ns)].add(payload)
        assert set(answers) == keys(data)
        # The pod answered each window once (redelivered windows are dropped by key) ...
        received, windows, errors = app.metrics.totals()
        assert (windows, errors) == (len(data), 0)
        assert received >= len(data)
        # ... and whatever the subscriber got more than once is a byte-identical transport copy.
        assert all(len(copies) == 1 for copies in answers.values())
        sensor.close()
        collector.close()


def write_target(path: Path, files: ModelFiles, **extra: object) -> None:
    tmp = path.with_suffix(".tmp")
    target = {
        "name": "spindle",
        "version": files.card.version,
        "model_uri": files.uri,
        "sha256": files.card.artifact.sha256,
    }
    tmp.write_text(json.dumps(target | extra))
    tmp.replace(path)


@pytest.mark.integration
def test_a_hot_swap_during_5000_windows_answers_each_once_and_changes_version_once(
    broker: Mosquitto, models: Models, tmp_path: Path, mqtt_client: str
) -> None:
    data = stream(5000, seed=9)
    target = tmp_path / "target.json"
    with serving(settings_for(broker, models, tmp_path, mqtt_client=mqtt_client, target_file=target)) as app:
        collector = Collector(broker)
        sensor = Publisher(broker)

        def swap_at(i: int) -> None:
            if i == 1000:
                write_target(target, models.v2)
            elif i == 3000:
                # The last 2000 windows go out once v2 serves, so both versions
                # answer however fast or slow this machine is.
                wait_until(lambda: app.status().version == "v2", SLOW, "v2 to serve")

        started = time.perf_counter()
        sensor.send_all(data, rate_hz=2000, on_each=swap_at)
        wait_until(lambda: collector.count("predictions") >= len(data), SLOW, "every prediction")
        seconds = time.perf_counter() - started
        predictions = collector.predictions()
        assert Counter((p.machine, p.timestamp_ns) for p in predictions) == dict.fromkeys(keys(data), 1)
        versions = [p.model_version for p in predictions]
        changes = [i for i in range(1, len(versions)) if versions[i] != versions[i - 1]]
        assert len(changes) == 1, changes
        assert (versions[0], versions[-1]) == ("v1", "v2")
        status = app.status()
        assert (status.version, status.state, status.ready) == ("v2", "serving", True)
        assert status.sha256 == models.v2.card.artifact.sha256
        good = app.cache.last_good(MODEL_ID)
        assert good is not None
        assert good.version == "v2"
        slot = app.cache.last_good_of_slot("spindle")
        assert slot is not None
        assert slot.sha256 == good.sha256
        assert (status.candidate_version, status.candidate_state) == ("v2", "passed")
        p50, p99 = np.percentile([p.latency_ms for p in predictions], [50, 99])
        sys.stderr.write(
            f"hot swap stream: {len(data) / seconds:.0f} windows/s, latency p50 {p50:.2f} ms "
            f"p99 {p99:.2f} ms, swap at window {changes[0]}\n"
        )
        sensor.close()
        collector.close()


def slowed_validation(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[str]]:
    """The swap's real validation, a second slower: set once one starts; each target's version and bar."""
    real = candidate_module.validate_target
    started = threading.Event()
    validated: list[str] = []

    def slowly(settings: Any, target: ModelTarget, *args: Any, **kwargs: Any) -> Any:
        validated.append(f"{target.version} {target.min_accuracy}")
        started.set()
        time.sleep(1.0)
        return real(settings, target, *args, **kwargs)

    monkeypatch.setattr(swap_module, "validate_target", slowly)  # where the swap looks it up
    return started, validated


def promoted_swaps(app: ServeApp) -> float:
    """The pod's promoted swaps, as its /metrics says."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in scrape(app, "/metrics").splitlines()
        if line.startswith('vibration_infer_swaps_total{outcome="promoted"}')
    )


@pytest.mark.integration
def test_a_target_replaced_while_it_is_validated_is_neither_served_nor_last_good(
    broker: Mosquitto, models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator moves the node on (or back to v1) while v2 is validated: v2 must not be
    # promoted once it passes, nor marked last good, and the newer target is handled after it.
    started, _ = slowed_validation(monkeypatch)
    settings = settings_for(broker, models, tmp_path)
    with serving(settings) as app:
        write_target(settings.target_file, models.v2)  # type: ignore[arg-type]  # set above
        assert started.wait(SLOW), "v2's validation to start"
        write_target(settings.target_file, models.v1)  # type: ignore[arg-type]  # rolled back meanwhile
        wait_until(lambda: app.status().candidate_version == "v1", SLOW, "v1's target to be handled")
        time.sleep(1.5)  # v2's validation has ended by now
        status = app.status()
        assert (status.version, status.state) == ("v1", "serving")
        assert promoted_swaps(app) == 0, "v2 was never served, and v1 served all along"
        slot = app.cache.last_good_of_slot("spindle")
        assert slot is None or slot.version != "v2"


@pytest.mark.integration
def test_a_target_noted_during_a_validation_and_gone_since_is_not_validated(
    broker: Mosquitto, models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # v2 is validated; the file then names v2 held to another bar (noted, v2's run abandoned),
    # then v1 again (the operator rolls back). What the file says when the run ends counts:
    # the noted target is gone and must not be validated, let alone promoted.
    started, versions = slowed_validation(monkeypatch)
    settings = settings_for(broker, models, tmp_path)
    with serving(settings) as app:
        write_target(settings.target_file, models.v2)  # type: ignore[arg-type]  # set above
        assert started.wait(SLOW), "v2's validation to start"
        time.sleep(2 * settings.target_poll_s)
        write_target(settings.target_file, models.v2, min_accuracy=0.5)  # type: ignore[arg-type]
        time.sleep(2 * settings.target_poll_s)  # noted while v2 is validated
        write_target(settings.target_file, models.v1)  # type: ignore[arg-type]  # rolled back meanwhile
        wait_until(lambda: app.status().candidate_version == "v1", SLOW, "v1's target to be handled")
        time.sleep(1.5)
        status = app.status()
        assert (status.version, status.state) == ("v1", "serving")
        assert versions == ["v2 None"], "only the first v2 was validated"
        assert promoted_swaps(app) == 0


@pytest.mark.integration
def test_a_candidate_that_cannot_be_recorded_last_good_is_refused_and_the_old_model_serves(
    broker: Mosquitto, models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk when the passed candidate is recorded: the swap thread must say so, not die
    # with the candidate left "validating" (which holds the hall's pod replacements up).
    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ModelCache, "mark_good", disk_full)
    settings = settings_for(broker, models, tmp_path)
    with serving(settings) as app:
        write_target(settings.target_file, models.v2)  # type: ignore[arg-type]  # set above
        wait_until(lambda: app.status().state == "failed", SLOW, "the swap to fail")
        status = app.status()
        assert (status.version, status.candidate_version, status.candidate_state) == ("v1", "v2", "failed")
        assert "cannot record it as last good" in status.message
        assert "No space left on device" in status.message


@pytest.mark.integration
@pytest.mark.parametrize(
    ("extra", "expected"),
    [({"sha256": "0" * 64}, "digest_mismatch"), ({"min_accuracy": 1.0}, "below_threshold")],
    ids=["wrong-digest", "below-threshold"],
)
def test_a_failing_target_leaves_the_old_model_serving_and_says_why(
    broker: Mosquitto, models: Models, tmp_path: Path, extra: dict[str, object], expected: str
) -> None:
    settings = settings_for(broker, models, tmp_path)
    data = stream(20, seed=10)
    with serving(settings) as app:
        collector = Collector(broker)
        write_target(settings.target_file, models.v2, **extra)  # type: ignore[arg-type]  # set above
        wait_until(lambda: app.status().state == "failed", SLOW, "the target to fail")
        status = app.status()
        assert status.version == "v1"
        assert status.ready
        assert expected in status.message
        assert "still serving v1" in status.message
        sensor = Publisher(broker)
        sensor.send_all(data)
        wait_until(lambda: collector.count("predictions") >= len(data), SLOW, "predictions")
        assert {p.model_version for p in collector.predictions()} == {"v1"}
        wait_until(
            lambda: any(ModelStatus.decode(p).state == "failed" for p in collector.leaf("status")),
            SLOW,
            "status",
        )
        assert 'vibration_infer_swaps_total{outcome="failed"} 1.0' in scrape(app, "/metrics")
        assert app.cache.last_good(MODEL_ID) is None  # nothing was promoted
        # What the operator reads from /status: the candidate, its verdict and the report.
        assert (status.candidate_version, status.candidate_state) == ("v2", "failed")
        assert status.candidate_report is not None
        assert expected.upper() == ExitCode(status.candidate_report.code).name
        sensor.close()
        collector.close()


@pytest.mark.integration
def test_a_target_that_cannot_be_fetched_is_tried_again_until_the_registry_has_it(
    broker: Mosquitto, models: Models, tmp_path: Path
) -> None:
    # A registry that is down or refuses the node's keys is not the model's fault: no new target
    # file comes when it is mended, so the pod tries again by itself.
    registry = tmp_path / "registry"
    artifact = registry / models.v2.artifact.name
    settings = settings_for(broker, models, tmp_path, fetch_retry_s=0.5)
    with serving(settings) as app:
        write_target(settings.target_file, ModelFiles(artifact, registry / CARD_FILENAME, models.v2.card))  # type: ignore[arg-type]  # set above
        wait_until(lambda: app.status().state == "failed", SLOW, "the fetch to fail")
        status = app.status()
        assert status.candidate_report is not None
        assert ExitCode(status.candidate_report.code) is ExitCode.CANNOT_FETCH
        assert status.version == "v1"
        time.sleep(1.2)  # tried again, every 0.5 s: not a failed swap each time
        metrics = scrape(app, "/metrics")
        assert 'vibration_infer_swaps_total{outcome="fetch_failed"}' in metrics
        assert 'vibration_infer_swaps_total{outcome="failed"}' not in metrics
        registry.mkdir()
        shutil.copy(models.v2.artifact, artifact)
        shutil.copy(models.v2.card_path, registry / CARD_FILENAME)
        wait_until(lambda: app.status().version == "v2", SLOW, "the target to be tried again and promoted")
        assert app.status().candidate_state == "passed"


@pytest.mark.integration
def test_alerts_follow_the_debounce_rule_over_mqtt(broker: Mosquitto, models: Models, tmp_path: Path) -> None:
    # Every label but normal alerts at any confidence: the expected alerts follow from the predictions alone.
    settings = settings_for(broker, models, tmp_path, alert_confidence=0.0, alert_consecutive=3)
    data = stream(400, seed=12)
    with serving(settings):
        collector = Collector(broker)
        sensor = Publisher(broker)
        sensor.send_all(data)
        wait_until(lambda: collector.count("predictions") >= len(data), SLOW, "predictions")
        time.sleep(0.2)
        expected = []
        runs: dict[str, list[str]] = {}
        alerted: dict[str, str] = {}
        for p in collector.predictions():
            run = runs.setdefault(p.machine, [])
            run[:] = [*run, p.label] if p.label != "normal" else []
            if not run:
                alerted.pop(p.machine, None)
            elif len(run) == 3:
                # the most frequent label of the run; of a tie, the one seen last
                top = max(run.count(label) for label in run)
                label = next(x for x in reversed(run) if run.count(x) == top)
                expected.append((p.machine, p.timestamp_ns, label))
                alerted[p.machine] = label
            elif (
                alerted.get(p.machine, "bearing_fault") != "bearing_fault" and run.count("bearing_fault") == 3
            ):
                expected.append((p.machine, p.timestamp_ns, "bearing_fault"))  # a warning worsens
                alerted[p.machine] = "bearing_fault"
        assert expected
        assert [(a.machine, a.timestamp_ns, a.label) for a in collector.alerts()] == expected
        sensor.close()
        collector.close()


def scrape(app: ServeApp, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{app.http.port}{path}", timeout=5) as response:
        return str(response.read().decode())


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.integration
def test_an_idle_http_connection_is_closed_not_kept_on_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each connection holds a thread: one that never sends its request must not keep it forever.
    assert vars(http_module._Handler)["timeout"] == http_module.IDLE_TIMEOUT_S <= 30
    monkeypatch.setattr(http_module._Handler, "timeout", 0.3)
    server = http_module.HttpServer(_Source(), "127.0.0.1", 0)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
            idle.sendall(b"GET /healthz HT")  # half a request line, then nothing
            started = time.monotonic()
            assert idle.recv(1024) == b"", "the server closes it"
            assert time.monotonic() - started < 3
        assert http_status(server.port, "/healthz") == 200
    finally:
        server.stop()


class _Source:
    registry = CollectorRegistry()

    def is_ready(self) -> bool:
        return True

    def status(self) -> ModelStatus:
        raise NotImplementedError


def test_health_readiness_metrics_and_status_over_http(
    broker: Mosquitto, models: Models, tmp_path: Path
) -> None:
    with serving(settings_for(broker, models, tmp_path)) as app:
        port = app.http.port
        assert http_status(port, "/healthz") == 200
        assert http_status(port, "/readyz") == 200
        assert http_status(port, "/nope") == 404
        metrics = scrape(app, "/metrics")
        for name in (
            "vibration_infer_latency_seconds_bucket",
            "vibration_infer_batch_size_bucket",
            "vibration_infer_ready 1.0",
        ):
            assert name in metrics
        assert f'sha256="{models.v1.card.artifact.sha256}",version="v1"}} 1.0' in metrics  # labels sorted
        status = ModelStatus.decode(scrape(app, "/status").encode())
        assert (status.node, status.model_id, status.version, status.state) == (
            "node-a",
            MODEL_ID,
            "v1",
            "serving",
        )
        assert status.sha256 == models.v1.card.artifact.sha256
        broker.stop()
        wait_until(lambda: http_status(port, "/readyz") == 503, SLOW, "readiness to drop with the broker")
        assert http_status(port, "/healthz") == 200
        broker.start()
        wait_until(lambda: http_status(port, "/readyz") == 200, SLOW, "readiness to come back")


@pytest.mark.integration
def test_status_says_the_broker_cannot_be_reached_and_clears_when_it_is_back(
    broker: Mosquitto, models: Models, tmp_path: Path, mqtt_client: str
) -> None:
    # What the operator shows a person for a hall installed with a wrong or stopped broker.
    def said(app: ServeApp) -> str:
        return ModelStatus.decode(scrape(app, "/status").encode()).message

    with serving(settings_for(broker, models, tmp_path, mqtt_client=mqtt_client)) as app:
        fine = said(app)
        assert fine == "serving spindle-classifier v1"
        broker.stop()
        where = f"not connected to the MQTT broker 127.0.0.1:{broker.port}: "
        wait_until(lambda: said(app).startswith(where), SLOW, "the status to name the broker")
        assert said(app).removeprefix(where).strip(), "and why: refused, or the session that ended"
        assert not ModelStatus.decode(scrape(app, "/status").encode()).ready
        broker.start()
        wait_until(lambda: said(app) == fine, SLOW, "the message to clear with the broker back")


def serve_command(
    broker: Mosquitto,
    models: Models,
    tmp_path: Path,
    port: int,
    extra: list[str],
    *,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`vibration-infer serve` on v1 in a process of its own, its stderr in tmp_path/serve.log."""
    argv = [
        "--mqtt-url", broker.url, "--topic-prefix", PREFIX, "--node-name", "node-cli",
        "--artifact", str(models.v1.artifact), "--card", str(models.v1.card_path),
        "--http-host", "127.0.0.1", "--http-port", str(port), "--target-file", str(tmp_path / "none.json"),
        "--cache-dir", str(tmp_path / "cache"), *extra,
    ]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIBRATION_")}
    code = "import sys; from vibration_infer.serve.main import run; sys.exit(run(sys.argv[1:]))"
    with (tmp_path / "serve.log").open("w") as stderr:
        return subprocess.Popen([sys.executable, "-c", code, *argv], env=clean | (env or {}), stderr=stderr)


@pytest.mark.integration
def test_the_serve_command_starts_answers_and_stops_on_sigterm(
    broker: Mosquitto, models: Models, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "serve.log"
    started = time.perf_counter()
    process = serve_command(broker, models, tmp_path, port, ["--log-format", "json"])
    try:
        wait_until(
            lambda: process.poll() is None and http_status_or_0(port, "/readyz") == 200,
            SLOW,
            "the command to be ready",
        )
        ready_s = time.perf_counter() - started
        collector = Collector(broker)
        sensor = Publisher(broker)
        sensor.send_all(stream(10, seed=13))
        wait_until(lambda: collector.count("predictions") >= 10, SLOW, "predictions from the command")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=SLOW) == 0
        logged = {e["event"]: e for e in map(json.loads, log.read_text().splitlines()) if "event" in e}
        assert logged["serve_started"]["http_port"] == port
        assert "serve_stopped" in logged
        wait_until(
            lambda: any(not ModelStatus.decode(p).ready for p in collector.leaf("status")),
            SLOW,
            "a final not-ready status",
        )
        sys.stderr.write(f"serve command: ready {ready_s:.2f} s after start (including interpreter start)\n")
        sensor.close()
        collector.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.integration
def test_the_serve_command_imports_no_module_once_it_is_ready(
    broker: Mosquitto, models: Models, tmp_path: Path
) -> None:
    # A module first imported by a window, a drift evaluation or a scrape is memory every
    # pod pays and a pause in the stream: numpy.ma, which np.union1d pulled in at the first
    # drift evaluation, was 7 MB of a pod's RSS.
    port, log = free_port(), tmp_path / "serve.log"
    drift = ["--drift-window", "20", "--drift-min-samples", "10", "--drift-evaluate-every", "10"]
    extra = ["--status-interval-s", "0.2", *drift, "--drift-baseline-windows", "10"]
    process = serve_command(broker, models, tmp_path, port, extra, env={"PYTHONPROFILEIMPORTTIME": "1"})

    def imports() -> list[str]:
        return [line for line in log.read_text().splitlines() if line.startswith("import time:")]

    try:
        wait_until(
            lambda: process.poll() is None and http_status_or_0(port, "/readyz") == 200,
            SLOW,
            "the command to be ready",
        )
        at_ready = len(imports())
        assert at_ready > 100, "PYTHONPROFILEIMPORTTIME lists the imports"
        collector, sensor = Collector(broker), Publisher(broker)
        sensor.send_all(stream(40, seed=17))
        wait_until(lambda: collector.count("predictions") >= 40, SLOW, "predictions from the command")
        wait_until(
            lambda: any("ks.rms" in ModelStatus.decode(p).drift for p in collector.leaf("status")),
            SLOW,
            "a status with drift figures",
        )
        for path in ("/metrics", "/status", "/healthz"):
            assert http_status(port, path) == 200
        assert imports()[at_ready:] == []
        sensor.close()
        collector.close()
    finally:
        process.kill()
        process.wait(timeout=5)


def http_status_or_0(port: int, path: str) -> int:
    try:
        return http_status(port, path)
    except OSError:
        return 0


@pytest.mark.integration
@pytest.mark.parametrize("namespace", [None, "production"], ids=["before-namespaces", "namespaced"])
def test_a_restarted_pod_serves_its_last_good_version_while_its_target_fails(
    broker: Mosquitto, models: Models, tmp_path: Path, namespace: str | None
) -> None:
    """The Coral rule from the pod's side: a failing target never leaves the node without a model."""
    settings = settings_for(broker, models, tmp_path, namespace=namespace)
    with serving(settings) as app:
        write_target(settings.target_file, models.v2)  # type: ignore[arg-type]  # set above
        wait_until(lambda: app.status().version == "v2", SLOW, "v2 to serve")
    slot = "spindle" if namespace is None else f"{namespace}/spindle"  # the hot swap's record, its own
    assert (settings.cache_dir / ".slots" / f"{slot}.json").is_file()
    # The pod restarts from the target file alone; the operator has meanwhile named a broken v3.
    write_target(settings.target_file, models.v2, version="v3", sha256="0" * 64)  # type: ignore[arg-type]
    restarted = settings.model_copy(update={"artifact": None, "card": None})
    with serving(restarted) as app:
        wait_until(lambda: app.status().candidate_state == "failed", SLOW, "the v3 target to fail")
        status = app.status()
        assert (status.version, status.ready) == ("v2", True)
        assert status.candidate_version == "v3"
        assert status.candidate_report is not None
        assert status.candidate_report.code == ExitCode.DIGEST_MISMATCH


# --- integration: the pods of one VibrationModel share the hall's windows ------------------

GROUP = "spindle-classifier"
SETTLE_S = 0.5
"""Long enough for a second answer to a window, or one more window, to show up."""


def gateway(
    broker: Mosquitto, models: Models, tmp_path: Path, node: str, mqtt_client: str, **overrides: object
) -> ServeSettings:
    """The serving pod of one gateway, in GROUP: its own node, client id, cache and target file."""
    home = tmp_path / node
    home.mkdir(exist_ok=True)
    values = {"mqtt_client": mqtt_client, "node_name": node, "mqtt_share_group": GROUP} | overrides
    return settings_for(broker, models, home, **values)


def answered_once_between(collector: Collector, data: SimulatedData, pods: list[ServeApp]) -> list[int]:
    """Wait for every window's prediction, check each came once, return how many each pod answered."""
    wait_until(lambda: collector.count("predictions") >= len(data), SLOW, "every prediction")
    time.sleep(SETTLE_S)
    predictions = collector.predictions()
    # The machine of each answer is the one the window was sent for: shared or not, a window
    # arrives on its own raw topic.
    assert Counter((p.machine, p.timestamp_ns) for p in predictions) == dict.fromkeys(keys(data), 1)
    assert collector.errors() == []
    answered = [pod.metrics.totals()[1] for pod in pods]
    assert sum(answered) == len(data), answered
    return answered


@pytest.mark.integration
@pytest.mark.parametrize("session", ["new", "from-before-the-group"])
def test_two_pods_of_one_share_group_answer_each_window_once_between_them(
    broker: Mosquitto, models: Models, tmp_path: Path, mqtt_client: str, session: str
) -> None:
    if session == "from-before-the-group":
        # gw-1 served before it had a share group (the operator's upgrade replaces it): its
        # persistent session still holds the plain subscription to every window.
        with serving(gateway(broker, models, tmp_path, "gw-1", mqtt_client, mqtt_share_group=None)):
            pass
    data = stream(200, seed=12)
    collector = Collector(broker)
    one_settings, two_settings = (gateway(broker, models, tmp_path, n, mqtt_client) for n in ("gw-1", "gw-2"))
    with serving(one_settings) as one, serving(two_settings) as two:
        assert one.subscription == f"$share/{GROUP}/{LAYOUT.raw_subscription()}"
        sensor = Publisher(broker)
        sensor.send_all(data)
        answered = answered_once_between(collector, data, [one, two])
        assert min(answered) >= 1, f"the broker shares the windows: {answered}"
        sensor.close()
    collector.close()


@pytest.mark.integration
def test_a_pod_that_is_away_keeps_the_windows_routed_to_its_session_until_it_is_back(
    broker: Mosquitto, models: Models, tmp_path: Path, mqtt_client: str
) -> None:
    data = stream(200, seed=13)
    collector = Collector(broker)
    away = gateway(broker, models, tmp_path, "gw-2", mqtt_client)
    with serving(gateway(broker, models, tmp_path, "gw-1", mqtt_client)) as one:
        with serving(away):
            pass  # gw-2 joined the group and left, as a restarting pod does; its session stays
        sensor = Publisher(broker)
        sensor.send_all(data)
        wait_until(lambda: collector.count("predictions") >= 1, SLOW, "gw-1's first answer")
        time.sleep(SETTLE_S)
        assert 0 < collector.count("predictions") < len(data), "gw-2's share waits in its session"
        with serving(away) as two:
            answered = answered_once_between(collector, data, [one, two])
        assert answered[1] >= 1, answered
        sensor.close()
    collector.close()
