"""``vibration-infer validate`` end to end: each failure class, the cache, the registry, the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import itertools
import json
import os
import shutil
import time
from http.server import SimpleHTTPRequestHandler
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest
from minio import Minio
from pydantic import ValidationError

from vibration_core import dataset
from vibration_core.features import FEATURE_NAMES
from vibration_core.gate import Figures
from vibration_core.logs import event_fields
from vibration_core.modelcard import ModelCard
from vibration_core.status import VersionRef
from vibration_core.target import ModelTarget
from vibration_core.validation import TERMINATION_MESSAGE_LIMIT, CompactReport, ExitCode
from vibration_infer import cli
from vibration_infer import outcome as outcome_module
from vibration_infer.cache import ModelCache
from vibration_infer.last_good import LAST_GOOD_FILENAME
from vibration_infer.outcome import Outcome, emit, one_line
from vibration_infer.settings import ValidateSettings
from vibration_infer.validate import validate
from vibration_testkit.cards import MODEL_ID, SAMPLE_RATE, WINDOW_LENGTH, TinyModel, card_with, for_artifact
from vibration_testkit.net import free_port, http_server, hung_server
from vibration_testkit.s3 import running_moto
from vibration_testkit.tiny_models import TINY, publish
from vibration_train.card import build_card
from vibration_train.fit import fit
from vibration_train.onnx_export import to_onnx
from vibration_train.simulator import simulate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from vibration_train.data import TrainingTable

    MakeSettings = Callable[..., ValidateSettings]


def run(settings: ValidateSettings) -> tuple[ExitCode, dict[str, Any], CompactReport]:
    out = io.StringIO()
    code = validate(settings, out=out)
    report = json.loads(out.getvalue())
    raw = termination_log(settings).read_bytes()
    assert len(raw) <= TERMINATION_MESSAGE_LIMIT
    return code, report, CompactReport.decode(raw)


def last_good_bytes(settings: ValidateSettings) -> bytes | None:
    path = settings.cache_dir / MODEL_ID / LAST_GOOD_FILENAME
    return path.read_bytes() if path.exists() else None


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return tmp_path / "registry"


def test_a_good_model_passes_and_becomes_last_good(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    settings = make_settings(model_uri=publish(registry, onnx_model).as_uri())
    code, report, compact = run(settings)
    assert code is ExitCode.PASSED, report["reason"]
    assert report["outcome"] == compact.outcome == "passed"
    assert report["source"] == "registry"
    assert report["backend"] == "onnxruntime:CPUExecutionProvider"
    assert report["evaluation"]["samples"] == compact.samples == 192
    assert compact.node == "node-a"
    assert compact.sha256 == onnx_model.card.artifact.sha256
    assert set(compact.class_recall) == set(onnx_model.card.labels)
    assert compact.p50_ms is not None
    assert compact.p99_ms is not None
    good = ModelCache(settings.cache_dir).last_good(MODEL_ID)
    assert good is not None
    assert (good.version, good.sha256) == ("v1", onnx_model.card.artifact.sha256)
    assert report["last_good"]["version"] == "v1"


# --- every failure class: its own exit code and reason, in stdout and the termination file ---


@pytest.fixture(scope="module")
def nine_feature_model(train_table: TrainingTable, onnx_model: TinyModel) -> TinyModel:
    """A model trained on nine features, behind a card that promises ten."""
    from sklearn.ensemble import GradientBoostingClassifier  # noqa: PLC0415

    estimator = GradientBoostingClassifier(n_estimators=3, max_depth=2, random_state=0)
    estimator.fit(train_table.features[:, :9], train_table.labels)
    data = to_onnx(estimator, 9).data
    return TinyModel(data, for_artifact(onnx_model.card, data))


def _renamed_labels(card: ModelCard) -> ModelCard:
    renamed = {label: label.upper() for label in card.labels}
    data = card.model_dump(mode="json")
    data["labels"] = [renamed[x] for x in card.labels]
    data["metrics"]["per_class"] = {renamed[k]: v for k, v in data["metrics"]["per_class"].items()}
    reference = data["reference"]
    reference["class_shares"] = {renamed[k]: v for k, v in reference["class_shares"].items()}
    reference["class_bin_counts"] = {renamed[k]: v for k, v in reference["class_bin_counts"].items()}
    return ModelCard.model_validate(data)


def _case(  # noqa: C901, PLR0911, PLR0912 - one flat table of cases reads better than thirteen helpers
    name: str, registry: Path, tmp_path: Path, model: TinyModel, nine: TinyModel
) -> dict[str, Any]:
    def uri(m: TinyModel) -> str:
        return publish(registry, m).as_uri()

    if name == "closed_port":
        return {"model_uri": f"http://127.0.0.1:{free_port()}/models/m/v1/model.onnx"}
    if name == "missing_file":
        return {"model_uri": (registry / "absent" / "model.onnx").as_uri()}
    if name == "expected_digest":
        return {"model_uri": uri(model), "expected_sha256": "0" * 64}
    if name == "tampered_artifact":
        artifact = publish(registry, model)
        artifact.write_bytes(model.data[:-1] + b"\0")
        return {"model_uri": artifact.as_uri()}
    if name == "corrupt_artifact":
        garbage = b"\x08\x07 this is not an ONNX graph " * 40
        return {"model_uri": uri(TinyModel(garbage, for_artifact(model.card, garbage)))}
    if name == "corrupt_card":
        artifact = publish(registry, model)
        (artifact.parent / "modelcard.json").write_text('{"model_id": "x"}')
        return {"model_uri": artifact.as_uri()}
    if name == "wrong_labels":
        return {"model_uri": uri(TinyModel(model.data, _renamed_labels(model.card)))}
    if name == "wrong_feature_count":
        return {"model_uri": uri(nine)}
    if name == "wrong_signal":
        return {
            "model_uri": uri(
                TinyModel(model.data, card_with(model.card, {"signal": {"sample_rate": 51200.0}}))
            )
        }
    if name == "recall_for_unknown_class":
        return {"model_uri": uri(model), "min_class_recall": {"spalling": 0.9}}
    if name == "below_threshold":
        return {"model_uri": uri(model), "min_accuracy": 0.999, "min_class_recall": {"normal": 0.999}}
    if name == "empty_test_dir":
        (tmp_path / "empty").mkdir()
        return {"model_uri": uri(model), "test_data": tmp_path / "empty"}
    if name == "test_data_in_another_unit":
        return {"model_uri": uri(TinyModel(model.data, card_with(model.card, {"signal": {"unit": "m/s^2"}})))}
    if name == "test_data_without_unit":
        return {"model_uri": uri(model), "test_data": _without_unit(tmp_path)}
    if name == "unreadable_test_data":
        (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
        return {"model_uri": uri(model), "test_data": tmp_path / "bad.parquet"}
    raise AssertionError(name)


CASES = [
    ("closed_port", ExitCode.CANNOT_FETCH, "refused"),
    ("missing_file", ExitCode.CANNOT_FETCH, "no such file"),
    ("expected_digest", ExitCode.DIGEST_MISMATCH, "expected 0000"),
    ("tampered_artifact", ExitCode.DIGEST_MISMATCH, "sha256 of file://"),
    ("corrupt_artifact", ExitCode.CANNOT_LOAD, "ONNX Runtime refused"),
    ("corrupt_card", ExitCode.CANNOT_LOAD, "model card file://"),  # its URI, not a staging path
    ("wrong_labels", ExitCode.BAD_TEST_DATA, "does not know: ['bearing_fault', 'imbalance', 'misalignment'"),
    ("wrong_feature_count", ExitCode.CONTRACT_MISMATCH, "input shape"),
    ("wrong_signal", ExitCode.CONTRACT_MISMATCH, "signal.sample_rate"),
    ("recall_for_unknown_class", ExitCode.CONTRACT_MISMATCH, "labels"),
    ("below_threshold", ExitCode.BELOW_THRESHOLD, "accuracy 0."),
    ("empty_test_dir", ExitCode.BAD_TEST_DATA, "without *.parquet"),
    ("unreadable_test_data", ExitCode.BAD_TEST_DATA, "bad.parquet"),
    (
        "test_data_in_another_unit",
        ExitCode.BAD_TEST_DATA,
        "samples in g, the model v1 was trained on samples in m/s^2",
    ),
    (
        "test_data_without_unit",
        ExitCode.BAD_TEST_DATA,
        "declares no unit (parquet schema metadata vibration.unit)",
    ),
]


def termination_log(settings: ValidateSettings) -> Path:
    assert settings.termination_log is not None  # the fixture names one
    return settings.termination_log


def _without_unit(tmp_path: Path) -> Path:
    """Labelled test windows in a file whose metadata says no unit."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - only the unit cases rewrite parquet

    data = simulate(16, seed=3, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH, machines=2)
    dataset.write_parquet(data, tmp_path / "with-unit.parquet", unit="g")
    path = tmp_path / "no-unit.parquet"
    pq.write_table(pq.read_table(tmp_path / "with-unit.parquet").replace_schema_metadata({}), path)
    return path


