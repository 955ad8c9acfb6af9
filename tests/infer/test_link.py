"""What both MQTT links of the serving loop must say alike, without a broker: a refused subscription.

A broker may refuse the pod's shared subscription (one without shared
subscriptions answers 0x9E) or the unsubscription of a filter an older
session kept; the pod then serves nothing, or every window, while it looks
healthy. Both links log it; the wire link reads it from its parser, paho
from its callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from vibration_core.logs import event_fields
from vibration_infer.serve.app import make_link
from vibration_infer.serve.link import Coalescer, Incoming, queue_into
from vibration_infer.serve.paho_link import MqttLink
from vibration_infer.serve.settings import ServeSettings
from vibration_infer.serve.wire import codec
from vibration_infer.serve.wire.link import WireLink

if TYPE_CHECKING:
    from collections.abc import Callable

    from vibration_testkit.mosquitto import Mosquitto

SHARED = "$share/spindle-classifier/test/hall/machines/+/raw"
PLAIN = "test/hall/machines/+/raw"
SETTINGS = ServeSettings(mqtt_url="mqtt://127.0.0.1:9", model_id="spindle")


def refusals(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [event_fields(r) for r in caplog.records if r.levelno == logging.ERROR]


def test_the_wire_link_logs_a_refused_subscription_and_unsubscription(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = WireLink(SETTINGS, SHARED, queue_into(queue.SimpleQueue()), stale=[PLAIN])
    with caplog.at_level(logging.ERROR):
        link._handle(
            [
                codec.Control(codec.SUBACK, packet_id=1, reason=0x9E),
                codec.Control(codec.UNSUBACK, packet_id=2, reason=0x11),  # none existed: fine
                codec.Control(codec.UNSUBACK, packet_id=3, reason=0x87),
            ],
            0,
            0,
        )
    assert refusals(caplog) == [
        {
            "event": "mqtt_subscribe_refused",
            "filter": SHARED,
            "reason": "shared subscriptions not supported (0x9e)",
        },
        {"event": "mqtt_unsubscribe_refused", "filters": PLAIN, "reason": "not authorized (0x87)"},
    ]


def test_the_paho_link_logs_a_refused_subscription_and_unsubscription(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = MqttLink(SETTINGS, SHARED, queue_into(queue.SimpleQueue()), stale=[PLAIN])
    suback = [ReasonCode(PacketTypes.SUBACK, identifier=0x9E)]
    unsuback = [ReasonCode(PacketTypes.UNSUBACK, identifier=code) for code in (0x11, 0x87)]
    props = Properties(PacketTypes.SUBACK)  # type: ignore[no-untyped-call]  # paho leaves it untyped
    # paho types its callbacks as those of either callback API; the link sets version 2's.
    on_subscribe: Callable[..., None] | None = link._client.on_subscribe
    on_unsubscribe: Callable[..., None] | None = link._client.on_unsubscribe
    assert on_subscribe is not None
    assert on_unsubscribe is not None
    with caplog.at_level(logging.ERROR):
        on_subscribe(link._client, None, 1, suback, props)
        on_unsubscribe(link._client, None, 2, unsuback, props)
    assert refusals(caplog) == [
        {"event": "mqtt_subscribe_refused", "filter": SHARED, "reason": "Shared subscription not supported"},
        {"event": "mqtt_unsubscribe_refused", "filters": PLAIN, "reason": "Not authorized"},
    ]


def test_the_coalescer_holds_windows_until_the_batch_is_full_or_the_deadline_passed() -> None:
    batches: list[list[Incoming]] = []
    items = [Incoming(f"t{i}", b"", i, 1, 1, 0, 0) for i in range(5)]
    at_once = Coalescer(batches.append, batch_max=64, deadline_s=0.0)
    at_once.add(items[:2])
    assert batches == [items[:2]]  # no deadline: each read is a batch

    batches.clear()
    held = Coalescer(batches.append, batch_max=3, deadline_s=0.2)
    assert held.wait_s(1.0) == 1.0  # nothing held: the reader waits as long as it likes
    assert (held.holding, held.room_bytes(), held.first_received_perf_ns()) == (False, 0, None)
    held.add(items[:1])
    assert 0.0 < held.wait_s(1.0) <= 0.2
    assert (held.holding, held.room_bytes(), held.first_received_perf_ns()) == (True, 0, 0)
    held.flush_due()
    assert batches == []  # not due yet
    held.add(items[1:4])
    assert batches == [items[:4]]  # full (3 or more): delivered without waiting
    held.add(items[4:])
    time.sleep(0.21)
    assert held.wait_s(1.0) == 0.0
    held.flush_due()
    assert batches == [items[:4], items[4:]]

    # The bytes the batch has room for, at least: the smallest held payload times the windows to
    # come (a large first window must not leave a batch of small ones waiting once it is full).
    sized = [Incoming("t", b"x" * size, i, 1, 1, 10 + i, 20 + i) for i, size in enumerate((3000, 1000))]
    held.add(sized[:1])
    assert (held.room_bytes(), held.first_received_perf_ns()) == (2 * 3000, 20)
    held.add(sized[1:])
    assert (held.room_bytes(), held.first_received_perf_ns()) == (1 * 1000, 20)
    held.flush()
    assert held.room_bytes() == 0
    assert batches.pop() == sized
    held.add([])  # an empty read holds nothing
    assert (held.holding, held.room_bytes()) == (False, 0)

    held.add(items[:1])
    held.drop()  # the connection ended: nothing is delivered, and nothing is left to deliver
    time.sleep(0.21)
    held.flush_due()
    held.flush()
    assert batches == [items[:4], items[4:]]


def test_paho_waits_for_nothing_it_dropped_while_disconnected() -> None:
    # A QoS 0 answer published with no connection is dropped and paho never reports it: nothing
    # may wait for it (a redelivery parked behind it would never be acknowledged on that session).
    link = MqttLink(SETTINGS, PLAIN, queue_into(queue.SimpleQueue()))
    window = Incoming(PLAIN.replace("+", "m1"), b"", 7, 1, 0, 0, 0)
    link.publish("test/hall/machines/m1/predictions", b"{}", qos=0, then_ack=window.receipt)
    assert link.unacknowledged() == 0


class _StalledSocket:
    """A socket whose send buffer is full: paho queues what it publishes, unwritten."""

    def send(self, _data: bytes) -> int:
        raise BlockingIOError

    def close(self) -> None:
        pass

    def fileno(self) -> int:
        return -1


def test_paho_forgets_the_qos0_answers_a_lost_connection_took_with_it() -> None:
    # Queued, then the connection drops before it is written: paho clears it at the reconnect and
    # never reports it. A redelivery on the new connection must not wait behind it.
    link = MqttLink(SETTINGS, PLAIN, queue_into(queue.SimpleQueue()))
    client = link._client
    client._sock = _StalledSocket()  # type: ignore[assignment]  # paho's own socket slot
    client._thread = threading.current_thread()  # as under loop_start: the network thread writes
    window = Incoming(PLAIN.replace("+", "m1"), b"", 7, 1, 0, 0, 0)
    link.publish("test/hall/machines/m1/predictions", b"{}", qos=0, then_ack=window.receipt)
    assert link.unacknowledged() == 1
    on_disconnect: Callable[..., None] | None = client.on_disconnect
    assert on_disconnect is not None
    on_disconnect(client, None, None, ReasonCode(PacketTypes.DISCONNECT, identifier=0x80), None)
    assert link.unacknowledged() == 0


@pytest.mark.integration
@pytest.mark.parametrize("client", ["wire", "paho"])
def test_a_message_too_large_for_the_pod_is_never_sent_to_it(
    broker: Mosquitto, client: Literal["wire", "paho"]
) -> None:
    # The pod announces its Maximum Packet Size: the broker discards a larger message for it
    # instead of sending it (a 200 MB message took the pod past its memory limit, again at each
    # redelivery). Windows after it arrive; one under the limit is still read, to be refused by name.
    settings = ServeSettings(
        mqtt_url=broker.url, model_id="spindle", client_id=f"big-{client}", mqtt_client=client,
        max_payload_bytes=64 << 10,
    )  # fmt: skip
    inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
    link = make_link(settings, PLAIN, queue_into(inbox))
    link.start()
    assert link.wait_connected(10)
    sensor = paho.Client(CallbackAPIVersion.VERSION2, client_id="sensor", protocol=MQTTProtocolVersion.MQTTv5)
    sensor.connect(broker.host, broker.port)
    sensor.loop_start()
    try:
        for machine, size in (("m1", settings.max_packet_bytes + 1), ("m2", 100 << 10), ("m3", 16)):
            sensor.publish(f"test/hall/machines/{machine}/raw", b"x" * size, qos=1).wait_for_publish(10)
        got: list[Incoming] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                got.append(inbox.get(timeout=0.1))
        time.sleep(0.5)
        while not inbox.empty():
            got.append(inbox.get())
        assert [(i.topic.split("/")[-2], len(i.payload)) for i in got] == [("m2", 100 << 10), ("m3", 16)]
        assert link.connected
    finally:
        sensor.disconnect()
        sensor.loop_stop()
        link.stop(0)
