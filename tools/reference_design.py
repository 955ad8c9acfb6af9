"""The reference design, faithfully, as the baseline `make bench` measures serve against.

What the people moving here run today (a Node-RED flow and an ONNX inference
server), restated as two processes:

- ``front``: the flow. An MQTT subscriber (paho, QoS 1) on the hall's raw
  topics; for each window it parses the JSON payload, computes the ten
  features of that one window with numpy in float64 as the reference's
  formulas write them (kurtosis ``(m4 / n) / std**4``), writes one JSON line
  ``{"features": [...]}`` to the inference server, reads its one-line answer
  and publishes the prediction (QoS 1). Node-RED runs this as JavaScript
  function nodes on one event loop; here it is Python on paho's one network
  thread, one message at a time, which is the same shape. The reference's
  sensors send the band energies precomputed; windows from this project's
  sensors do not, so the front computes them too (as the reference's own
  Python ``extract_features`` does).
- ``server``: the inference server. ONE persistent Python process that reads a
  JSON line from stdin, runs ONNX Runtime (CPU provider, one thread) on one
  row, and writes one JSON line back: prediction, confidence, probabilities by
  label from the list it was given.

It imports nothing from this project: it is the design being replaced, not a
variant of it. Run ``front`` (it starts its ``server``):

    python tools/reference_design.py front MQTT_HOST MQTT_PORT TOPIC_PREFIX MODEL.onnx LABEL [LABEL ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import paho.mqtt.client as paho

BANDS = ((10.0, 200.0), (200.0, 2000.0), (2000.0, 10000.0))


def features(x: np.ndarray[Any, Any], sample_rate: float) -> list[float]:
    """The reference's ten features of one window, float64, as its code writes them."""
    n = len(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        rms = np.sqrt(np.mean(x**2))
        peak = np.max(np.abs(x))
        mean = np.mean(x)
        std = np.std(x)
        kurtosis = (np.sum((x - mean) ** 4) / n) / std**4
        spectrum = np.abs(np.fft.rfft(x)) * 2 / n
        freqs = np.fft.rfftfreq(n, d=1 / sample_rate)
        energies = [float(np.sum(spectrum[(freqs >= lo) & (freqs < hi)] ** 2)) for lo, hi in BANDS]
        total = sum(energies)
        ratios = [e / total for e in energies]
    return [float(rms), float(peak), float(peak / rms), float(kurtosis), *energies, *ratios]


def server(model: str, labels: list[str]) -> None:
    """The inference server: one JSON line in, one row through ONNX Runtime, one JSON line out."""
    import onnxruntime as ort  # noqa: PLC0415 - the server process only

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for line in sys.stdin:
        row = np.asarray([json.loads(line)["features"]], dtype=np.float32)
        _, probabilities = session.run(None, {name: row})
        p = [float(v) for v in probabilities[0]]
        best = max(range(len(p)), key=p.__getitem__)
        answer = {
            "prediction": labels[best],
            "confidence": p[best],
            "probabilities": dict(zip(labels, p, strict=True)),
        }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class Front:
    """The flow: subscribe, feature, ask the server, publish."""

    def __init__(self, host: str, port: int, prefix: str, model: str, labels: list[str]) -> None:
        import paho.mqtt.client as paho  # noqa: PLC0415 - the front process only
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415 - the same

        self.prefix = prefix
        self.server = subprocess.Popen(
            [sys.executable, __file__, "server", model, *labels],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.to_server: IO[str] = self.server.stdin  # type: ignore[assignment]
        self.from_server: IO[str] = self.server.stdout  # type: ignore[assignment]
        self.ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="reference-flow")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, port)

    def _on_connect(self, client: paho.Client, *_: object) -> None:
        client.subscribe(f"{self.prefix}/machines/+/raw", qos=1)
        self.ready.set()

    def _on_message(self, client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        machine = message.topic.split("/")[-2]
        window = json.loads(message.payload)
        x = np.asarray(window["samples"], dtype=np.float64)
        self.to_server.write(json.dumps({"features": features(x, float(window["sample_rate"]))}) + "\n")
        self.to_server.flush()
        answer = json.loads(self.from_server.readline())
        answer |= {"machine": machine, "timestamp_ns": window["timestamp_ns"]}
        client.publish(f"{self.prefix}/machines/{machine}/predictions", json.dumps(answer), qos=1)

    def run(self) -> None:
        """Serve until killed."""
        self.client.loop_start()
        self.ready.wait(30)
        print("ready", flush=True)
        self.server.wait()


def main(argv: list[str]) -> int:
    """``front HOST PORT PREFIX MODEL LABEL...`` or ``server MODEL LABEL...``."""
    if argv[:1] == ["server"]:
        server(argv[1], argv[2:])
        return 0
    if argv[:1] == ["front"]:
        Front(argv[1], int(argv[2]), argv[3], argv[4], argv[5:]).run()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
