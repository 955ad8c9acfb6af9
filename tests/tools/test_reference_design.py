"""The bench's baseline is the reference design itself: its formulas, and its answers over a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import reference_design
from vibration_core.raw import encode_raw_json
from vibration_testkit.reference_pipeline import (
    CLASSES,
    SAMPLE_RATE,
    reference_model,
    reference_pipeline_features,
)

if TYPE_CHECKING:
    from pathlib import Path

    from vibration_testkit.mosquitto import Mosquitto


def _windows(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    t = np.arange(4096) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * rng.uniform(20, 8000, size=(n, 1)) * t)
    return (tone * rng.uniform(0.1, 2.0, size=(n, 1)) + rng.normal(scale=0.05, size=(n, 4096))).astype(
        np.float32
    )


def test_the_reference_design_computes_the_reference_pipelines_features() -> None:
    for window in _windows(5):
        ours = reference_design.features(window.astype(np.float64), SAMPLE_RATE)
        np.testing.assert_allclose(ours, reference_pipeline_features(window, SAMPLE_RATE), rtol=1e-12)


@pytest.mark.integration
def test_the_reference_design_answers_each_json_window_as_onnx_runtime_does(
    broker: Mosquitto, tmp_path: Path
) -> None:
    windows = _windows(12)
    features = np.array([reference_pipeline_features(w, SAMPLE_RATE) for w in windows], dtype=np.float32)
    model = tmp_path / "model.onnx"
    model.write_bytes(reference_model(features, np.arange(12) % 4, n_estimators=5))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"features": features})[1]
    answers: dict[int, dict[str, object]] = {}
    done = threading.Event()

    def on_message(_client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        answer = json.loads(message.payload)
        answers[answer["timestamp_ns"]] = answer
        if len(answers) == len(windows):
            done.set()

    front = subprocess.Popen(
        [sys.executable, reference_design.__file__, "front", broker.host, str(broker.port), "hall",
         str(model),
         *CLASSES],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert front.stdout is not None
        assert front.stdout.readline().strip() == b"ready"
        listener = paho.Client(CallbackAPIVersion.VERSION2, client_id="listener")
        listener.on_message = on_message
        listener.connect(broker.host, broker.port)
        listener.subscribe("hall/machines/+/predictions", qos=1)
        listener.loop_start()
        sensor = paho.Client(CallbackAPIVersion.VERSION2, client_id="sensor")
        sensor.connect(broker.host, broker.port)
        sensor.loop_start()
        for i, window in enumerate(windows):
            sensor.publish("hall/machines/cnc-01/raw", encode_raw_json(window, SAMPLE_RATE, i), qos=1)
        assert done.wait(30), f"{len(answers)} of {len(windows)} answered"
        for client in (sensor, listener):
            client.disconnect()
            client.loop_stop()
    finally:
        front.terminate()
        front.communicate(timeout=30)
    for i in range(len(windows)):
        answer = answers[i]
        assert answer["machine"] == "cnc-01"
        assert answer["prediction"] == CLASSES[int(np.argmax(expected[i]))]
        assert answer["probabilities"] == pytest.approx(dict(zip(CLASSES, expected[i].tolist(), strict=True)))