def test_test_data_in_g_validates_a_model_in_m_s2_when_conversion_is_allowed(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    # The model is the g model's bytes with a card that says m/s^2: fed converted
    # data (x 9.81) it sees every amplitude 9.81 times larger, so it must do worse
    # than the same model fed the data as it is, which proves the conversion ran
    # (and the default floor then refuses it: the gate catches a mis-scaled model).
    card = card_with(onnx_model.card, {"signal": {"unit": "m/s^2"}})
    settings = make_settings(
        model_uri=publish(registry, TinyModel(onnx_model.data, card)).as_uri(), convert_units=True
    )
    code, report, _ = run(settings)
    assert code is ExitCode.BELOW_THRESHOLD, report["reason"]
    assert report["test_data_unit"] == "m/s^2"
    same = make_settings(model_uri=publish(registry, onnx_model).as_uri())
    _, plain, _ = run(same)
    assert report["evaluation"]["accuracy"] < plain["evaluation"]["accuracy"]


@pytest.mark.parametrize(("case", "expected", "needle"), CASES, ids=[c[0] for c in CASES])
def test_each_failure_has_its_exit_code_and_reason(
    *,
    case: str,
    expected: ExitCode,
    needle: str,
    onnx_model: TinyModel,
    nine_feature_model: TinyModel,
    registry: Path,
    tmp_path: Path,
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(**_case(case, registry, tmp_path, onnx_model, nine_feature_model))
    code, report, compact = run(settings)
    assert code is expected, report["reason"]
    assert report["code"] == compact.code == int(expected)
    assert report["code_name"] == expected.name
    assert report["outcome"] == compact.outcome == "failed"
    assert needle in report["reason"]
    assert compact.reason == report["reason"]
    assert "\n" not in compact.reason
    assert last_good_bytes(settings) is None


def test_test_data_larger_than_its_bound_is_refused_before_it_is_read(
    onnx_model: TinyModel, registry: Path, tmp_path: Path, make_settings: MakeSettings
) -> None:
    """Held in memory at about 4.5 times its size, 256 MiB of parquet took the pod past its 512 Mi."""
    big = tmp_path / "big"
    big.mkdir()
    (big / "a.parquet").write_bytes(b"\0" * (3 << 19))  # 1.5 MiB, never parsed: the size alone refuses it
    settings = make_settings(
        model_uri=publish(registry, onnx_model).as_uri(), test_data=big, max_test_data_mb=1
    )
    code, report, _ = run(settings)
    assert code is ExitCode.BAD_TEST_DATA
    assert report["reason"].startswith(
        f"test data {big}: is 1.5 MiB of parquet, more than max_test_data_mb (1 MiB): "
    )


def test_an_unusable_cache_dir_says_what_the_node_needs(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings, tmp_path: Path
) -> None:
    # A file where the cache directory should be: unusable even for root, who runs the tests.
    # On a node it is usually a hostPath the kubelet created for root, unwritable by the pod.
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    settings = make_settings(model_uri=publish(registry, onnx_model).as_uri(), cache_dir=blocked)
    code, report, compact = run(settings)
    assert code is ExitCode.CANNOT_FETCH
    assert f"cache dir {blocked} is unusable" in report["reason"]
    assert f"writable by uid {os.getuid()}" in compact.reason


def test_hung_registry_fails_within_its_timeout(make_settings: MakeSettings) -> None:
    # The validator's own timeouts, not a default: two runs a second of read timeout apart differ
    # by two attempts' worth, whatever the machine's load adds to both.
    def elapsed(read_timeout_s: float) -> float:
        with hung_server() as port:
            settings = make_settings(
                model_uri=f"http://127.0.0.1:{port}/m/v1/model.onnx",
                connect_timeout_s=0.3,
                read_timeout_s=read_timeout_s,
                retries=1,
                backoff_s=0.05,
            )
            started = time.monotonic()
            code, report, _ = run(settings)
            took = time.monotonic() - started
        assert code is ExitCode.CANNOT_FETCH
        assert "read timeout" in report["reason"]
        assert "after 2 attempts" in report["reason"]
        return took

    short, long = elapsed(0.4), elapsed(1.4)
    assert 1.5 < long - short < 3.5, f"{short:.2f} s and {long:.2f} s: two attempts take 2 x 1 s longer"


# --- the cache: offline restarts and the last good version ---


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    with http_server(functools.partial(_QuietHandler, directory=str(root))) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *_args: object) -> None:
        pass


def test_offline_restart_validates_from_the_cache(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    publish(registry, onnx_model)
    digest = onnx_model.card.artifact.sha256
    with serve_directory(registry) as base:
        settings = make_settings(model_uri=f"{base}/{MODEL_ID}/v1/model.onnx", expected_sha256=digest)
        code, report, compact = run(settings)
        assert (code, report["source"], compact.source) == (ExitCode.PASSED, "registry", "registry")
    # The registry is gone (server stopped, files removed): a reboot must still validate.
    shutil.rmtree(registry)
    code, report, compact = run(settings)
    assert (code, report["source"]) == (ExitCode.PASSED, "cache"), report["reason"]
    assert compact.sha256 == digest
    assert compact.source == "cache"  # what the operator shows on the node's status
    # Without the digest the card must come from the registry: an honest CANNOT_FETCH.
    code, report, _ = run(make_settings(model_uri=settings.model_uri, cache_dir=settings.cache_dir))
    assert code is ExitCode.CANNOT_FETCH


def test_the_same_artifact_retried_under_a_new_version_is_validated_and_recorded_as_that_version(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    # The README's retry: v3 failed on this node, the same artifact is applied again as v3-r2
    # (here with the labels its card had wrong, mended). Its bytes come from the cache; its card
    # must not: the first card this digest came with named v3 and the wrong labels.
    digest = onnx_model.card.artifact.sha256
    wrong = TinyModel(onnx_model.data, _renamed_labels(card_with(onnx_model.card, {"version": "v3"})))
    first = make_settings(
        model_uri=publish(registry, wrong).as_uri(), expected_sha256=digest, expected_version="v3"
    )
    code, report, _ = run(first)
    assert code is not ExitCode.PASSED, report["reason"]
    uri = publish(registry, onnx_model, version="v3-r2").as_uri()
    retry = make_settings(
        model_uri=uri, expected_sha256=digest, expected_version="v3-r2", cache_dir=first.cache_dir
    )
    code, report, compact = run(retry)
    assert code is ExitCode.PASSED, report["reason"]
    assert (compact.version, compact.source) == ("v3-r2", "cache")
    cache = ModelCache(first.cache_dir)
    good = cache.last_good(MODEL_ID)
    assert good is not None
    assert good.version == "v3-r2"
    assert ModelCard.load(good.card).version == "v3-r2"
    # The old version's URI given again under a new version: its card (v3) is what the node
    # validates and serves, and it says so.
    with caplog.at_level("WARNING", logger="vibration_infer.resolve"):
        run(make_settings(model_uri=first.model_uri, expected_sha256=digest, expected_version="v3-r9"))
    said = [event_fields(r) for r in caplog.records if r.getMessage() == "card_version_differs"]
    assert [(x["version"], x["target"]) for x in said] == [("v3", "v3-r9")]
    # Offline now (the registry gone), the version it passed as comes from the cache again.
    shutil.rmtree(registry)
    code, report, compact = run(retry)
    assert (code, compact.version, compact.source) == (ExitCode.PASSED, "v3-r2", "cache"), report["reason"]
    # A version whose card cannot be fetched is not served under the cached card's name.
    code, report, _ = run(
        make_settings(
            model_uri=uri, expected_sha256=digest, expected_version="v3-r3", cache_dir=first.cache_dir
        )
    )
    assert code is ExitCode.CANNOT_FETCH, report["reason"]


def test_a_failed_validation_leaves_last_good_untouched(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    settings = make_settings(model_uri=publish(registry, onnx_model).as_uri())
    assert run(settings)[0] is ExitCode.PASSED
    before = last_good_bytes(settings)
    garbage = b"\x08\x07 not a graph " * 50
    broken = TinyModel(garbage, card_with(for_artifact(onnx_model.card, garbage), {"version": "v2"}))
    for overrides in (
        {"model_uri": publish(registry, broken).as_uri()},  # another digest that cannot load
        {"min_accuracy": 0.999},  # the good digest itself, now held to a bar it misses
    ):
        code, report, _ = run(settings.model_copy(update=overrides))
        assert code is not ExitCode.PASSED
        assert report["last_good"]["version"] == "v1"
        assert last_good_bytes(settings) == before
    assert ModelCache(settings.cache_dir).find(onnx_model.card.artifact.sha256) is not None


def test_eviction_keeps_the_last_good_digest(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    settings = make_settings(model_uri=publish(registry, onnx_model).as_uri(), cache_keep=1)
    assert run(settings)[0] is ExitCode.PASSED
    digests = []
    for version in ("v2", "v3"):
        garbage = f"not a model {version}".encode() * 30
        other = TinyModel(garbage, card_with(for_artifact(onnx_model.card, garbage), {"version": version}))
        digests.append(other.card.artifact.sha256)
        assert (
            run(settings.model_copy(update={"model_uri": publish(registry, other).as_uri()}))[0]
            is not ExitCode.PASSED
        )
        time.sleep(0.01)  # distinct mtimes order the entries
    cache = ModelCache(settings.cache_dir, keep=1)
    assert cache.find(onnx_model.card.artifact.sha256) is not None  # last good: never evicted
    assert cache.find(digests[0]) is None  # evicted
    assert cache.find(digests[1]) is not None  # the most recent


def test_a_corrupt_cache_entry_is_fetched_again(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    digest = onnx_model.card.artifact.sha256
    settings = make_settings(model_uri=publish(registry, onnx_model).as_uri(), expected_sha256=digest)
    assert run(settings)[0] is ExitCode.PASSED
    cached = settings.cache_dir / MODEL_ID / digest / "model.onnx"
    cached.write_bytes(b"bit rot")
    code, report, _ = run(settings)
    assert (code, report["source"]) == (ExitCode.PASSED, "registry")
    assert cached.read_bytes() == onnx_model.data


def test_tflite_on_a_node_without_edge_tpu(
    tflite_model: TinyModel, registry: Path, make_settings: MakeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    uri = publish(registry, tflite_model).as_uri()
    with caplog.at_level("WARNING", logger="vibration_infer.backends.edgetpu"):
        code, report, _ = run(make_settings(model_uri=uri, accelerator="coral", edgetpu_fallback="cpu"))
    assert code is ExitCode.PASSED, report["reason"]
    assert report["backend"] == "litert:cpu(edgetpu-fallback)"
    assert any(
        r.getMessage() == "edgetpu_unavailable" and event_fields(r)["fallback"] == "cpu"
        for r in caplog.records
    )
    strict = make_settings(
        model_uri=uri,
        accelerator="coral",
        edgetpu_fallback="fail",
        cache_dir=registry.parent / "cache-strict",
    )
    code, report, _ = run(strict)
    assert code is ExitCode.CANNOT_LOAD
    assert "Edge TPU unavailable" in report["reason"]
    assert report["last_good"] is None


def test_int8_model_is_validated_through_its_cards_input_transform(
    int8_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    settings = make_settings(model_uri=publish(registry, int8_model).as_uri(), min_accuracy=0.85)
    code, report, _ = run(settings)
    assert code is ExitCode.PASSED, report["reason"]
    # The same artifact without the transform in its card: quantized raw features, far below.
    bare = TinyModel(int8_model.data, card_with(int8_model.card, {"input_transform": None}))
    settings = make_settings(
        model_uri=publish(registry, bare, version="v2").as_uri(),
        min_accuracy=0.85,
        cache_dir=registry.parent / "cache-bare",
    )
    code, report, _ = run(settings)
    assert code is ExitCode.BELOW_THRESHOLD, report["reason"]


# --- S3 through moto, credentials from mounted files ---


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with running_moto() as moto:
        yield moto.endpoint


def test_validate_from_s3_with_key_files(
    onnx_model: TinyModel, moto_endpoint: str, tmp_path: Path, make_settings: MakeSettings
) -> None:
    access, secret = "validator-access", "validator-secret-never-printed"
    client = Minio(moto_endpoint.removeprefix("http://"), access_key=access, secret_key=secret, secure=False)
    client.make_bucket("models")
    prefix = f"{MODEL_ID}/v1"
    card = onnx_model.card.to_json().encode()
    client.put_object("models", f"{prefix}/model.onnx", io.BytesIO(onnx_model.data), len(onnx_model.data))
    client.put_object("models", f"{prefix}/modelcard.json", io.BytesIO(card), len(card))
    client._http.clear()  # close its sockets now: an unclosed one warns (an error here) when collected
    (tmp_path / "access").write_text(access + "\n")
    (tmp_path / "secret").write_text(secret)
    settings = make_settings(
        model_uri=f"s3://models/{prefix}/model.onnx",
        s3_endpoint=moto_endpoint,
        s3_region="us-east-1",
        s3_access_key_file=tmp_path / "access",
        s3_secret_key_file=tmp_path / "secret",
    )
    code, report, _ = run(settings)
    assert code is ExitCode.PASSED, report["reason"]
    code, report, _ = run(settings.model_copy(update={"model_uri": "s3://models/absent/model.onnx"}))
    assert code is ExitCode.CANNOT_FETCH
    assert "NoSuchKey" in report["reason"]
    assert secret not in json.dumps(report)
    assert secret not in termination_log(settings).read_text()


# --- the termination message and the CLI ---


def test_termination_report_stays_under_4_kib(
    onnx_model: TinyModel, registry: Path, tmp_path: Path, make_settings: MakeSettings
) -> None:
    deep = tmp_path.joinpath(*["d" * 100] * 30) / "windows.parquet"  # a reason of over 3 000 characters
    settings = make_settings(model_uri=publish(registry, onnx_model).as_uri(), test_data=deep)
    code, report, compact = run(settings)
    assert code is ExitCode.BAD_TEST_DATA
    assert len(report["reason"]) <= 600
    assert compact.reason.endswith("...")
    emit(
        Outcome(code=ExitCode.INTERNAL, reason=one_line("x" * 100_000)),
        settings.termination_log,
        out=io.StringIO(),
    )
    assert len(termination_log(settings).read_bytes()) <= TERMINATION_MESSAGE_LIMIT


def test_a_report_of_many_classes_stays_whole_json_under_4_kib() -> None:
    # 30 classes of 30 characters with a shadow run: 4 761 bytes, cut at 4 KiB it did not parse,
    # and the operator lost the node's reason with it.
    labels = [f"class_{i:02d}_" + "x" * 21 for i in range(30)]
    recall = dict.fromkeys(labels, 0.5)
    report = CompactReport(
        outcome="failed",
        code=ExitCode.BELOW_THRESHOLD,
        reason="shadow on live windows: agreement 0.40 < 0.95",
        class_recall=recall,
        champion=Figures(version="v1", accuracy=0.9, macro_f1=0.9, class_recall=recall),
        disagreements={f"{a}->{b}": 3 for a, b in itertools.pairwise(labels)},
    )
    data = report.encode()
    assert len(data) <= TERMINATION_MESSAGE_LIMIT
    back = CompactReport.decode(data)
    assert back.reason == report.reason
    assert back.code == ExitCode.BELOW_THRESHOLD


def test_unwritable_termination_log_is_not_fatal(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    settings = make_settings(
        model_uri=publish(registry, onnx_model).as_uri(), termination_log=registry / "no" / "dir"
    )
    assert validate(settings, out=io.StringIO()) is ExitCode.PASSED


def test_cli_flags_override_the_environment(
    *,
    onnx_model: TinyModel,
    registry: Path,
    test_parquet: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VIBRATION_MIN_ACCURACY", "0.9999")
    monkeypatch.setenv("NODE_NAME", "node-from-downward-api")
    argv = [
        "validate",
        f"--model-uri={publish(registry, onnx_model).as_uri()}",
        f"--test-data={test_parquet}",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--termination-log={tmp_path / 'term'}",
        "--min-class-recall=bearing_fault=0.0",
    ]
    assert cli.main(argv) == ExitCode.BELOW_THRESHOLD  # the environment's bar applies
    assert json.loads(capsys.readouterr().out)["node"] == "node-from-downward-api"
    assert cli.main([*argv, "--min-accuracy=0"]) == ExitCode.PASSED  # the flag wins


def test_cli_usage_error_exits_2_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    term = tmp_path / "term"
    assert cli.main(["validate", f"--termination-log={term}", "--accelerator=gpu"]) == ExitCode.USAGE
    assert json.loads(capsys.readouterr().out)["code_name"] == "USAGE"
    assert CompactReport.decode(term.read_bytes()).code == ExitCode.USAGE


def test_cli_unexpected_error_exits_internal(
    tmp_path: Path, test_parquet: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*_args: object, **_kwargs: object) -> ExitCode:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "validate", boom)
    term = tmp_path / "term"
    argv = [
        "validate",
        "--model-uri=file:///m.onnx",
        f"--test-data={test_parquet}",
        f"--termination-log={term}",
    ]
    assert cli.main(argv) == ExitCode.INTERNAL
    assert "disk on fire" in json.loads(capsys.readouterr().out)["reason"]
    assert CompactReport.decode(term.read_bytes()).code == ExitCode.INTERNAL


def test_settings_hide_credentials(make_settings: MakeSettings) -> None:
    settings = make_settings(model_uri="s3://b/k", s3_secret_key="hunter2-secret")  # noqa: S106 - a dummy
    assert "hunter2-secret" not in repr(settings)
    assert settings.s3_credentials() == (None, "hunter2-secret")
    assert "hunter2-secret" not in str(settings.model_dump())


def write_target(path: Path, model: TinyModel, uri: str, **extra: object) -> Path:
    target = {"name": "spindle", "version": model.card.version, "model_uri": uri}
    path.write_text(json.dumps(target | {"sha256": model.card.artifact.sha256} | extra))
    return path


def test_the_init_container_validates_its_target_and_falls_back_to_last_good(
    onnx_model: TinyModel, registry: Path, tmp_path: Path, test_parquet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`validate --target FILE --fallback-last-good`, exactly as the operator's init container runs it."""
    monkeypatch.setenv("VIBRATION_TEST_DATA", str(test_parquet))
    monkeypatch.setenv("VIBRATION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIBRATION_NODE_NAME", "node-a")
    monkeypatch.setenv("VIBRATION_RETRIES", "0")
    term = tmp_path / "term"
    args = ["validate", "--target", str(tmp_path / "target.json"), "--fallback-last-good"]
    args += [f"--termination-log={term}"]
    good_uri = publish(registry, onnx_model).as_uri()

    # No last good yet: a failing target fails the init container (nothing to fall back to).
    write_target(tmp_path / "target.json", onnx_model, good_uri, min_accuracy=1.0)
    assert cli.main(args) == ExitCode.BELOW_THRESHOLD
    assert ModelCache(tmp_path / "cache").last_good_of_slot("spindle") is None

    # The target passes: last good under its model id and under the VibrationModel's name.
    write_target(tmp_path / "target.json", onnx_model, good_uri)
    assert cli.main(args) == ExitCode.PASSED
    slot = ModelCache(tmp_path / "cache").last_good_of_slot("spindle")
    assert slot is not None
    assert slot.sha256 == onnx_model.card.artifact.sha256

    # A v2 whose bytes do not load, and one that cannot even be fetched: the report says failed
    # (the operator reads it), the exit code is 0 so the pod serves v1.
    garbage = b"\x08\x07 not a graph " * 50
    broken = TinyModel(garbage, card_with(for_artifact(onnx_model.card, garbage), {"version": "v2"}))
    unreachable = f"http://127.0.0.1:{free_port()}/spindle/v3/model.onnx"
    for uri, digest, code in (
        (publish(registry, broken).as_uri(), broken.card.artifact.sha256, ExitCode.CANNOT_LOAD),
        (unreachable, "0" * 64, ExitCode.CANNOT_FETCH),
    ):
        write_target(tmp_path / "target.json", broken, uri, sha256=digest)
        capsys_out = io.StringIO()
        monkeypatch.setattr("sys.stdout", capsys_out)
        assert cli.main(args) == ExitCode.PASSED
        report = json.loads(capsys_out.getvalue())
        assert report["fallback"]["version"] == "v1"
        compact = CompactReport.decode(term.read_bytes())
        assert (compact.outcome, compact.code) == ("failed", code)
        assert ModelCache(tmp_path / "cache").last_good_of_slot("spindle") == slot

    # Without the flag the same failure is the init container's exit code.
    assert cli.main(args[:-2] + args[-1:]) == ExitCode.CANNOT_FETCH

    # A bug in the validation itself still leaves the node its last good version.
    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("vibration_infer.validate.run_validation", crash)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert cli.main(args) == ExitCode.PASSED
    compact = CompactReport.decode(term.read_bytes())
    assert (compact.outcome, compact.code, compact.reason) == (
        "failed",
        ExitCode.INTERNAL,
        "internal error: RuntimeError: a bug",
    )


def relabelled(model: TinyModel, version: str) -> TinyModel:
    """The same trees under other bytes (another doc string): a model of its own digest that passes too."""
    graph = onnx.load_from_string(model.data)
    graph.doc_string = f"spindle {version}"
    data = graph.SerializeToString()
    return TinyModel(data, for_artifact(model.card, data, version=version))


def test_vibrationmodels_of_one_name_in_two_namespaces_keep_their_own_last_good_on_a_node(
    onnx_model: TinyModel, registry: Path, tmp_path: Path, test_parquet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staging hall's `spindle` on production's gateways: one node cache, two last good versions.

    Production's pod falls back to what production promoted there, never to what staging did;
    a slot with no record of its own reads the one its pod wrote before namespaces (an upgrade).
    """
    monkeypatch.setenv("VIBRATION_TEST_DATA", str(test_parquet))
    monkeypatch.setenv("VIBRATION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIBRATION_RETRIES", "0")
    target = tmp_path / "target.json"
    args = [
        "validate",
        "--target",
        str(target),
        "--fallback-last-good",
        f"--termination-log={tmp_path / 'term'}",
    ]
    staged = relabelled(onnx_model, "v2")
    unreachable = f"http://127.0.0.1:{free_port()}/spindle/v3/model.onnx"
    cache = ModelCache(tmp_path / "cache")

    def validate_in(namespace: str | None, model: TinyModel, uri: str, **extra: object) -> dict[str, Any]:
        if namespace is None:
            monkeypatch.delenv("POD_NAMESPACE", raising=False)
        else:
            monkeypatch.setenv("POD_NAMESPACE", namespace)
        write_target(target, model, uri, **extra)
        out = io.StringIO()
        monkeypatch.setattr("sys.stdout", out)
        assert cli.main(args) == ExitCode.PASSED
        report: dict[str, Any] = json.loads(out.getvalue())
        return report

    # Before the upgrade: a pod with no namespace records v1 under the name alone.
    validate_in(None, onnx_model, publish(registry, onnx_model).as_uri())
    # Production, upgraded, has no record of its own yet: its failing target falls back to that one.
    assert validate_in("production", staged, unreachable, sha256="0" * 64)["fallback"]["version"] == "v1"
    validate_in("production", onnx_model, publish(registry, onnx_model).as_uri())
    validate_in("staging", staged, publish(registry, staged).as_uri())  # staging promotes v2 on the node
    report = validate_in("production", staged, unreachable, sha256="0" * 64)
    assert (report["fallback"]["version"], report["fallback"]["sha256"]) == (
        "v1",
        onnx_model.card.artifact.sha256,
    )
    production, staging = (
        cache.last_good_of_slot("production/spindle"),
        cache.last_good_of_slot("staging/spindle"),
    )
    assert production is not None
    assert staging is not None
    assert (production.version, staging.version) == ("v1", "v2")
    assert staging.sha256 == staged.card.artifact.sha256
    assert sorted(
        p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").glob(".slots/**/*.json")
    ) == [
        ".slots/production/spindle.json",
        ".slots/spindle.json",
        ".slots/staging/spindle.json",
    ]
    # Eviction keeps every slot's last good entry: v1 is production's alone once the old record goes.
    (tmp_path / "cache" / ".slots" / "spindle.json").unlink()
    assert ModelCache(tmp_path / "cache", keep=0).evict(MODEL_ID) == []
    assert cache.find(onnx_model.card.artifact.sha256) is not None
    # Staging applies production's very artifact as v1-r2: its card is kept for that version only.
    retried = TinyModel(onnx_model.data, card_with(onnx_model.card, {"version": "v1-r2"}))
    validate_in("staging", retried, publish(registry, retried).as_uri())
    production = cache.last_good_of_slot("production/spindle")
    staging = cache.last_good_of_slot("staging/spindle")
    assert production is not None
    assert staging is not None
    assert (ModelCard.load(production.card).version, ModelCard.load(staging.card).version) == ("v1", "v1-r2")


def test_the_report_names_the_last_good_version_of_its_own_slot(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    """Staging promoted v2 of the same model id on the node last: production's report still says v1."""
    staged = relabelled(onnx_model, "v2")
    for slot, model in (("production/spindle", onnx_model), ("staging/spindle", staged)):
        settings = make_settings(model_uri=publish(registry, model).as_uri(), slot=slot)
        assert run(settings)[0] is ExitCode.PASSED
    failing = make_settings(model_uri=settings.model_uri, slot="production/spindle", min_accuracy=1.0)
    code, report, _ = run(failing)
    assert code is ExitCode.BELOW_THRESHOLD
    assert (report["last_good"]["version"], report["last_good"]["sha256"]) == (
        "v1",
        onnx_model.card.artifact.sha256,
    )


def test_a_slot_is_a_namespace_and_a_name_and_never_a_path_of_its_own(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    assert cache.last_good_of_slot("production/spindle") is None
    for slot in ("../spindle", "production/../../etc/passwd", "Production/spindle", "a/b/c", ""):
        with pytest.raises(ValueError, match="is not \\[namespace/\\]name"):
            cache.last_good_of_slot(slot)
    with pytest.raises(ValidationError, match="slot"):
        ValidateSettings(model_uri="file:///m/model.onnx", slot="../spindle")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="namespace"):
        ValidateSettings(model_uri="file:///m/model.onnx", namespace="Hall_A")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "Invalid JSON"),
        ('{"name": "spindle", "version": "v1"}', "model_uri: Field required"),
        ('{"name": "Spindle", "version": "v1", "model_uri": "file:///m"}', "name: String should match"),
        ('{"name": "s", "version": "v1", "model_uri": "ftp://m/model.onnx"}', "model_uri must start with"),
    ],
    ids=["not-json", "no-uri", "bad-name", "bad-scheme"],
)
def test_a_bad_target_file_is_a_usage_error_naming_the_field(
    content: str, message: str, make_settings: MakeSettings, tmp_path: Path
) -> None:
    path = tmp_path / "target.json"
    path.write_text(content)
    code, report, compact = run(make_settings(target=path))
    assert code is ExitCode.USAGE
    assert message in compact.reason
    assert report["outcome"] == "failed"


def test_without_a_termination_log_flag_only_kubernetes_file_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kubernetes_file = tmp_path / "termination-log"
    monkeypatch.setattr(outcome_module, "DEFAULT_TERMINATION_LOG", kubernetes_file)
    outcome = Outcome(code=ExitCode.USAGE, reason="bad flag")
    emit(outcome, None, out=io.StringIO())
    assert not kubernetes_file.exists()  # outside a container: nothing is created
    kubernetes_file.touch()  # what the kubelet mounts into every container
    emit(outcome, None, out=io.StringIO())
    assert CompactReport.decode(kubernetes_file.read_bytes()).reason == "bad flag"
    named = tmp_path / "named"
    emit(outcome, named, out=io.StringIO())
    assert named.is_file()


# --- the promotion gate on the node: champion against challenger ---------------------------


@pytest.fixture(scope="module")
def weak_on_faults(train_table: TrainingTable) -> TinyModel:
    """A candidate taught that the milder bearing faults are normal: worse on that one class."""
    kurtosis = train_table.features[:, FEATURE_NAMES.index("kurtosis")]
    faults = train_table.labels == "bearing_fault"
    mild = faults & (kurtosis < np.quantile(kurtosis[faults], 0.3))
    labels = np.where(mild, "normal", train_table.labels)
    table = dataclasses.replace(train_table, labels=labels)
    result = fit(table, TINY)
    exported = to_onnx(result.estimator, 10)
    card = build_card(
        table=table, result=result, config=TINY, model=exported, model_id=MODEL_ID, version="v2"
    )
    return TinyModel(exported.data, card)


def test_a_candidate_that_loses_recall_on_one_class_is_refused_against_the_champion(
    onnx_model: TinyModel, weak_on_faults: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    champion = make_settings(model_uri=publish(registry, onnx_model).as_uri())
    assert run(champion)[0] is ExitCode.PASSED  # served here: in the node cache, and last good
    settings = make_settings(
        model_uri=publish(registry, weak_on_faults).as_uri(),
        champion_sha256=onnx_model.card.artifact.sha256,
        min_macro_f1=0.0,  # the floor is not what this is about
    )
    code, report, compact = run(settings)
    assert code is ExitCode.BELOW_THRESHOLD, report["reason"]
    assert compact.reason_code == "Regressed"
    assert compact.champion is not None
    assert compact.champion.version == "v1"
    lost = compact.champion.class_recall["bearing_fault"] - compact.class_recall["bearing_fault"]
    assert lost > 0.1, compact  # the premise: the candidate really is worse on that class
    assert "recall[bearing_fault]" in compact.reason
    assert "(regression)" in compact.reason
    failed = [c for c in compact.checks if not c.passed]
    # The one class is named; no other class's recall is (macro F1 may follow the class down).
    assert [c.figure for c in failed if c.figure.startswith("recall")] == ["recall[bearing_fault]"]
    # Without the champion, the same candidate passes this floor: the comparison refused it.
    alone = make_settings(
        model_uri=publish(registry, weak_on_faults).as_uri(),
        min_macro_f1=0.0,
        min_class_recall=dict.fromkeys(onnx_model.card.labels, 0.0),
    )
    assert run(alone)[0] is ExitCode.PASSED


def test_the_champion_is_evaluated_under_the_card_it_passed_under_in_its_slot(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    # v3 came with its labels wrong and failed; the same bytes passed as v3-r2, labels mended. The
    # entry's own card is still the first (v3's); the target's champion is v3-r2, under its card.
    digest, slot = onnx_model.card.artifact.sha256, "production/spindle"
    wrong = TinyModel(onnx_model.data, _renamed_labels(card_with(onnx_model.card, {"version": "v3"})))
    first = make_settings(model_uri=publish(registry, wrong).as_uri(), expected_version="v3", slot=slot)
    assert run(first)[0] is not ExitCode.PASSED
    uri = publish(registry, onnx_model, version="v3-r2").as_uri()
    retry = make_settings(model_uri=uri, expected_sha256=digest, expected_version="v3-r2", slot=slot)
    assert run(retry)[0] is ExitCode.PASSED
    candidate = publish(registry, relabelled(onnx_model, "v4")).as_uri()
    settings = make_settings(model_uri=candidate, champion_sha256=digest, champion_version="v3-r2", slot=slot)
    code, report, compact = run(settings)
    assert code is ExitCode.PASSED, report["reason"]
    assert compact.champion is not None, report.get("champion")
    assert compact.champion.version == "v3-r2"


def test_the_champion_and_the_thresholds_are_in_the_report(
    onnx_model: TinyModel, registry: Path, make_settings: MakeSettings
) -> None:
    run(make_settings(model_uri=publish(registry, onnx_model).as_uri()))
    other = TinyModel(onnx_model.data, card_with(onnx_model.card, {"version": "v1b"}))
    code, report, compact = run(
        make_settings(model_uri=publish(registry, other).as_uri(), champion_sha256="0" * 64)
    )
    assert code is ExitCode.PASSED, report["reason"]
    assert compact.reason_code == "Passed"
    assert "not in this node's cache: no comparison" in report["champion"]
    floors = {c.figure: c.threshold for c in compact.checks if c.kind == "floor"}
    assert floors["macro_f1"] == 0.625
    assert floors["recall[bearing_fault]"] == 0.4375
    assert "default floor" in report["policy"]["min_macro_f1"]


def test_a_targets_champion_reaches_the_settings_as_its_digest_and_version(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    champion = VersionRef(version="v3-r2", sha256="a" * 64)
    target = ModelTarget(name="spindle", version="v4", model_uri="file:///m.onnx", champion=champion)
    settings = make_settings(target=tmp_path / "target.json").for_target(target)
    assert (settings.champion_sha256, settings.champion_version) == ("a" * 64, "v3-r2")
    assert (settings.expected_version, settings.slot) == ("v4", "spindle")
