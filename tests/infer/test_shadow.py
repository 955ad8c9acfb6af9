"""Shadow on live windows: a candidate that passed the node's test data runs beside the champion first.

The candidate here was trained on one machine population only; the champion
on that one and a second. The node's test set holds only the first, so the
candidate passes validation there; the live windows come from the second,
where the two disagree, and the shadow run refuses the candidate before it
answers a single window.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pytest

from vibration_core import dataset
from vibration_core.features import extract_features
from vibration_core.modelcard import ModelCard
from vibration_core.raw import encode_raw_float32
from vibration_core.target import ShadowPolicy
from vibration_core.validation import ExitCode
from vibration_infer.cache import ModelCache
from vibration_infer.errors import PredictError
from vibration_infer.loader import load_model
from vibration_infer.serve.shadow import Shadow
from vibration_infer.settings import ValidateSettings
from vibration_infer.validate import validate
from vibration_testkit.serving import Collector, Publisher, serve_settings, serving, wait_until
from vibration_train.card import build_card, write_model
from vibration_train.data import TrainingTable
from vibration_train.fit import FitConfig, fit
from vibration_train.onnx_export import to_onnx
from vibration_train.simulator import Drift, SimulatedData, simulate

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from vibration_infer.loader import LoadedModel
    from vibration_infer.serve.settings import ServeSettings
    from vibration_testkit.mosquitto import Mosquitto

RATE, LENGTH = 25600.0, 1024
CONFIG = FitConfig(n_estimators=30, max_depth=3)


@dataclass(frozen=True)
class Files:
    artifact: Path
    card: Path
    sha256: str
    version: str


def _table(data: SimulatedData) -> TrainingTable:
    return TrainingTable(
        source="simulated",
        features=extract_features(data.windows, RATE),
        labels=data.labels,
        machines=data.machine,
        timestamps_ns=data.timestamp_ns,
        sample_rate=RATE,
        window_length=LENGTH,
        modified=datetime(2026, 1, 1, tzinfo=UTC),
        unit="g",
    )


def _train(root: Path, data: SimulatedData, version: str) -> Files:
    table = _table(data)
    result = fit(table, CONFIG)
    model = to_onnx(result.estimator, 10)
    card = build_card(
        table=table, result=result, config=CONFIG, model=model, model_id="spindle", version=version
    )
    artifact, card_path = write_model(root / version, model.data, card)
    return Files(artifact, card_path, card.artifact.sha256, version)


def _known(n: int, seed: int) -> SimulatedData:
    return simulate(n, seed=seed, sample_rate=RATE, window_length=LENGTH, machines=6)


def _unseen(n: int, seed: int) -> SimulatedData:
    return simulate(
        n, seed=seed, sample_rate=RATE, window_length=LENGTH, machines=6, drift=Drift(new_machine=True)
    )


@dataclass(frozen=True)
class Hall:
    champion: Files
    candidate: Files
    test_data: Path
    live: SimulatedData


@pytest.fixture(scope="module")
def hall(tmp_path_factory: pytest.TempPathFactory) -> Hall:
    root = tmp_path_factory.mktemp("shadow")
    known, unseen = _known(480, 1), _unseen(480, 2)
    both = SimulatedData(
        machine=np.concatenate([known.machine, np.char.add("new-", unseen.machine)]),
        timestamp_ns=np.concatenate([known.timestamp_ns, unseen.timestamp_ns]),
        sample_rate=RATE,
        windows=np.concatenate([known.windows, unseen.windows]),
        labels=np.concatenate([known.labels, unseen.labels]),
    )
    champion = _train(root, both, "v1")
    candidate = _train(root, known, "v2")
    test_data = root / "node" / "test.parquet"
    dataset.write_parquet(_known(160, 3), test_data, unit="g")
    return Hall(champion, candidate, test_data, _unseen(400, 4))


def test_the_shadow_counts_agreement_per_champion_class(hall: Hall) -> None:
    champion = load_model(hall.champion.artifact, ModelCard.load(hall.champion.card))
    candidate = load_model(hall.candidate.artifact, ModelCard.load(hall.candidate.card))
    policy = ShadowPolicy(windows=300, min_agreement=0.95, min_class_agreement=0.9, min_class_windows=20)
    shadow = Shadow(candidate, policy)
    features = extract_features(hall.live.windows, RATE)
    classes = np.argmax(champion.backend.predict_proba(features), axis=1)
    for start in range(0, 400, 64):
        shadow.observe(features[start : start + 64], classes[start : start + 64], champion.card.labels)
    result = shadow.result()
    assert shadow.done.is_set()
    assert result.windows == 300  # counted up to the policy's length, not beyond
    mine = np.argmax(candidate.backend.predict_proba(features[:300]), axis=1)
    expected = float(
        np.mean(np.asarray(candidate.card.labels)[mine] == np.asarray(champion.card.labels)[classes[:300]])
    )
    assert result.agreement == pytest.approx(expected)
    assert sum(result.disagreements.values()) == round((1 - expected) * 300)
    assert result.cpu_us_per_window > 0


def shadow_answering(
    hall: Hall, answer: Callable[[int, int], np.ndarray]
) -> tuple[Shadow, Callable[[], None]]:
    """A shadow run of the candidate whose every batch of n rows and k labels answers `answer(n, k)`,
    and one live batch of 64 windows (the champion saying class 0) to observe with it."""
    candidate = load_model(hall.candidate.artifact, ModelCard.load(hall.candidate.card))
    policy = ShadowPolicy(windows=64, min_agreement=0.95, min_class_agreement=0.9, min_class_windows=20)
    shadow = Shadow(candidate, policy)
    features = extract_features(hall.live.windows[:64], RATE)
    labels = candidate.card.labels

    def predict_proba(rows: np.ndarray) -> np.ndarray:
        return answer(len(rows), len(labels))

    candidate.backend.predict_proba = predict_proba  # type: ignore[method-assign,assignment]

    def observe() -> None:
        shadow.observe(features, np.zeros(64, dtype=np.intp), labels)  # raises nothing

    return shadow, observe


def test_a_candidate_answering_in_another_shape_ends_the_shadow_run_at_once(hall: Hall) -> None:
    shadow, observe = shadow_answering(hall, lambda n, k: np.full((n + 1, k), 0.25, dtype=np.float32))
    observe()
    assert shadow.done.is_set()
    assert shadow.error.startswith("ValueError")
    assert shadow.windows == 0
    observe()  # ended: nothing more
    assert shadow.windows == 0


def test_a_candidate_answering_nan_ends_the_shadow_run_instead_of_agreeing(hall: Hall) -> None:
    # argmax reads a row of NaN as class 0: beside a champion saying "normal" that was agreement,
    # and the candidate, promoted, would then answer every window with an error.
    shadow, observe = shadow_answering(hall, lambda n, k: np.full((n, k), np.nan, dtype=np.float32))
    observe()
    assert shadow.done.is_set()
    assert shadow.error == "ValueError: the candidate gave a probability that is NaN or infinite"
    assert shadow.windows == 0
    assert not shadow.result().passed


def shadow_target(hall: Hall, app_settings: ServeSettings, **policy: float) -> None:
    """Point the pod at v2, held to v1 (the champion it serves) and to `policy` on live windows."""
    target = {
        "name": "spindle",
        "version": "v2",
        "model_uri": hall.candidate.artifact.as_uri(),
        "sha256": hall.candidate.sha256,
        "champion": {"version": "v1", "sha256": hall.champion.sha256},
        "shadow": {"min_class_windows": 20, **policy},
    }
    path = app_settings.target_file
    assert path is not None
    path.write_text(json.dumps(target))


def champion_pod(hall: Hall, broker: Mosquitto, tmp_path: Path) -> ServeSettings:
    """A pod serving v1, with the node's test set of the known population only."""
    return serve_settings(
        broker, tmp_path, artifact=hall.champion.artifact, card=hall.champion.card, test_data=hall.test_data,
        model_id="spindle",
    )  # fmt: skip


