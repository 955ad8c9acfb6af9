"""The reference pipeline's models and feature tables, served here from raw windows over a real Mosquitto.

People move here with what the reference pipeline made (`vibration_testkit.reference_pipeline`
restates its feature formulas and its model recipe). Two paths, end to end:

- its ONNX model, trained elsewhere on its float64 features: ``vibration-train
  import`` -> ``publish`` to a file:// registry -> ``vibration-infer
  validate`` on a node's labelled windows -> ``serve``;
- its features table (float64, no unit in the file): ``vibration-train fit
  --unit g`` -> ``serve``.

Either way the node computes the features itself from the raw windows it
receives over MQTT, and each answer must be what the model says offline on
the reference formulas' features of the same window: the same label, every
probability within 1e-5.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from vibration_core import dataset
from vibration_core.features import FEATURE_NAMES
from vibration_core.modelcard import CARD_FILENAME
from vibration_core.units import METADATA_UNIT
from vibration_core.validation import ExitCode
from vibration_infer import cli as infer_cli
from vibration_testkit.reference_pipeline import (
    CLASSES,
    SAMPLE_RATE,
    WINDOW_LENGTH,
    reference_features,
    reference_model,
)
from vibration_testkit.serving import SLOW, Collector, Publisher, serve_settings, serving, wait_until
from vibration_train.cli import app as train_app
from vibration_train.simulator import SimulatedData, simulate

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import numpy.typing as npt

    from vibration_infer.serve.settings import ServeSettings
    from vibration_testkit.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

TOLERANCE = 1e-5
"""Largest difference between a served probability and the offline one."""


def windows(n: int, seed: int) -> SimulatedData:
    return simulate(n, seed=seed, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH, machines=4)


def train(*args: object) -> None:
    """Run ``vibration-train ARGS``, failing the test on a non-zero exit."""
    result = CliRunner().invoke(train_app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output


def offline(
    model: Path, features: npt.NDArray[np.float64], labels: Sequence[str] | None
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """The model's labels (int64 ones named by `labels`) and probabilities, by ONNX Runtime alone."""
    session = ort.InferenceSession(model.read_bytes(), providers=["CPUExecutionProvider"])
    label_output, probabilities = session.run(None, {"features": features.astype(np.float32)})
    said = np.asarray(label_output)
    named = [labels[i] for i in said.tolist()] if labels is not None else said.astype(str).tolist()
    return named, np.asarray(probabilities, dtype=np.float32)


def assert_served_as_offline(
    broker: Mosquitto,
    settings: ServeSettings,
    expected: tuple[list[str], npt.NDArray[np.float32]],
    stream: SimulatedData,
) -> None:
    """Serve, send `stream` as raw float32 windows over MQTT, hold every answer to `expected`."""
    with serving(settings) as app:
        model = app.serving()
        assert model is not None
        collector = Collector(broker)
        sensor = Publisher(broker)
        sensor.send_all(stream)
        wait_until(lambda: collector.count("predictions") >= len(stream), SLOW, "every prediction")
        received = {(p.machine, p.timestamp_ns): p for p in collector.predictions()}
        errors = collector.errors()
        sensor.close()
        collector.close()
    assert errors == []
    labels, probabilities = expected
    served = [received[(str(m), int(t))] for m, t in zip(stream.machine, stream.timestamp_ns, strict=True)]
    assert [p.label for p in served] == labels
    for p, row in zip(served, probabilities, strict=True):
        assert p.model_version == model.card.version
        assert abs(p.confidence - float(row.max())) <= TOLERANCE
        assert (
            max(abs(p.probabilities[label] - float(row[i])) for i, label in enumerate(model.card.labels))
            <= TOLERANCE
        )


def test_the_reference_pipelines_model_is_imported_published_validated_and_served_as_it_predicts(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # Trained elsewhere: the reference recipe on the reference formulas' features, int64 labels 0..3.
    history = windows(400, seed=31)
    model = tmp_path / "reference.onnx"
    y = np.array([CLASSES.index(str(label)) for label in history.labels], dtype=np.int64)
    model.write_bytes(reference_model(reference_features(history.windows, SAMPLE_RATE), y))
    labelled = tmp_path / "labelled.parquet"
    dataset.write_parquet(windows(160, seed=32), labelled, unit="g")

    imported = tmp_path / "imported"
    train("import", model, "--labels", ",".join(CLASSES), "--data", labelled, "--out", imported)
    registry = tmp_path / "registry"
    train("publish", imported, "--registry", registry.as_uri())
    published = registry / "spindle-classifier" / "v1"
    assert (published / "model.onnx").read_bytes() == model.read_bytes()

    node_test = tmp_path / "node" / "test.parquet"
    dataset.write_parquet(windows(96, seed=33), node_test, unit="g")
    report = tmp_path / "node" / "termination-log"
    args = ["validate", "--model-uri", (published / "model.onnx").as_uri(), "--test-data", node_test]
    args += ["--cache-dir", tmp_path / "node" / "cache", "--termination-log", report, "--node-name", "node-a"]
    assert infer_cli.main([str(arg) for arg in [*args, "--min-accuracy", "0.5"]]) == ExitCode.PASSED
    assert json.loads(report.read_text())["outcome"] == "passed"

    # Served as a pod serves it: the version its init container validated, from the node's cache.
    settings = serve_settings(
        broker,
        tmp_path,
        artifact=None,
        card=None,
        test_data=node_test,
        model_id="spindle-classifier",
        cache_dir=tmp_path / "node" / "cache",
    )
    stream = windows(120, seed=34)
    expected = offline(model, reference_features(stream.windows, SAMPLE_RATE), CLASSES)
    assert_served_as_offline(broker, settings, expected, stream)


def test_a_reference_features_table_is_fitted_here_and_serves_raw_windows_as_it_predicts(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # The reference pipeline's table: float64 features by its formulas, a label, no unit in the file.
    history = windows(400, seed=41)
    features = reference_features(history.windows, SAMPLE_RATE)
    table = pa.table(
        {**{name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}, "label": history.labels}
    )
    pq.write_table(table, tmp_path / "features.parquet")
    assert METADATA_UNIT not in (pq.read_schema(tmp_path / "features.parquet").metadata or {})

    fitted = tmp_path / "fitted"
    signal = ("--sample-rate", SAMPLE_RATE, "--window-length", WINDOW_LENGTH, "--unit", "g")
    train("fit", "--data", tmp_path / "features.parquet", "--out", fitted, *signal, "--n-estimators", 30)
    node_test = tmp_path / "node" / "test.parquet"
    dataset.write_parquet(windows(96, seed=43), node_test, unit="g")

    settings = serve_settings(
        broker, tmp_path, artifact=fitted / "model.onnx", card=fitted / CARD_FILENAME, test_data=node_test
    )
    stream = windows(120, seed=44)
    expected = offline(fitted / "model.onnx", reference_features(stream.windows, SAMPLE_RATE), None)
    assert_served_as_offline(broker, settings, expected, stream)
