"""The hall's example ACLs (`examples/broker/aclfile`) in a real Mosquitto: who may write and read what.

The broker runs with a password file made by Debian's ``mosquitto_passwd``
and the example ACL file, anonymous clients refused, as the chart's broker
does. A dashboard user (allowed to read the whole hall) watches every topic,
so a publish the broker refused is one the dashboard never sees.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from vibration_core.topics import TopicLayout
from vibration_testkit.mosquitto import Mosquitto, require_mosquitto

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ACL = ROOT / "examples" / "broker" / "aclfile"
HALL = TopicLayout("factory/hall-a")
USERS = {"m1": "sensor-one", "m2": "sensor-two", "serving": "serving-pw", "dashboard": "dash-pw"}
SETTLE_S = 0.5
_IDS = itertools.count()


class Client:
    """A paho MQTT 5 client logged in as one user, recording what it receives."""

    def __init__(self, broker: Mosquitto, user: str | None, password: str | None = None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.id = f"acl-{user}-{next(_IDS)}"  # one per connection: a second one would take over the first
        self.connected = threading.Event()
        self.refused: str | None = None
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.id, protocol=MQTTProtocolVersion.MQTTv5
        )
        if user is not None:
            client.username_pw_set(user, password)
        client.on_connect = self._on_connect
        client.on_message = lambda _c, _u, msg: self.received.append((msg.topic, bytes(msg.payload)))
        client.connect(broker.host, broker.port)
        client.loop_start()
        self.client = client

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self.refused = reason.getName()
        else:
            self.connected.set()

    def wait_connected(self) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.refused is None:
            if self.connected.wait(0.05):
                return True
        return False

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_args: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path, make_broker: Callable[..., Mosquitto]) -> Mosquitto:
    """A broker that knows the users of `USERS` and applies the example ACL file."""
    passwd = require_mosquitto("mosquitto_passwd")
    passwords = tmp_path / "passwordfile"
    passwords.touch()
    for user, password in USERS.items():
        subprocess.run([passwd, "-b", str(passwords), user, password], check=True, capture_output=True)
    return make_broker(auth=(passwords, ACL))


@pytest.fixture
def watcher(broker: Mosquitto) -> Iterator[Client]:
    """The dashboard user, subscribed to the whole hall: it sees every publish the broker let through."""
    dashboard = Client(broker, "dashboard", USERS["dashboard"])
    try:
        assert dashboard.wait_connected()
        dashboard.subscribe("factory/hall-a/#")
        yield dashboard
    finally:
        dashboard.close()


@contextlib.contextmanager
def logged_in(broker: Mosquitto, user: str) -> Iterator[Client]:
    client = Client(broker, user, USERS[user])
    try:
        assert client.wait_connected(), client.refused
        yield client
    finally:
        client.close()


def publish_as(broker: Mosquitto, user: str, topic: str) -> None:
    # A connection of its own per attempt: Mosquitto drops an MQTT 5 client whose QoS 1
    # publish it refused, which would hide the attempts after it.
    with logged_in(broker, user) as client, contextlib.suppress(RuntimeError):
        client.publish(topic, f"from {user}".encode())


def seen(client: Client) -> set[str]:
    time.sleep(SETTLE_S)
    return {topic for topic, _ in client.received}


def test_anonymous_clients_and_wrong_passwords_are_refused(broker: Mosquitto) -> None:
    for user, password in [(None, None), ("m1", "not-the-password")]:
        client = Client(broker, user, password)
        try:
            assert not client.wait_connected()
            assert client.refused is not None
        finally:
            client.close()


def test_a_sensor_writes_its_own_raw_topic_and_nothing_else(broker: Mosquitto, watcher: Client) -> None:
    for topic in [HALL.raw("m1"), HALL.raw("m2"), HALL.predictions("m1"), HALL.status("edge-1")]:
        publish_as(broker, "m1", topic)

    assert seen(watcher) == {HALL.raw("m1")}


def test_serving_reads_raw_and_writes_results_but_no_raw(broker: Mosquitto, watcher: Client) -> None:
    results = [HALL.predictions("m2"), HALL.alerts("m2"), HALL.errors("m2"), HALL.hall_errors()]
    with logged_in(broker, "serving") as serving:
        serving.subscribe(HALL.raw_subscription())
        publish_as(broker, "m2", HALL.raw("m2"))
        for topic in [*results, HALL.status("edge-1")]:
            serving.publish(topic, b"{}")
        assert seen(serving) == {HALL.raw("m2")}
    publish_as(broker, "serving", HALL.raw("m1"))  # a window the pod made up
    publish_as(broker, "serving", HALL.raw("serving"))  # the sensors' pattern names every user

    assert seen(watcher) == {HALL.raw("m2"), *results, HALL.status("edge-1")}


def test_serving_pods_of_one_share_group_split_the_windows_and_a_share_group_widens_no_reading(
    broker: Mosquitto, watcher: Client
) -> None:
    # Mosquitto 2.0.11 grants every SUBSCRIBE, $share/... ones too, and checks `topic read`
    # on delivery against each window's own topic: the serving user's plain read line
    # covers its shared subscription, and a sensor joining a share group still reads nothing.
    windows = 10
    with (
        logged_in(broker, "serving") as one,
        logged_in(broker, "serving") as two,
        logged_in(broker, "m1") as sensor,
    ):
        for client, group in ((one, "spindle-classifier"), (two, "spindle-classifier"), (sensor, "snoop")):
            client.subscribe(HALL.raw_subscription(group))
        with logged_in(broker, "m2") as m2:
            for i in range(windows):
                m2.publish(HALL.raw("m2"), f"window {i}".encode())
        assert seen(one) | seen(two) == {HALL.raw("m2")}
        assert one.received, "each member gets its share"
        assert two.received, "each member gets its share"
        shared = sorted(payload for _, payload in one.received + two.received)
        assert shared == sorted(f"window {i}".encode() for i in range(windows)), "each window once"
        assert seen(sensor) == set()
    assert seen(watcher) == {HALL.raw("m2")}


def test_dashboards_and_sensors_cannot_steer_or_snoop(broker: Mosquitto, watcher: Client) -> None:
    with logged_in(broker, "m1") as sensor:
        sensor.subscribe("factory/hall-a/#")
        publish_as(broker, "dashboard", HALL.raw("m1"))
        publish_as(broker, "dashboard", HALL.raw("dashboard"))  # the sensors' pattern names every user
        publish_as(broker, "dashboard", HALL.predictions("m1"))
        publish_as(broker, "serving", HALL.predictions("m2"))
        publish_as(broker, "m2", HALL.raw("m2"))

        assert seen(sensor) == set()  # sensors read nothing, not even their own predictions
    assert seen(watcher) == {HALL.predictions("m2"), HALL.raw("m2")}