def send_live(sensor: Publisher, live: SimulatedData, n: int) -> None:
    for i in range(n):
        sensor.send(
            str(live.machine[i]), encode_raw_float32(live.windows[i], RATE, int(live.timestamp_ns[i]))
        )


@pytest.mark.integration
def test_a_candidate_that_disagrees_on_an_unseen_population_is_refused_by_the_shadow(
    hall: Hall, broker: Mosquitto, tmp_path: Path
) -> None:
    settings = champion_pod(hall, broker, tmp_path)
    with serving(settings) as app:
        collector = Collector(broker)
        sensor = Publisher(broker)
        shadow_target(hall, settings, windows=300, min_agreement=0.95, min_class_agreement=0.9)
        wait_until(lambda: "shadowing" in app.status().message, 120, "the candidate to pass and shadow")
        send_live(sensor, hall.live, len(hall.live))
        wait_until(lambda: app.status().candidate_state == "failed", 120, "the shadow's verdict")
        status = app.status()
        report = status.candidate_report
        assert report is not None
        assert report.reason_code == "ShadowDisagreed"
        assert report.shadow_windows == 300
        assert report.agreement is not None
        assert report.agreement < 0.95
        failed = [c for c in report.checks if not c.passed]
        assert any(c.figure == "agreement" and c.threshold == 0.95 for c in failed), failed
        assert report.disagreements
        # Only the champion answered, and it keeps serving; the node's last good is still v1.
        wait_until(lambda: collector.count("predictions") >= len(hall.live), 120, "every window answered")
        assert {p.model_version for p in collector.predictions()} == {"v1"}
        assert status.version == "v1"
        good = app.cache.last_good_of_slot("spindle")
        assert good is None or good.version == "v1"
        sensor.close()
        collector.close()


