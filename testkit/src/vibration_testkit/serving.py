"""The serving pod in this process and the MQTT clients around it, for tests against a real broker.

`serving` runs a `ServeApp` the way ``vibration-infer serve`` does (the
status loop in a thread) until it is ready; `serve_settings` gives it a
loopback broker, a per-test cache and short timeouts. `Publisher` is a
sensor, `Collector` a dashboard that keeps every answer. Used by
``test_serve.py`` and by the tests that serve imported models.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vibration_core.messages import Alert, ErrorMessage, Prediction
from vibration_core.raw import encode_raw_float32
from vibration_core.topics import TopicLayout
from vibration_infer.serve.app import ServeApp
from vibration_infer.serve.settings import ServeSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from vibration_testkit.mosquitto import Mosquitto
    from vibration_train.simulator import SimulatedData

PREFIX = "test/hall"
LAYOUT = TopicLayout(PREFIX)
SLOW = 120.0
"""Deadline of a wait that a loaded CI machine may stretch; a quiet one is done in a second or two."""


class Collector:
    """A paho client that keeps every message under the prefix, in arrival order."""

    # The pod's outputs only: the raw windows would double this process's work for nothing.
    TOPICS = ("machines/+/predictions", "machines/+/errors", "machines/+/alerts", "errors", "nodes/+/status")

    def __init__(
        self, broker: Mosquitto, client_id: str = "collector", *, persistent: bool = False, qos: int = 1
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._by_leaf: dict[str, list[bytes]] = defaultdict(list)
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, *_: c.subscribe([(f"{PREFIX}/{t}", qos) for t in self.TOPICS])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        props.SessionExpiryInterval = 300 if persistent else 0
        self.client.connect(broker.host, broker.port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(30)

    def _on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        payload = bytes(message.payload)
        with self._lock:
            self.messages.append((message.topic, payload))
            self._by_leaf[message.topic.rsplit("/", 1)[-1]].append(payload)

    def leaf(self, leaf: str) -> list[bytes]:
        """The payloads so far on topics ending in `leaf`, in arrival order."""
        with self._lock:
            return list(self._by_leaf[leaf])

    def count(self, leaf: str) -> int:
        """Messages so far on topics ending in `leaf`; O(1), for polling."""
        with self._lock:
            return len(self._by_leaf[leaf])

    def predictions(self) -> list[Prediction]:
        """The predictions so far, decoded."""
        return [Prediction.decode(p) for p in self.leaf("predictions")]

    def errors(self) -> list[ErrorMessage]:
        """The error messages so far, decoded."""
        return [ErrorMessage.decode(p) for p in self.leaf("errors")]

    def alerts(self) -> list[Alert]:
        """The alerts so far, decoded."""
        return [Alert.decode(p) for p in self.leaf("alerts")]

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


class Publisher:
    """A sensor: QoS 1 on a persistent session, so a broker restart loses nothing it sent."""

    def __init__(self, broker: Mosquitto, client_id: str = "sensor") -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.max_inflight_messages_set(0)  # no limit: paho rescans its queue per PUBACK with one
        self.client.max_queued_messages_set(0)
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        props.SessionExpiryInterval = 300
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert connected.wait(30)

    def send(self, machine: str, payload: bytes, topic: str | None = None) -> None:
        """Publish one raw window of `machine` at QoS 1 (on `topic` when given)."""
        self.client.publish(topic or LAYOUT.raw(machine), payload, qos=1)

    def send_all(
        self,
        data: SimulatedData,
        *,
        rate_hz: float | None = None,
        on_each: Callable[[int], None] | None = None,
    ) -> None:
        """Publish every window of `data` in order; at `rate_hz` when given; `on_each(i)` after each."""
        started = time.perf_counter()

        for i in range(len(data)):
            self.send(
                str(data.machine[i]),
                encode_raw_float32(data.windows[i], data.sample_rate, int(data.timestamp_ns[i])),
            )
            if on_each is not None:
                on_each(i)
            if rate_hz is not None:
                pause = started + (i + 1) / rate_hz - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` every 50 ms; fail the test naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def serve_settings(
    broker: Mosquitto,
    tmp_path: Path,
    *,
    artifact: Path | None,
    card: Path | None,
    test_data: Path,
    **overrides: object,
) -> ServeSettings:
    """Settings of a pod on `broker`, quick to notice changes and to stop.

    It serves `artifact` with `card`, or (both None) the last good version in
    its cache of the model an override such as ``model_id`` names.
    """
    values: dict[str, object] = {
        "mqtt_url": broker.url,
        "topic_prefix": PREFIX,
        "node_name": "node-a",
        "client_id": f"serve-{tmp_path.name}",
        "artifact": artifact,
        "card": card,
        "cache_dir": tmp_path / "cache",
        "test_data": test_data,
        "target_file": tmp_path / "target.json",
        "target_poll_s": 0.05,
        "status_interval_s": 0.5,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "reconnect_min_s": 1,
        "reconnect_max_s": 2,
        "shutdown_timeout_s": 2.0,
        "max_inflight": 100,  # the fixture's broker has no Receive Maximum
    }
    values.update(overrides)
    return ServeSettings(**values)  # type: ignore[arg-type]  # keyword values of mixed types


@contextlib.contextmanager
def serving(settings: ServeSettings) -> Iterator[ServeApp]:
    """A serving pod in this process (its status loop in a thread), ready; stopped afterwards."""
    app = ServeApp(settings)
    app.install(app.load_initial())
    app.start()
    loop = threading.Thread(target=app.run_forever, name="status-loop", daemon=True)
    loop.start()
    try:
        wait_until(app.is_ready, SLOW, "the pod to be ready")
        yield app
    finally:
        app.request_stop()
        loop.join(5)
        app.shutdown()
