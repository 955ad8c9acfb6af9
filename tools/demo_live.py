"""The live part of `make demo`: a node serving a hall over a real broker, a hot swap, a refusal.

One gateway (node ``edge-1``) as the operator runs it, minus Kubernetes:
its target file (`vibration_core.target`), the init container
(``vibration-infer validate --target ... --fallback-last-good``), then
``vibration-infer serve`` watching that target file, against an embedded
Mosquitto. Four simulated machines stream windows: ``m2`` develops a bearing
fault, ``m3``'s sensor mount loosens (three times the broadband noise: the
drift), the others run normally. While they stream, the target moves to v2
(a hot swap) and then to v3, trained on shuffled labels, which validation
refuses while v2 keeps serving. Every window must be answered exactly once.

Longer than the others: it is one scripted story (broker, serve, a model swap,
drift) told step by step for a person watching; its steps share the running
processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from rich.console import Console
from rich.live import Live
from rich.table import Table

from vibration_core.messages import Alert, ModelStatus, Prediction
from vibration_core.modelcard import ModelCard
from vibration_core.raw import encode_raw_float32
from vibration_core.status import VersionRef
from vibration_core.target import ModelTarget
from vibration_core.topics import TopicLayout
from vibration_testkit.mosquitto import Mosquitto
from vibration_testkit.net import free_port
from vibration_testkit.processes import stop
from vibration_train.simulator import Drift, make_machines, simulate_machine_stream

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PREFIX = "factory/hall-a"
LAYOUT = TopicLayout(PREFIX)
RATE = 25600.0
MODEL = "spindle-classifier"
console = Console()


class LiveError(Exception):
    """The live story did not go as it must."""


@dataclass
class Hall:
    """What the hall's MQTT topics carried, as a subscriber saw it."""

    predictions: list[Prediction] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    statuses: list[ModelStatus] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        """Sort a message by its topic's leaf."""
        leaf, payload = message.topic.rsplit("/", 1)[-1], bytes(message.payload)
        with self.lock:
            if leaf == "predictions":
                self.predictions.append(Prediction.decode(payload))
            elif leaf == "alerts":
                self.alerts.append(Alert.decode(payload))
            elif leaf == "status":
                self.statuses.append(ModelStatus.decode(payload))

    def last_status(self) -> ModelStatus | None:
        """The newest status the pod published."""
        with self.lock:
            return self.statuses[-1] if self.statuses else None


def mqtt_client(broker: Mosquitto, client_id: str) -> paho.Client:
    """A connected MQTT v5 client with its network loop running."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    if not connected.wait(30):
        raise LiveError("cannot connect to the embedded broker")
    return client


def machine_streams(windows_per_machine: int, seed: int) -> list[tuple[str, int, bytes]]:
    """The hall's windows, interleaved by time: m2 turns bearing_fault halfway, m3 drifts."""
    profiles = make_machines(4, np.random.default_rng(seed))
    half = windows_per_machine // 2
    scripts = [
        (["normal"] * windows_per_machine, None),
        (["normal"] * half + ["bearing_fault"] * (windows_per_machine - half), None),
        (["normal"] * windows_per_machine, Drift(noise_scale=3.0)),
        (["normal"] * windows_per_machine, None),
    ]
    per_machine = []
    for i, (profile, (labels, drift)) in enumerate(zip(profiles, scripts, strict=True)):
        data = simulate_machine_stream(profile, labels, seed=seed + i, sample_rate=RATE, drift=drift)
        per_machine.append(
            [
                (f"m{i + 1}", int(ts), encode_raw_float32(window, RATE, int(ts)))
                for ts, window in zip(data.timestamp_ns, data.windows, strict=True)
            ]
        )
    return [row for rows in zip(*per_machine, strict=True) for row in rows]