@pytest.mark.integration
def test_a_candidate_that_meets_the_shadow_policy_is_promoted_and_only_then_marked_last_good(
    hall: Hall, broker: Mosquitto, tmp_path: Path
) -> None:
    settings = champion_pod(hall, broker, tmp_path)
    with serving(settings) as app:
        sensor = Publisher(broker)
        shadow_target(hall, settings, windows=100, min_agreement=0.0, min_class_agreement=0.0)
        wait_until(lambda: "shadowing" in app.status().message, 120, "the shadow run to start")
        slot = app.cache.last_good_of_slot("spindle")
        assert slot is None or slot.version != "v2"  # not yet proven on live windows
        send_live(sensor, hall.live, 150)
        wait_until(lambda: app.status().version == "v2", 120, "v2 to serve after its shadow run")
        report = app.status().candidate_report
        assert report is not None
        assert (report.reason_code, report.shadow_windows) == ("Passed", 100)
        slot = app.cache.last_good_of_slot("spindle")
        assert slot is not None
        assert slot.version == "v2"
        sensor.close()


@pytest.mark.integration
def test_a_candidate_that_fails_on_live_windows_is_refused_and_each_window_answered_once(
    hall: Hall, broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The candidate's runtime raises on the live batches it shadows (it passed the test data).

    The champion's answers went out before the shadow ran: the windows are not handled again
    (each would be taken for a redelivery and acknowledged twice), and the shadow ends at once,
    refused, rather than waiting forever for windows it cannot count.
    """
    started = Shadow.__init__

    def failing_candidate(shadow: Shadow, candidate: LoadedModel, policy: ShadowPolicy) -> None:
        started(shadow, candidate, policy)

        def broken(_rows: np.ndarray) -> np.ndarray:
            raise PredictError("onnx", "the runtime refused this batch")

        monkeypatch.setattr(candidate.backend, "predict_proba", broken)  # the candidate's, not v1's

    monkeypatch.setattr(Shadow, "__init__", failing_candidate)
    settings = champion_pod(hall, broker, tmp_path)
    with serving(settings) as app:
        collector = Collector(broker)
        sensor = Publisher(broker)
        shadow_target(hall, settings, windows=100, min_agreement=0.0, min_class_agreement=0.0)
        wait_until(lambda: "shadowing" in app.status().message, 120, "the shadow run to start")
        send_live(sensor, hall.live, 60)
        wait_until(lambda: app.status().candidate_state == "failed", 60, "the candidate to be refused")
        report = app.status().candidate_report
        assert report is not None
        assert report.reason_code == "CannotLoad"
        assert "shadow on live windows: the candidate failed after 0 windows: PredictError" in report.reason
        wait_until(lambda: collector.count("predictions") >= 60, 60, "every window answered")
        time.sleep(0.3)  # time for an answer given twice to show
        answers = Counter((p.machine, p.timestamp_ns) for p in collector.predictions())
        assert set(answers.values()) == {1}
        assert len(answers) == 60
        assert app.metrics.totals() == (60, 60, 0)  # received, predicted, errors: each window once
        assert app.metrics.duplicates._value.get() == 0  # none taken for a redelivery
        assert app.status().version == "v1"
        sensor.close()
        collector.close()


@pytest.mark.parametrize("champion_cached", [True, False], ids=["champion-is-last-good", "fresh-node"])
def test_an_init_container_leaves_a_shadowed_candidate_to_the_pod(
    hall: Hall, tmp_path: Path, *, champion_cached: bool
) -> None:
    # A pod recreated mid-shadow (a reboot, an eviction) runs its init container again: marking v2
    # last good there would start the pod on v2 and skip the shadow run. It stays v1's, and the
    # pod's swap validates and shadows v2. A node without v1 could not shadow it, and promotes.
    target, cache = tmp_path / "target.json", tmp_path / "cache"
    settings = ValidateSettings(
        target=target, fallback_last_good=True, cache_dir=cache, test_data=hall.test_data, node_name="n1"
    )
    if champion_cached:
        champion = {"name": "spindle", "version": "v1", "model_uri": hall.champion.artifact.as_uri()}
        target.write_text(json.dumps({**champion, "sha256": hall.champion.sha256}))
        assert validate(settings, out=io.StringIO()) is ExitCode.PASSED
    target.write_text(
        json.dumps(
            {
                "name": "spindle",
                "version": "v2",
                "model_uri": hall.candidate.artifact.as_uri(),
                "sha256": hall.candidate.sha256,
                "champion": {"version": "v1", "sha256": hall.champion.sha256},
                "shadow": {
                    "windows": 100000,
                    "min_agreement": 0.0,
                    "min_class_agreement": 0.0,
                    "min_class_windows": 20,
                },
            }
        )
    )
    printed = io.StringIO()

    assert validate(settings, out=printed) is ExitCode.PASSED

    good = ModelCache(cache).last_good_of_slot("spindle")
    assert good is not None
    assert good.version == ("v1" if champion_cached else "v2")
    assert ("beside its champion first" in printed.getvalue()) is champion_cached
