"""A sensor and a dashboard on the hall's broker, reached through ``kubectl port-forward``.

The sensor logs in as its machine (the hall's ACL lets user ``m1`` write
``.../machines/m1/raw`` only) and publishes raw float32 windows, each with
its own timestamp. The dashboard (read-only user) counts the predictions by
(machine, timestamp): a window answered twice or never shows up as such.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vibration_core.messages import Prediction
from vibration_core.raw import encode_raw_float32
from vibration_core.topics import TopicLayout
from vibration_train.simulator import simulate

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import numpy.typing as npt

SAMPLE_RATE = 25600


SESSION_EXPIRY_S = 300
"""The sensor's and the dashboard's sessions outlive a dropped port-forward: paho reconnects to them
(clean start on the first connect only), so a window or an answer in flight then is delivered late,
not lost, and a missing answer is serve's to explain."""


def _client(url: str, user: str, password: str, client_id: str) -> paho.Client:
    where = urlsplit(url)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.username_pw_set(user, password)
    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
    connect.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect(where.hostname or "127.0.0.1", where.port or 1883, keepalive=30, properties=connect)
    client.loop_start()
    return client


def _close(client: paho.Client) -> None:
    ending = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
    ending.SessionExpiryInterval = 0
    client.disconnect(properties=ending)
    client.loop_stop()


def transport_note(*clients: Dashboard | Sensor) -> str:
    """What the port-forwarded connections went through, for a failed test's message."""
    return "; ".join(f"{c.name}: {c.disconnects} disconnect(s)" for c in clients) + "".join(
        f"; {c.name}: {len(c.unconfirmed)} window(s) the broker never acknowledged"
        for c in clients
        if isinstance(c, Sensor) and c.unconfirmed
    )


class Dashboard:
    """Subscribes to every prediction of the hall and keeps which versions answered each window."""

    def __init__(self, url: str, prefix: str, password: str) -> None:
        self.answers: dict[tuple[str, int], list[str]] = defaultdict(list)
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = _client(url, "dashboard", password, f"e2e-dashboard-{time.monotonic_ns()}")
        self.name, self.disconnects = "dashboard", 0
        self._client.on_disconnect = self._disconnected
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.subscribe(f"{prefix}/machines/+/predictions", qos=1)
        if not self._subscribed.wait(10):
            msg = "the dashboard's subscription was not acknowledged within 10 s"
            raise AssertionError(msg)

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        prediction = Prediction.decode(bytes(message.payload))
        with self._lock:
            self.answers[(prediction.machine, prediction.timestamp_ns)].append(prediction.model_version)

    def snapshot(self) -> dict[tuple[str, int], list[str]]:
        """What was answered so far."""
        with self._lock:
            return {key: list(value) for key, value in self.answers.items()}

    def wait_for(self, keys: set[tuple[str, int]], timeout_s: float = 60) -> dict[tuple[str, int], list[str]]:
        """Until every key is answered (or the timeout); then a second more, to see duplicates too."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not keys <= set(self.snapshot()):
            time.sleep(0.2)
        time.sleep(1.0)
        return self.snapshot()

    def _disconnected(self, *_args: Any) -> None:
        self.disconnects += 1

    def close(self) -> None:
        """Disconnect, ending the session (the broker would keep queuing for it)."""
        _close(self._client)


class Sensor:
    """Machine `machine` publishing normal-running windows at QoS 1."""

    def __init__(self, url: str, prefix: str, machine: str, password: str) -> None:
        self.topic = TopicLayout(prefix).raw(machine)
        self.machine = machine
        data = simulate(16, seed=11, machines=1, class_shares={"normal": 1.0}, sample_rate=SAMPLE_RATE)
        self._windows: npt.NDArray[np.float32] = data.windows
        self._client = _client(url, machine, password, f"e2e-sensor-{machine}")
        self.name, self.disconnects = f"sensor {machine}", 0
        self._client.on_disconnect = self._disconnected
        self.sent: list[int] = []
        self.unconfirmed: list[int] = []

    @contextlib.contextmanager
    def streaming(self, rate_hz: float) -> Iterator[list[tuple[str, int]]]:
        """Publish at `rate_hz` in the background while the block runs; yields the keys sent so far."""
        sent: list[tuple[str, int]] = []
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                sent.extend(self.publish(1))
                stop.wait(1 / rate_hz)

        thread = threading.Thread(target=run, name="e2e-sensor", daemon=True)
        thread.start()
        try:
            yield sent
        finally:
            stop.set()
            thread.join(timeout=15)

    def publish(self, count: int, rate_hz: float = 0.0) -> set[tuple[str, int]]:
        """Publish `count` windows (at `rate_hz`, or at once); the (machine, timestamp) keys sent."""
        keys = set()
        for i in range(count):
            timestamp = time.time_ns()
            payload = encode_raw_float32(self._windows[i % len(self._windows)], SAMPLE_RATE, timestamp)
            info = self._client.publish(self.topic, payload, qos=1)
            info.wait_for_publish(10)
            if not info.is_published():  # the port-forward stalled: paho sends it again on reconnect
                self.unconfirmed.append(timestamp)
            self.sent.append(timestamp)
            keys.add((self.machine, timestamp))
            if rate_hz:
                time.sleep(1 / rate_hz)
        return keys

    def _disconnected(self, *_args: Any) -> None:
        self.disconnects += 1

    def close(self) -> None:
        """Disconnect, ending the session (the broker would keep queuing for it)."""
        _close(self._client)
