"""The serving loop's own MQTT 5 client: its packets, and its session against a real Mosquitto.

What every MQTT client of the loop must do (answers, acknowledgements after
the answer, a broker restart, a hot swap) is in test_serve.py, run against
both clients. Here is what only this client has to get right by itself: the
byte stream split anywhere, the broker's Receive Maximum, refused
credentials, TLS with a private CA, the keep-alive and a half-open
connection, the broker's CONNACK limits, and an answer the ACL refuses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import socket
import ssl
import struct
import threading
import time
import tracemalloc
from typing import TYPE_CHECKING

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from vibration_core.logs import JsonFormatter, event_fields
from vibration_infer.serve.link import Outgoing, queue_into
from vibration_infer.serve.settings import ServeSettings
from vibration_infer.serve.wire import codec, connection
from vibration_infer.serve.wire import link as wire_link
from vibration_infer.serve.wire.link import WireLink
from vibration_infer.serve.wire.parser import Parser
from vibration_testkit.serving import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from vibration_infer.serve.link import Incoming
    from vibration_testkit.mosquitto import Mosquitto

PREFIX = "test/hall"
RAW = f"{PREFIX}/machines/+/raw"


# --- packets -------------------------------------------------------------------------------


def _props(*pairs: bytes) -> bytes:
    body = b"".join(pairs)
    return codec.varint(len(body)) + body


def broker_stream() -> tuple[bytes, list[codec.Message | codec.Control]]:
    """Every kind of packet the client reads, as a broker would send them, and what they mean."""
    connack_props = _props(
        b"\x21" + struct.pack("!H", 7),
        b"\x13" + struct.pack("!H", 20),
        b"\x1f" + codec.utf8("welcome"),
        b"\x26" + codec.utf8("k") + codec.utf8("v"),
    )
    publish_props = _props(b"\x02" + struct.pack("!I", 60), b"\x26" + codec.utf8("a") + codec.utf8("b"))
    publish_body = (
        codec.utf8("test/hall/machines/m1/raw") + struct.pack("!H", 513) + publish_props + b"\x01" * 300
    )
    packets = [
        codec.packet(codec.CONNACK << 4, b"\x01\x00" + connack_props),
        codec.packet((codec.PUBLISH << 4) | 0x02, publish_body),
        codec.publish_packet("q0", b"", qos=0),
        codec.puback_packet(9),
        codec.packet(codec.PUBACK << 4, struct.pack("!HB", 10, 0x10) + b"\x00"),
        codec.packet(codec.SUBACK << 4, struct.pack("!H", 3) + b"\x00" + b"\x87"),
        codec.packet(codec.UNSUBACK << 4, struct.pack("!H", 4) + b"\x00" + b"\x11"),
        codec.packet(codec.PINGRESP << 4, b""),
        codec.packet(codec.DISCONNECT << 4, b"\x8b" + _props(b"\x1f" + codec.utf8("going down"))),
    ]
    meaning: list[codec.Message | codec.Control] = [
        codec.Control(
            codec.CONNACK, session_present=True, receive_maximum=7, keepalive_s=20, reason_string="welcome"
        ),
        codec.Message("test/hall/machines/m1/raw", b"\x01" * 300, 1, 513),
        codec.Message("q0", b"", 0, 0),
        codec.Control(codec.PUBACK, packet_id=9),
        codec.Control(codec.PUBACK, packet_id=10, reason=0x10),
        codec.Control(codec.SUBACK, packet_id=3, reason=0x87),
        codec.Control(codec.UNSUBACK, packet_id=4, reason=0x11),
        codec.Control(codec.PINGRESP),
        codec.Control(codec.DISCONNECT, reason=0x8B, reason_string="going down"),
    ]
    return b"".join(packets), meaning


def test_the_parser_reads_the_same_packets_however_the_stream_is_split() -> None:
    stream, meaning = broker_stream()
    assert Parser(1 << 20).feed(stream) == meaning
    for step in (1, 2, 3, 7, 64):
        parser, got = Parser(1 << 20), []
        for i in range(0, len(stream), step):
            got += parser.feed(stream[i : i + step])
        assert got == meaning, f"split every {step} bytes"


def test_the_parser_keeps_nothing_of_a_read_buffer_the_link_reuses() -> None:
    # The link reads into one buffer and feeds views of it; the parser parses them where they
    # lie, so what it returns and the partial packet it holds must not point into the buffer.
    stream, meaning = broker_stream()
    for step in (5, 64, 300, len(stream)):
        parser, got, reads = Parser(1 << 20), [], bytearray(step)
        for i in range(0, len(stream), step):
            chunk = stream[i : i + step]
            reads[: len(chunk)] = chunk
            got += parser.feed(memoryview(reads)[: len(chunk)])
            reads[:] = b"\xee" * step  # the next read overwrites it
        assert got == meaning, f"reads of {step} bytes"
        assert not parser.partial


def test_a_malformed_packet_after_a_cut_one_is_refused_with_what_came_before() -> None:
    good = codec.publish_packet("t", b"w" * 100, qos=1, packet_id=5)
    bad = codec.publish_packet("t", b"w", qos=2, packet_id=6)
    for cut in (1, 2, 50):  # inside the fixed header, and inside the body
        parser = Parser(4096)
        assert parser.feed(good[:cut]) == []
        with pytest.raises(codec.ProtocolError, match="PUBLISH at QoS 2") as refused:
            parser.feed(good[cut:] + bad + good)
        assert refused.value.parsed == [codec.Message("t", b"w" * 100, 1, 5)]
        with pytest.raises(codec.ProtocolError, match="PUBLISH at QoS 2"):  # kept: met again
            parser.feed(b"")
    parser = Parser(50)
    assert parser.feed(good[:1]) == []
    with pytest.raises(codec.ProtocolError, match="more than 50 taken"):  # the cut packet's own length
        parser.feed(good[1:])


def test_a_read_after_a_cut_packet_is_not_copied_whole() -> None:
    # A flood's reads end inside a packet; the next one completes it and brings sixty more.
    # Only the cut packet may be copied into the parser's buffer: the payloads are copied once.
    window = codec.publish_packet("hall/machines/m1/raw", b"\x5a" * 16_000, qos=1, packet_id=1)
    stream = window * 256  # 4 MB
    cut = len(window) // 2
    parser = Parser(1 << 20)
    assert parser.feed(stream[:cut]) == []
    rest = memoryview(stream)[cut:]
    tracemalloc.start()
    try:
        got = parser.feed(rest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(got) == 256
    assert not parser.partial
    payloads = sum(len(m.payload) for m in got if isinstance(m, codec.Message))
    assert peak < payloads * 1.25, f"{peak} bytes at most for {payloads} bytes of payloads"


@pytest.mark.parametrize("remaining", [127, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_remaining_lengths_at_each_varint_boundary_round_trip(remaining: int) -> None:
    topic = "t"
    overhead = 2 + len(topic) + 2 + 1  # topic, packet id, property length
    data = codec.publish_packet(topic, b"\xab" * (remaining - overhead), qos=1, packet_id=77)
    assert len(codec.varint(remaining)) == len(data) - 1 - remaining
    assert Parser(1 << 22).feed(data) == [codec.Message(topic, b"\xab" * (remaining - overhead), 1, 77)]


def test_a_duplicate_keeps_the_packet_and_sets_only_the_dup_flag() -> None:
    data = codec.publish_packet("a/b", b"xyz", qos=1, packet_id=5, retain=True)
    dup = codec.as_duplicate(data)
    assert dup[0] == data[0] | codec.DUP_FLAG
    assert dup[1:] == data[1:]
    assert Parser(1024).feed(dup) == [codec.Message("a/b", b"xyz", 1, 5)]
    assert codec.as_duplicate(codec.pubrel_packet(5)) == codec.pubrel_packet(5)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "longer than four bytes"),
        (b"\x30" + codec.varint(5000), "packet of 5000 bytes, more than 4096 taken"),
        (codec.packet(0x32, codec.utf8("t") + b"\x00\x01" + codec.varint(50) + b"x"), "properties longer"),
        (codec.packet(0x20, b"\x00\x00" + _props(b"\x7f\x00")), "unknown property 0x7f"),
        # Subscribed at QoS 1: a QoS 2 window would be owed PUBREC, not the PUBACK it got; 3 is none.
        (codec.publish_packet("t", b"w", qos=2, packet_id=5), "PUBLISH at QoS 2"),
        (bytes([0x36]) + codec.publish_packet("t", b"w", qos=1, packet_id=6)[1:], "PUBLISH at QoS 3"),
    ],
)
def test_malformed_input_is_refused_with_what_is_wrong(data: bytes, reason: str) -> None:
    with pytest.raises(codec.ProtocolError, match=reason):
        Parser(4096).feed(data)


def test_a_short_packet_over_the_limit_is_refused_too_and_pubacks_keep_their_reason() -> None:
    # One-byte Remaining Lengths take a shorter path; the limit and every field hold there too.
    small = codec.packet(0x30, codec.utf8("t") + b"\x00" + b"x" * 80)
    with pytest.raises(codec.ProtocolError, match="packet of 84 bytes, more than 50 taken"):
        Parser(50).feed(codec.puback_packet(3) + small)
    acks = codec.puback_packet(3) + b"\x40\x03\x00\x05\x10" + b"\x40\x04\x00\x06\x00\x00"
    assert Parser(50).feed(acks) == [
        codec.Control(codec.PUBACK, packet_id=3),
        codec.Control(codec.PUBACK, packet_id=5, reason=0x10),
        codec.Control(codec.PUBACK, packet_id=6),  # a reason, then an empty property length
    ]


def test_a_topic_that_is_not_utf8_still_arrives_to_be_answered_with_an_error() -> None:
    data = codec.packet(0x30, struct.pack("!H", 3) + b"a\xffb" + b"\x00" + b"payload")
    assert Parser(1024).feed(data) == [codec.Message("a\ufffdb", b"payload", 0, 0)]


def test_an_unsubscribe_names_every_filter_after_its_packet_id() -> None:
    # OASIS MQTT 5.0, 3.10: fixed header 0xA2, packet id, no properties, then the filters.
    assert codec.unsubscribe_packet(4, ["a/+", "b"]) == b"\xa2\x0b\x00\x04\x00\x00\x03a/+\x00\x01b"


def test_reason_codes_read_as_words() -> None:
    assert codec.reason_name(0x86) == "bad user name or password (0x86)"
    assert codec.reason_name(0x9E) == "shared subscriptions not supported (0x9e)"
    assert codec.reason_name(0xFE) == "reason (0xfe)"


# --- against a real Mosquitto --------------------------------------------------------------


def settings(url: str, tmp_path: Path, **overrides: object) -> ServeSettings:
    values: dict[str, object] = {
        "mqtt_url": url,
        "topic_prefix": PREFIX,
        "node_name": "node-w",
        "client_id": f"wire-{tmp_path.name}",
        "model_id": "unused",
        "reconnect_min_s": 1,
        "reconnect_max_s": 2,
    }
    values.update(overrides)
    return ServeSettings(**values)  # type: ignore[arg-type]  # keyword values of mixed types


class Peer:
    """A paho client on the other side: publishes windows, keeps what arrives on `topics`."""

    def __init__(self, broker: Mosquitto, client_id: str, topics: Sequence[str] = ()) -> None:
        self.received: list[tuple[str, bytes]] = []
        subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.max_inflight_messages_set(0)
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def drain(inbox: queue.SimpleQueue[Incoming], n: int, timeout_s: float) -> list[Incoming]:
    out: list[Incoming] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            out.append(inbox.get(timeout=0.05))
    return out


def started_link(config: ServeSettings, inbox: queue.SimpleQueue[Incoming]) -> WireLink:
    link = WireLink(config, RAW, queue_into(inbox))
    link.start()
    assert link.wait_connected(10)
    return link


@pytest.mark.integration
@pytest.mark.parametrize("qos", [1, 2])
def test_answers_beyond_the_brokers_receive_maximum_wait_their_turn_in_order(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, qos: int
) -> None:
    broker = make_broker("max_inflight_messages 5")  # Mosquitto's Receive Maximum in its CONNACK
    listener = Peer(broker, "listener", [f"{PREFIX}/out"])
    link = started_link(settings(broker.url, tmp_path, max_inflight=100), queue.SimpleQueue())
    link.publish_many(Outgoing(f"{PREFIX}/out", str(i).encode(), qos) for i in range(300))
    deadline = time.monotonic() + 20
    while len(listener.received) < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    # Had more than five been in flight, the broker would have refused them (Mosquitto 2.0.11
    # holds QoS 2 to its Receive Maximum, not QoS 1) or dropped the connection, and the resends
    # would show up as gaps or duplicates.
    assert [int(p) for _, p in listener.received] == list(range(300))
    assert link.connected
    assert link.unacknowledged() == 0
    link.stop(2)
    listener.close()
    assert "receive maximum" not in broker.log.read_text().lower()


@pytest.mark.integration
def test_an_input_is_acknowledged_only_once_its_answer_is(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = make_broker()
    sensor = Peer(broker, "sensor")
    config = settings(broker.url, tmp_path, session_expiry_s=300)
    inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
    link = started_link(config, inbox)
    for i in range(50):
        sensor.client.publish(f"{PREFIX}/machines/m{i % 3}/raw", f"w{i}".encode(), qos=1)
    first = drain(inbox, 50, 10)
    assert [x.payload for x in first] == [f"w{i}".encode() for i in range(50)]
    link.stop(0)  # gone without answering: the broker keeps the windows for the session

    inbox = queue.SimpleQueue()
    link = started_link(config, inbox)
    again = drain(inbox, 50, 10)
    assert [x.payload for x in again] == [x.payload for x in first]
    link.publish_many(Outgoing(f"{PREFIX}/answers", x.payload, 1, then_ack=x) for x in again)
    link.stop(5)  # waits for the answers' PUBACKs, which release the inputs' PUBACKs

    inbox = queue.SimpleQueue()
    link = started_link(config, inbox)
    assert drain(inbox, 1, 1.5) == []
    link.stop(1)
    sensor.close()


def recorded_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[float, list[codec.Message | codec.Control]]]:
    """Each take of the links started from now on: when it returned, and its packets."""
    takes: list[tuple[float, list[codec.Message | codec.Control]]] = []
    take = WireLink._take

    def recorded(
        self: WireLink, sock: socket.socket, parser: Parser, view: memoryview
    ) -> list[codec.Message | codec.Control] | None:
        packets = take(self, sock, parser, view)
        takes.append((time.monotonic(), packets or []))
        return packets

    monkeypatch.setattr(WireLink, "_take", recorded)
    return takes


def kinds(packets: Sequence[codec.Message | codec.Control]) -> set[int]:
    """The packet types among `packets`."""
    return {codec.PUBLISH if isinstance(p, codec.Message) else p.kind for p in packets}


@pytest.mark.integration
def test_at_a_trickle_an_inputs_acknowledgement_goes_with_the_next_answer(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make_broker()
    sensor = Peer(broker, "sensor")
    takes = recorded_takes(monkeypatch)
    writes: list[list[codec.Message | codec.Control]] = []
    send = connection.send_all  # what the link calls, replaced below by a recording one

    def recorded(sock: socket.socket, data: bytes, timeout_s: float) -> None:
        writes.append(Parser(1 << 20).feed(data))
        send(sock, data, timeout_s)

    def answer(batch: list[Incoming]) -> None:  # as serve does: on the link's thread, each read at once
        link.publish_many(Outgoing(f"{PREFIX}/answers", x.payload, 1, then_ack=x) for x in batch)

    config = settings(broker.url, tmp_path, session_expiry_s=300)
    link = WireLink(config, RAW, answer)
    link.start()
    assert link.wait_connected(10)
    monkeypatch.setattr(wire_link, "send_all", recorded)
    takes.clear()
    for i in range(60):  # about a hall's pace: a window every 3 ms
        sensor.client.publish(f"{PREFIX}/machines/m1/raw", f"w{i}".encode(), qos=1)
        time.sleep(0.003)
    deadline = time.monotonic() + 10
    while link.unacknowledged() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the last acknowledgement has no answer after it: it goes alone, 10 ms on

    acks = [p for w in writes for p in w if isinstance(p, codec.Control) and p.kind == codec.PUBACK]
    assert len(acks) == 60 == len({p.packet_id for p in acks})  # every input, once
    assert len(writes) < 1.5 * 60, f"{len(writes)} writes for 60 windows: acknowledgements went alone"
    assert sum(kinds(w) == {codec.PUBLISH, codec.PUBACK} for w in writes) > 30
    assert kinds(writes[-1]) == {codec.PUBACK}
    # Nor do the answers' PUBACKs wake the link, each soon after its answer: they lie under the
    # socket's low-water mark until the next window (before it, 59 reads of them alone).
    acks_alone = [packets for _, packets in takes if kinds(packets) == {codec.PUBACK}]
    assert len(acks_alone) < 10, f"{len(acks_alone)} reads of acknowledgements alone for 60 windows"
    link.stop(1)
    sensor.close()

    # Nothing is left for the session to redeliver.
    inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
    link = started_link(config, inbox)
    assert drain(inbox, 1, 1.5) == []
    link.stop(1)


@pytest.mark.integration
def test_a_suback_is_read_as_it_comes_not_with_the_first_window_or_ping(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It may be a refusal, which the log must say at once; 5 bytes, under the low-water mark.
    takes = recorded_takes(monkeypatch)
    started = time.monotonic()
    link = started_link(settings(make_broker().url, tmp_path, keepalive_s=30), queue.SimpleQueue())
    deadline = started + 5
    while not any(codec.SUBACK in kinds(packets) for _, packets in takes) and time.monotonic() < deadline:
        time.sleep(0.01)
    read = [at for at, packets in takes if codec.SUBACK in kinds(packets)]
    assert read, "the SUBACK was not read (the first PINGREQ goes out after 15 s)"
    assert read[0] - started < 3
    link.stop(1)


@pytest.mark.integration
def test_a_windows_last_bytes_arriving_alone_are_read_at_once_under_the_low_water_mark(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three bytes, under the mark: were it raised while a packet is half read, they would wait
    # for the next read (a second here, the keep-alive's poll; the lazy read waits 5 s).
    monkeypatch.setattr(wire_link, "LAZY_READ_S", 5.0)
    takes = recorded_takes(monkeypatch)
    proxy = BlackHoleProxy(make_broker(), tail_bytes=3)
    sensor = Peer(proxy.broker, "sensor")
    arrived: list[float] = []

    def answer(batch: list[Incoming]) -> None:
        arrived.extend(time.monotonic() for _ in batch)
        link.publish_many(Outgoing(f"{PREFIX}/answers", x.payload, 1, then_ack=x) for x in batch)

    link = WireLink(settings(f"mqtt://127.0.0.1:{proxy.port}", tmp_path), RAW, answer)
    try:
        link.start()
        assert link.wait_connected(10)
        # Windows published before the broker has the subscription would go nowhere.
        wait_until(lambda: any(codec.SUBACK in kinds(packets) for _, packets in takes), 10, "the SUBACK")
        waits = []
        for i in range(5):
            sent = time.monotonic()
            sensor.client.publish(f"{PREFIX}/machines/m1/raw", f"w{i}".encode() * 100, qos=1)
            count = i + 1
            wait_until(lambda: len(arrived) >= count, 5, f"window {i}")  # noqa: B023 - used at once
            waits.append(arrived[i] - sent)
            time.sleep(0.05)
        assert max(waits) < 0.5, [f"{w:.3f}" for w in waits]
    finally:
        link.stop(1)
        sensor.close()
        proxy.close()


def test_the_low_water_mark_is_raised_only_on_plain_tcp_and_while_lazy() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    sock = socket.create_connection(server.getsockname())
    mark = connection.LowWaterMark(sock)

    def level() -> int:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)

    mark.set(lazy=True)
    assert (mark.raised, mark.holding, level()) == (True, False, connection.LAZY_LOW_WATER)
    mark.set(lazy=False)
    assert (mark.raised, level()) == (False, 1)
    # Windows held for company: the bytes the batch has room for, between the lazy mark and the
    # highest; not while something waits on the broker's few bytes (not lazy).
    for room, expected in (
        (40_000, 40_000),
        (3, connection.LAZY_LOW_WATER),
        (1 << 30, connection.HOLD_LOW_WATER),
    ):
        mark.set(lazy=True, hold_bytes=room)
        assert (mark.level, level(), mark.holding) == (
            expected,
            expected,
            expected > connection.LAZY_LOW_WATER,
        )
    mark.set(lazy=False, hold_bytes=40_000)
    assert (mark.raised, level()) == (False, 1)
    tls = ssl.create_default_context().wrap_socket(
        socket.socket(), server_hostname="localhost", do_handshake_on_connect=False
    )
    tls_mark = connection.LowWaterMark(tls)
    tls_mark.set(lazy=True, hold_bytes=40_000)
    assert not tls_mark.raised
    assert tls.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
    for s in (tls, sock, server):
        s.close()


@pytest.mark.integration
def test_a_coalescing_deadline_delivers_windows_that_came_apart_as_one_batch_read_at_once(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make_broker()
    sensor = Peer(broker, "sensor")
    batches: list[list[Incoming]] = []
    takes = recorded_takes(monkeypatch)
    link = WireLink(settings(broker.url, tmp_path, batch_deadline_ms=400), RAW, batches.append)
    link.start()
    assert link.wait_connected(10)
    wait_until(lambda: any(codec.SUBACK in kinds(packets) for _, packets in takes), 10, "the SUBACK")
    takes.clear()
    for i in range(4):  # four windows, 50 ms apart: within one deadline
        sensor.client.publish(f"{PREFIX}/machines/m1/raw", f"w{i}".encode() * 500, qos=1)
        time.sleep(0.05)
    wait_until(lambda: bool(batches), 5, "the batch")
    assert [[x.payload for x in batch] for batch in batches] == [[f"w{i}".encode() * 500 for i in range(4)]]
    # The first window woke the link; the others lay in the socket under the hold's mark (the
    # bytes of the 63 windows the batch had room for) and were read at the deadline, in one take.
    windows = [len([p for p in packets if isinstance(p, codec.Message)]) for _, packets in takes]
    assert [n for n in windows if n] == [1, 3], takes
    # Their latency counts from the first window (they came after it, at most that long ago); the
    # wall clock their error messages would carry stays the read's.
    first, *rest = batches[0]
    assert {x.received_perf_ns for x in rest} == {first.received_perf_ns}
    assert {x.received_ns for x in rest} != {first.received_ns}
    link.stop(0)
    sensor.close()


@pytest.mark.integration
def test_a_batch_full_before_its_deadline_is_read_and_delivered_at_once(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    # The hold's mark is the bytes the batch has room for: the window that fills it wakes the link.
    broker = make_broker()
    sensor = Peer(broker, "sensor")
    delivered: list[tuple[float, list[Incoming]]] = []
    config = settings(broker.url, tmp_path, batch_deadline_ms=1000, batch_max=4)
    link = WireLink(config, RAW, lambda batch: delivered.append((time.monotonic(), batch)))
    link.start()
    assert link.wait_connected(10)
    time.sleep(0.2)  # the SUBACK
    started = time.monotonic()
    for i in range(4):
        sensor.client.publish(f"{PREFIX}/machines/m1/raw", bytes([i]) * 2000, qos=1)
        time.sleep(0.02)
    wait_until(lambda: bool(delivered), 5, "the batch")
    at, batch = delivered[0]
    assert [x.payload[0] for x in batch] == [0, 1, 2, 3]
    assert at - started < 0.5, f"a full batch waited {at - started:.3f} s for its deadline"
    link.stop(0)
    sensor.close()


@pytest.mark.integration
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_backlog_is_read_on_past_one_read_into_batches_of_up_to_batch_max(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, tls: bool
) -> None:
    ca: Path | None = None
    extra: tuple[str, ...] = ()
    if tls:
        ca, cert, key = write_ca_and_server_cert(tmp_path / "tls")
        extra = (f"cafile {ca}", f"certfile {cert}", f"keyfile {key}")
    broker = make_broker(*extra)
    url = f"mqtts://localhost:{broker.port}" if tls else broker.url
    config = settings(url, tmp_path, session_expiry_s=300, batch_max=16, mqtt_ca_file=ca)
    # The session first; the windows then wait in it, as they do while a gateway is away.
    started_link(config, queue.SimpleQueue()).stop(0)
    sensor = paho.Client(CallbackAPIVersion.VERSION2, client_id="sensor", protocol=MQTTProtocolVersion.MQTTv5)
    if ca:
        sensor.tls_set(ca_certs=str(ca))
    sensor.connect("localhost", broker.port)
    sensor.loop_start()
    sent = [bytes([i]) * 1000 for i in range(64)]
    for info in [sensor.publish(f"{PREFIX}/machines/m1/raw", payload, qos=1) for payload in sent]:
        info.wait_for_publish(10)
    # At most four of these windows fit in one read (and one in a TLS record): a batch of more
    # was read on past its first read, and its size is held to about `batch_max`.
    monkeypatch.setattr(wire_link, "RECV_BYTES", 4096)
    monkeypatch.setattr(connection, "RECV_BYTES", 4096)
    batches: list[list[Incoming]] = []
    link = WireLink(config, RAW, batches.append)
    link.start()
    assert link.wait_connected(10)
    deadline = time.monotonic() + 10
    while sum(map(len, batches)) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [x.payload for batch in batches for x in batch] == sent
    sizes = [len(batch) for batch in batches]
    assert 4 < max(sizes) <= 16, sizes
    link.stop(0)
    sensor.disconnect()
    sensor.loop_stop()


# --- one take of reads, on a socketpair's bytes -----------------------------------------------


def _taking(tmp_path: Path, batch_max: int = 64) -> tuple[WireLink, socket.socket, socket.socket]:
    """A link (not started) whose socket is one end of a socketpair, as its network thread holds it."""
    link = WireLink(settings("mqtt://127.0.0.1:1", tmp_path, batch_max=batch_max), RAW, lambda _: None)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)  # noqa: FBT003 - as the link's own socket
    link._sock = ours  # what a connect sets
    return link, ours, theirs


def _windows_of_1024_bytes(n: int) -> list[bytes]:
    """PUBLISH packets of exactly 1024 bytes each: four fill a 4096-byte read."""
    topic = f"{PREFIX}/machines/m1/raw"
    overhead = len(codec.publish_packet(topic, b"x" * 1000, qos=1, packet_id=1)) - 1000
    return [
        codec.publish_packet(topic, bytes([i]) * (1024 - overhead), qos=1, packet_id=i + 1) for i in range(n)
    ]


def _take(link: WireLink, sock: socket.socket, parser: Parser) -> list[codec.Message | codec.Control] | None:
    return link._take(sock, parser, memoryview(bytearray(4096)))  # the read loop's step


def test_a_take_reads_on_while_reads_come_back_full_and_stops_short_of_batch_max(tmp_path: Path) -> None:
    link, ours, theirs = _taking(tmp_path, batch_max=14)
    packets = _windows_of_1024_bytes(64)
    theirs.sendall(b"".join(packets))
    parser = Parser(1 << 20)
    takes = []
    while (taken := _take(link, ours, parser)) is not None:
        takes.append(taken)
    # Four windows a read: a take goes on while one more read still fits in 14 windows.
    assert [len(t) for t in takes] == [12, 12, 12, 12, 12, 4]
    assert [m.packet_id for t in takes for m in t if isinstance(m, codec.Message)] == list(range(1, 65))
    # A short read ends a take: a hall's window is answered alone, at once.
    theirs.sendall(packets[0] + packets[1][:100])
    assert len(_take(link, ours, parser) or []) == 1
    theirs.sendall(packets[1][100:])
    assert len(_take(link, ours, parser) or []) == 1
    theirs.close()
    ours.close()


def test_a_take_keeps_what_came_before_the_broker_hung_up_or_sent_a_malformed_packet(tmp_path: Path) -> None:
    link, ours, theirs = _taking(tmp_path)
    theirs.sendall(b"".join(_windows_of_1024_bytes(8)))  # two full reads, then the end
    theirs.close()
    parser = Parser(1 << 20)
    assert len(_take(link, ours, parser) or []) == 8
    with pytest.raises(ConnectionError, match="the broker closed the connection"):
        _take(link, ours, parser)
    ours.close()

    link, ours, theirs = _taking(tmp_path)
    theirs.sendall(b"".join(_windows_of_1024_bytes(4)) + b"\x30\xff\xff\xff\xff\x01")
    parser = Parser(1 << 20)
    with pytest.raises(codec.ProtocolError, match="longer than four bytes") as refused:
        _take(link, ours, parser)
    assert [m.packet_id for m in refused.value.parsed if isinstance(m, codec.Message)] == [1, 2, 3, 4]
    theirs.close()
    ours.close()


def test_a_take_of_a_packet_not_yet_whole_still_counts_as_heard(tmp_path: Path) -> None:
    link, ours, theirs = _taking(tmp_path)
    parser = Parser(1 << 20)
    assert _take(link, ours, parser) is None  # nothing to read at all
    big = codec.publish_packet(f"{PREFIX}/machines/m1/raw", b"x" * 5000, qos=1, packet_id=1)
    theirs.sendall(big[:4096])  # a full read, then nothing: the rest of the packet is on its way
    assert _take(link, ours, parser) == []  # bytes came, no packet yet: the broker was heard
    theirs.sendall(big[4096:])
    assert _take(link, ours, parser) == [codec.Message(f"{PREFIX}/machines/m1/raw", b"x" * 5000, 1, 1)]
    theirs.close()
    ours.close()


@pytest.mark.integration
def test_a_refused_connect_names_the_reason_and_is_retried(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker("allow_anonymous false")
    link = WireLink(
        settings(broker.url, tmp_path, mqtt_username="nobody", mqtt_password="wrong"),  # noqa: S106
        RAW,
        queue_into(queue.SimpleQueue()),
    )
    with caplog.at_level(logging.WARNING, logger="vibration_infer.serve.wire"):
        link.start()
        time.sleep(2.5)
        assert not link.connected
        link.stop(0)
    refused = [event_fields(r) for r in caplog.records if r.getMessage() == "mqtt_connect_refused"]
    assert len(refused) >= 2, "retried after the first refusal"
    assert refused[0] == {"event": "mqtt_connect_refused", "reason": "not authorized (0x87)"}
    assert all("wrong" not in JsonFormatter().format(r) for r in caplog.records), "no password in the logs"


@pytest.mark.integration
def test_a_secret_that_is_not_text_is_named_and_the_link_connects_once_it_is_mended(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Anything the connect attempt raises leaves the network thread alive to try again: it
    # once died on a password file that was not UTF-8, and a mended Secret never connected.
    broker = make_broker()
    password = tmp_path / "password"
    password.write_bytes(b"s3cr\xe9t\n")
    link = WireLink(
        settings(broker.url, tmp_path, mqtt_username="serving", mqtt_password_file=password),
        RAW,
        queue_into(queue.SimpleQueue()),
    )
    with caplog.at_level(logging.WARNING, logger="vibration_infer.serve.wire"):
        link.start()
        time.sleep(1.5)
        assert not link.connected
        failed = [event_fields(r) for r in caplog.records if r.getMessage() == "mqtt_connect_failed"]
        assert failed, "the refusal is logged"
        assert "is not UTF-8 text" in failed[0]["error"]
        assert "s3cr" not in failed[0]["error"], "never the secret's content"
        password.write_text("s3cret\n")
        assert link.wait_connected(10), "the mended secret is read on the next attempt"
        link.stop(0)


@pytest.mark.integration
def test_the_network_thread_lives_on_whatever_a_connect_attempt_raises(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug (here a struct.error) in one connect attempt must not end the thread for good: the
    # pod would stay unready, and nothing would restart it (liveness stays green).
    real, attempts = connection.open_connection, []

    def breaks_once(settings: ServeSettings) -> connection.Connection:
        attempts.append(1)
        if len(attempts) == 1:
            raise struct.error("unpack requires a buffer of 4 bytes")
        return real(settings)

    monkeypatch.setattr(wire_link, "open_connection", breaks_once)
    link = WireLink(settings(broker.url, tmp_path), RAW, queue_into(queue.SimpleQueue()))
    with caplog.at_level(logging.WARNING, logger="vibration_infer.serve.wire"):
        link.start()
        assert link.wait_connected(10), "connected at the next attempt"
        link.stop(0)
    assert len(attempts) >= 2
    assert any(r.getMessage() == "mqtt_connect_error" for r in caplog.records), "the bug is logged"


def write_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA, and a server certificate for `localhost` that it signed: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hall-a test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.mark.integration
def test_tls_with_a_private_ca_carries_windows_and_a_stranger_ca_is_refused(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca, cert, key = write_ca_and_server_cert(tmp_path / "tls")
    other_ca, _, _ = write_ca_and_server_cert(tmp_path / "other")
    broker = make_broker(f"cafile {ca}", f"certfile {cert}", f"keyfile {key}")
    url = f"mqtts://localhost:{broker.port}"

    inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
    link = started_link(settings(url, tmp_path, mqtt_ca_file=ca), inbox)
    # A window in and an answer out, through the TLS listener (so a paho peer speaks TLS too).
    peer = paho.Client(CallbackAPIVersion.VERSION2, client_id="peer", protocol=MQTTProtocolVersion.MQTTv5)
    peer.tls_set(ca_certs=str(ca))
    answers: list[bytes] = []
    subscribed = threading.Event()
    peer.on_message = lambda _c, _u, m: answers.append(bytes(m.payload))
    peer.on_subscribe = lambda *_: subscribed.set()
    peer.connect("localhost", broker.port)
    peer.loop_start()
    peer.subscribe(f"{PREFIX}/answers", 1)
    assert subscribed.wait(10)
    peer.publish(f"{PREFIX}/machines/m1/raw", b"\x00" * 20_000, qos=1)
    (window,) = drain(inbox, 1, 10)
    assert window.payload == b"\x00" * 20_000
    link.publish(f"{PREFIX}/answers", b"label", qos=1, then_ack=window)
    deadline = time.monotonic() + 10
    while not answers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert answers == [b"label"]
    link.stop(2)
    peer.disconnect()
    peer.loop_stop()

    stranger = WireLink(
        settings(url, tmp_path, client_id="stranger", mqtt_ca_file=other_ca),
        RAW,
        queue_into(queue.SimpleQueue()),
    )
    with caplog.at_level(logging.WARNING, logger="vibration_infer.serve.wire"):
        stranger.start()
        time.sleep(1.0)
        assert not stranger.connected
        stranger.stop(0)
    failed = [r for r in caplog.records if r.getMessage() == "mqtt_connect_failed"]
    assert any("certificate verify failed" in event_fields(r)["error"] for r in failed)


@pytest.mark.integration
def test_an_idle_link_keeps_its_session_alive_with_pings(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker()
    with caplog.at_level(logging.INFO, logger="vibration_infer.serve.wire"):
        link = started_link(settings(broker.url, tmp_path, keepalive_s=5), queue.SimpleQueue())
        # The broker drops a client silent for 1.5 keep-alives (7.5 s): only PINGREQs speak here.
        time.sleep(8.5)
        assert link.connected
        link.stop(1)
    events = [r.getMessage() for r in caplog.records]
    assert events.count("mqtt_connected") == 1
    assert "mqtt_disconnected" not in events


class BlackHoleProxy:
    """A TCP relay to the broker that can start swallowing every byte: a half-open connection.

    With `tail_bytes`, each chunk the broker sends comes in two writes, its last bytes 20 ms
    after the rest: a packet's end that arrives alone, as over a real network's segments.
    """

    def __init__(self, broker: Mosquitto, tail_bytes: int = 0) -> None:
        self.broker = broker
        self.tail_bytes = tail_bytes
        self.frozen = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._server.accept()
                upstream = socket.create_connection((self.broker.host, self.broker.port))
                self._sockets += [client, upstream]
                for src, dst, tail in ((client, upstream, 0), (upstream, client, self.tail_bytes)):
                    threading.Thread(target=self._pump, args=(src, dst, tail), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, tail: int) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if self.frozen.is_set():
                    continue
                if tail and len(data) > tail:
                    dst.sendall(data[:-tail])
                    time.sleep(0.02)
                    data = data[-tail:]
                dst.sendall(data)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


@pytest.mark.integration
def test_a_half_open_connection_is_found_by_its_unanswered_ping_while_the_pod_publishes(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = BlackHoleProxy(make_broker())
    config = settings(
        f"mqtt://127.0.0.1:{proxy.port}", tmp_path, keepalive_s=5, reconnect_min_s=30, reconnect_max_s=30
    )
    with caplog.at_level(logging.INFO, logger="vibration_infer.serve.wire"):
        link = started_link(config, queue.SimpleQueue())
        proxy.frozen.set()  # the broker is gone, the socket is not: writes still succeed
        frozen_at = time.monotonic()
        while link.connected and time.monotonic() - frozen_at < 15:
            link.publish(f"{PREFIX}/nodes/node-w/status", b"{}", qos=1)  # never acknowledged now
            time.sleep(0.5)
        found_s = time.monotonic() - frozen_at
        link.stop(0)
    proxy.close()
    # A PINGREQ goes out 2.5 s after the last byte heard, unanswered for 5 s.
    assert not link.connected, "publishing kept a dead connection looking alive"
    assert found_s < 9.5
    assert {"event": "mqtt_disconnected", "reason": "no answer to PINGREQ within 5 s"} in [
        event_fields(r) for r in caplog.records
    ]


@pytest.mark.integration
def test_the_brokers_connack_limits_are_kept_instead_of_getting_the_link_dropped(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker("retain_available false", "max_qos 1", "max_packet_size 3000")
    listener = Peer(broker, "listener", [f"{PREFIX}/#"])
    with caplog.at_level(logging.INFO, logger="vibration_infer.serve.wire"):
        link = started_link(settings(broker.url, tmp_path), queue.SimpleQueue())
        link.publish(f"{PREFIX}/status", b"retained", qos=1, retain=True)  # retain dropped
        link.publish(f"{PREFIX}/qos2", b"two", qos=2)  # sent at QoS 1
        link.publish(f"{PREFIX}/big", b"x" * 5000, qos=1)  # larger than the broker takes: refused here
        link.publish(f"{PREFIX}/after", b"after", qos=1)
        deadline = time.monotonic() + 10
        while len(listener.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert link.connected
        assert link.unacknowledged() == 0
        link.stop(1)
    listener.close()
    assert listener.received == [
        (f"{PREFIX}/status", b"retained"),
        (f"{PREFIX}/qos2", b"two"),
        (f"{PREFIX}/after", b"after"),
    ]
    events = [event_fields(r) for r in caplog.records]
    assert [e["event"] for e in events].count("mqtt_connected") == 1, "the broker never dropped the link"
    too_large = {
        "event": "mqtt_publish_too_large",
        "topic": f"{PREFIX}/big",
        "bytes": 5021,
        "broker_maximum": 3000,
    }
    assert too_large in events


@pytest.mark.integration
def test_an_answer_the_acl_refuses_is_logged_once_and_leaves_nothing_waiting(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acl = tmp_path / "aclfile"
    acl.write_text(f"topic readwrite {PREFIX}/machines/#\ntopic readwrite {PREFIX}/answers\n")
    broker = make_broker(f"acl_file {acl}")
    sensor, listener = Peer(broker, "sensor"), Peer(broker, "listener", [f"{PREFIX}/answers"])
    config = settings(broker.url, tmp_path, session_expiry_s=300)
    inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
    with caplog.at_level(logging.INFO, logger="vibration_infer.serve.wire"):
        link = started_link(config, inbox)
        for i in range(4):
            sensor.client.publish(f"{PREFIX}/machines/m1/raw", f"w{i}".encode(), qos=1)
        windows = drain(inbox, 4, 10)
        # Two answers go where the ACL does not let the pod write.
        topics = [f"{PREFIX}/forbidden", f"{PREFIX}/answers"] * 2
        link.publish_many(Outgoing(t, w.payload, 1, then_ack=w) for t, w in zip(topics, windows, strict=True))
        deadline = time.monotonic() + 10
        while (len(listener.received) < 2 or link.unacknowledged()) and time.monotonic() < deadline:
            time.sleep(0.02)
        link.stop(2)
    assert sorted(p for _, p in listener.received) == [b"w1", b"w3"]
    refused = [event_fields(r) for r in caplog.records if r.getMessage() == "mqtt_publish_refused"]
    assert refused == [
        {
            "event": "mqtt_publish_refused",
            "topic": f"{PREFIX}/forbidden",
            "reason": "not authorized (0x87)",
            "refusals": 1,
        }
    ]
    # Nothing is left waiting and nothing loops. Mosquitto 2.0 hangs up right after a refusal
    # ("Bad socket read/write" in its log), so the inputs whose PUBACK could not go out come
    # back once on the next connection, where serve's deduper only acknowledges them.
    assert link.unacknowledged() == 0
    sensor.close()
    listener.close()


@pytest.mark.integration
def test_the_receive_maximum_holds_the_broker_back_and_a_broker_that_ignores_it_is_named(
    make_broker: Callable[..., Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker()
    sensor = Peer(broker, "sensor")
    inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
    with caplog.at_level(logging.WARNING, logger="vibration_infer.serve.wire"):
        link = started_link(settings(broker.url, tmp_path, receive_maximum=50, max_inflight=100), inbox)
        for i in range(400):
            sensor.client.publish(f"{PREFIX}/machines/m1/raw", f"w{i}".encode(), qos=1)
        # Nothing acknowledged: the broker stops at the Receive Maximum.
        held = drain(inbox, 400, 2)
        assert len(held) == 50
        assert not caplog.records
        # Answering releases the rest. Debian 12's Mosquitto 2.0.11 then sends everything it
        # queued at once, past the Receive Maximum: the link says so, once, and answers all.
        received, published, pending = len(held), 0, held
        peak = 0  # inputs received here and not acknowledged yet, at most (as this test sees them)
        deadline = time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            link.publish_many(Outgoing(f"{PREFIX}/answers", w.payload, 1, then_ack=w) for w in pending)
            published += len(pending)
            pending = drain(inbox, 400 - received, 0.2) if received < 400 else []
            received += len(pending)
            peak = max(peak, received - (published - link.unacknowledged()))
        link.stop(5)
    assert (received, published, link.unacknowledged()) == (400, 400, 0)
    warnings = [event_fields(r) for r in caplog.records]
    assert len(warnings) <= 1, "once per connection"
    if peak > 50:  # the broker went past the Receive Maximum: the link must have said so
        assert warnings == [warnings[0]], f"{peak} inputs open at once, no warning"
        assert warnings[0]["event"] == "mqtt_broker_exceeds_receive_maximum"
        assert warnings[0]["unacknowledged"] > 50
        assert warnings[0]["receive_maximum"] == 50
    sensor.close()