def write_target(path: Path, registry: Path, version: str, champion: str | None = None) -> ModelTarget:
    """Point the node at `version` in the file registry, as the operator's ConfigMap would.

    No thresholds: the default gate applies. `champion` is the version the hall serves (the
    operator's active one), which the candidate is held to on the node.
    """
    card = ModelCard.load(registry / MODEL / version / "modelcard.json")
    active = ModelCard.load(registry / MODEL / champion / "modelcard.json") if champion else None
    target = ModelTarget(
        name=MODEL,
        version=version,
        model_uri=(registry / MODEL / version / card.artifact.filename).as_uri(),
        sha256=card.artifact.sha256,
        champion=VersionRef(version=active.version, sha256=active.artifact.sha256) if active else None,
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(target.model_dump_json(exclude_none=True))
    tmp.replace(path)  # one atomic change, as kubelet swaps a ConfigMap's symlink
    return target


def node_env(node: Path, broker: Mosquitto, port: int) -> dict[str, str]:
    """The pod's environment, as the operator's builder sets it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBRATION_")}
    return env | {
        "VIBRATION_TARGET_FILE": str(node / "target.json"),
        "VIBRATION_CACHE_DIR": str(node / "cache"),
        "VIBRATION_TEST_DATA": str(node / "testdata"),
        "VIBRATION_NODE_NAME": "edge-1",
        "VIBRATION_MQTT_URL": broker.url,
        "VIBRATION_TOPIC_PREFIX": PREFIX,
        "VIBRATION_HTTP_HOST": "127.0.0.1",
        "VIBRATION_HTTP_PORT": str(port),
        "VIBRATION_DRIFT_WINDOW": "200",
        "VIBRATION_DRIFT_MIN_SAMPLES": "100",
        "VIBRATION_STATUS_INTERVAL_S": "1",
        "OMP_NUM_THREADS": "1",
    }


@contextlib.contextmanager
def serving(node: Path, broker: Mosquitto, bin_dir: Path) -> Iterator[int]:
    """The node's init container, then its serve container; yields the HTTP port."""
    port = free_port()
    env = node_env(node, broker, port)
    init = subprocess.run(
        [str(bin_dir / "vibration-infer"), "validate", "--target", env["VIBRATION_TARGET_FILE"],
         "--fallback-last-good", f"--termination-log={node / 'termination-log'}"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    report = json.loads((node / "termination-log").read_text())
    console.print(
        f"init container: exit {init.returncode}, {report['outcome']}, accuracy {report.get('accuracy')}"
    )
    if init.returncode != 0:
        raise LiveError(f"the init container refused v1: {report.get('reason')}")
    log = (node / "serve.log").open("w")
    process = subprocess.Popen([str(bin_dir / "vibration-infer"), "serve"], env=env, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not _ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise LiveError(f"serve did not become ready; see {node / 'serve.log'}")
            time.sleep(0.05)
        yield port
    finally:
        stop(process)
        log.close()


def _ready(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r,
    ):
        return bool(r.status == 200)  # noqa: PLR2004 - HTTP OK
    return False


def wait_for(what: str, condition: Any, timeout_s: float = 180) -> None:  # noqa: ANN401 - any callable
    """Wait until `condition()` holds, or fail the demo naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise LiveError(f"timed out waiting for {what}")
        time.sleep(0.1)


def live_view(hall: Hall, sent: int) -> Table:
    """One frame of the terminal view: per machine, the last label, alerts, latency; the pod's state."""
    with hall.lock:
        predictions, alerts, status = list(hall.predictions), list(hall.alerts), hall.statuses[-1:]
    table = Table(title=f"hall-a, node edge-1: {len(predictions)}/{sent} windows answered")
    for column in ("machine", "windows", "last label", "confidence", "model", "p99 ms", "alerts"):
        table.add_column(column)
    for machine in ("m1", "m2", "m3", "m4"):
        mine = [p for p in predictions if p.machine == machine]
        if not mine:
            continue
        p99 = float(np.percentile([p.latency_ms for p in mine], 99))
        count = sum(a.machine == machine for a in alerts)
        last = mine[-1]
        table.add_row(machine, str(len(mine)), last.label, f"{last.confidence:.2f}", last.model_version,
                      f"{p99:.2f}", str(count))  # fmt: skip
    if status:
        s = status[0]
        drift = "DRIFTED" if s.drifted else "ok"
        candidate = f"; candidate {s.candidate_version} {s.candidate_state}" if s.candidate_version else ""
        table.caption = f"pod serves {s.version}, drift {drift}{candidate}\n{s.message[:160]}"
    return table


@dataclass
class LiveResult:
    """What the live story showed, for the summary."""

    windows: int
    answered_once: bool
    versions: list[str]
    alert: Alert | None
    drifted: bool
    refused: ModelStatus | None
    swapped: ModelStatus | None
    """The pod's status once v2, validated in the pod, served."""


def run_live(out: Path, bin_dir: Path, windows_per_machine: int = 300) -> LiveResult:
    """Serve v1, stream the hall, swap to v2 live, refuse v3; check every promise."""
    node, registry = out / "node-edge-1", out / "registry"
    stream = machine_streams(windows_per_machine, seed=42)
    hall = Hall()
    with Mosquitto(out / "broker") as broker:
        write_target(node / "target.json", registry, "v1")
        with serving(node, broker, bin_dir):
            listener = mqtt_client(broker, "demo-view")
            listener.on_message = hall.on_message
            listener.subscribe([(f"{PREFIX}/machines/+/+", 1), (f"{PREFIX}/nodes/+/status", 1)])
            sensor = mqtt_client(broker, "demo-sensors")
            time.sleep(0.5)
            swapped, refused = _stream(stream, sensor, hall, node, registry)
            wait_for("every window's prediction", lambda: len(hall.predictions) >= len(stream))
            time.sleep(1.0)  # anything answered twice would arrive now
            sensor.disconnect()
            listener.disconnect()
    keys = [(p.machine, p.timestamp_ns) for p in hall.predictions]
    versions = [p.model_version for p in hall.predictions]
    changes = [versions[0]] + [v for i, v in enumerate(versions[1:], 1) if v != versions[i - 1]]
    alert = next((a for a in hall.alerts if a.machine == "m2" and a.label == "bearing_fault"), None)
    return LiveResult(
        windows=len(stream),
        answered_once=len(keys) == len(set(keys)) == len(stream),
        versions=changes,
        alert=alert,
        drifted=any(s.drifted for s in hall.statuses),
        refused=refused,
        swapped=swapped,
    )


def _stream(
    stream: list[tuple[str, int, bytes]], sensor: paho.Client, hall: Hall, node: Path, registry: Path
) -> tuple[ModelStatus | None, ModelStatus | None]:
    """Publish the hall at 80 windows/s with a live view; move the target to v2, then to v3.

    Returns the pod's status once v2 served and once v3 was refused.
    """
    swap_at, bad_at = len(stream) // 3, 2 * len(stream) // 3
    refused = swapped = None
    started = time.perf_counter()
    with Live(live_view(hall, 0), console=console, refresh_per_second=4) as live:
        for i, (machine, _ts, payload) in enumerate(stream):
            sensor.publish(LAYOUT.raw(machine), payload, qos=1)
            if i == swap_at:
                write_target(node / "target.json", registry, "v2", champion="v1")
            if i == bad_at:
                wait_for("v2 to serve", lambda: (s := hall.last_status()) is not None and s.version == "v2")
                swapped = hall.last_status()
                write_target(node / "target.json", registry, "v3", champion="v2")
            if i % 20 == 0:
                live.update(live_view(hall, i + 1))
            pause = started + (i + 1) / 80 - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        wait_for(
            "v3 to be refused",
            lambda: (s := hall.last_status()) is not None and s.candidate_version == "v3"
            and s.candidate_state == "failed",
        )  # fmt: skip
        refused = hall.last_status()
        live.update(live_view(hall, len(stream)))
    return swapped, refused
