"""The wire link's outbound state machine, driven packet by packet without a socket."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from vibration_core.logs import event_fields
from vibration_infer.serve.link import Incoming, Outgoing
from vibration_infer.serve.wire import codec
from vibration_infer.serve.wire.outbound import (
    ACK_HOLD_S,
    REFUSALS_SAID_EVERY,
    HeldAcks,
    Outbound,
    ack_hold_s,
)
from vibration_infer.serve.wire.parser import Parser

if TYPE_CHECKING:
    import pytest


def window(mid: int, generation: int = 1) -> Incoming:
    return Incoming("h/machines/m1/raw", b"w", mid, 1, generation, time.time_ns(), time.perf_counter_ns())


def connack(**limits: object) -> codec.Control:
    return codec.Control(codec.CONNACK, **limits)  # type: ignore[arg-type]  # keyword fields of mixed types


def parsed(packets: list[bytes]) -> list[codec.Message | codec.Control]:
    return Parser(1 << 20).feed(b"".join(packets))


def test_answers_wait_for_the_receive_maximum_and_each_settled_one_acknowledges_its_input() -> None:
    out = Outbound(max_inflight=100)
    assert out.connect(1, connack(receive_maximum=2)) == []
    sent = parsed(out.publish(Outgoing("h/a", str(i).encode(), 1, then_ack=window(10 + i)) for i in range(5)))
    assert [(p.payload, p.packet_id) for p in sent if isinstance(p, codec.Message)] == [(b"0", 1), (b"1", 2)]
    assert (len(out.inflight), len(out.waiting), out.unacknowledged) == (2, 3, 5)
    # The broker has answer 1: its input's PUBACK, then the next waiting answer.
    step = parsed(out.acknowledged([(1, 0)], []))
    assert step == [codec.Control(codec.PUBACK, packet_id=10), codec.Message("h/a", b"2", 1, 3)]
    assert out.unacknowledged == 4


def test_after_a_reconnect_what_was_in_flight_goes_again_and_old_inputs_are_not_acknowledged() -> None:
    out = Outbound(max_inflight=10)
    out.connect(1, connack())
    first = out.publish([Outgoing("h/a", b"x", 1, then_ack=window(7, generation=1))])
    out.disconnect()
    assert out.publish([Outgoing("h/b", b"q0", 0)]) == [], "QoS 0 while disconnected goes nowhere"
    again = out.connect(2, connack(session_present=True))
    assert again == [codec.as_duplicate(first[0])]
    assert out.acknowledged([(1, 0)], []) == [], "the input's packet id belongs to the old connection"
    assert out.unacknowledged == 0
    assert out.connect(3, connack(session_present=False)) == [], "nothing left in flight"


def test_the_connack_limits_lower_the_qos_drop_the_retain_and_refuse_what_is_too_large(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = Outbound(max_inflight=10)
    out.connect(1, connack(maximum_qos=0, retain_available=False, maximum_packet_size=100))
    with caplog.at_level(logging.ERROR, logger="vibration_infer.serve.wire"):
        packets = out.publish(
            [
                Outgoing("h/status", b"s", 1, retain=True, then_ack=window(3)),
                Outgoing("h/big", b"x" * 200, 1, then_ack=window(4)),
            ]
        )
    assert packets[0] == codec.publish_packet("h/status", b"s", qos=0)
    # Both inputs are acknowledged at once: one answer went at QoS 0, the other never can.
    assert parsed(packets[1:]) == [
        codec.Control(codec.PUBACK, packet_id=3),
        codec.Control(codec.PUBACK, packet_id=4),
    ]
    assert out.unacknowledged == 0
    assert [event_fields(r) for r in caplog.records] == [
        {"event": "mqtt_publish_too_large", "topic": "h/big", "bytes": 211, "broker_maximum": 100}
    ]


def test_qos2_is_released_after_pubrec_and_a_refusal_ends_it_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = Outbound(max_inflight=10)
    out.connect(1, connack())
    out.publish([Outgoing("h/a", b"1", 2, then_ack=window(1)), Outgoing("h/a", b"2", 2, then_ack=window(2))])
    assert out.acknowledged([], [(1, 0)]) == [codec.pubrel_packet(1)]
    assert out.connect(2, connack(session_present=True))[0] == codec.pubrel_packet(1), "PUBREL goes again"
    assert out.acknowledged([(1, 0)], []) == [], "PUBCOMP on a new connection: no old input to acknowledge"
    with caplog.at_level(logging.ERROR, logger="vibration_infer.serve.wire"):
        assert out.acknowledged([], [(2, 0x87)]) == []
        out.publish([Outgoing("h/a", b"3", 2)])
        out.acknowledged([], [(3, 0x87)])
    assert (out.inflight, out.unacknowledged) == ({}, 0)
    assert [event_fields(r) for r in caplog.records] == [
        {"event": "mqtt_publish_refused", "topic": "h/a", "reason": "not authorized (0x87)", "refusals": 1}
    ]


def test_refusals_are_counted_by_reason_not_kept_by_topic(caplog: pytest.LogCaptureFixture) -> None:
    # A broker refusing answers per machine (an ACL allow-list) and a sensor inventing machine
    # names: nothing may grow per topic, and the log says the refusal again now and then.
    out = Outbound(max_inflight=10)
    out.connect(1, connack())
    with caplog.at_level(logging.ERROR, logger="vibration_infer.serve.wire"):
        for i in range(1, 2 * REFUSALS_SAID_EVERY + 1):
            out.publish([Outgoing(f"h/machines/m{i}/predictions", b"{}", 1)])
            (packet_id,) = out.inflight
            out.acknowledged([(packet_id, 0x87)], [])
    assert out._refused == {0x87: 2 * REFUSALS_SAID_EVERY}  # the state that must not grow
    said = [(event_fields(r)["topic"], event_fields(r)["refusals"]) for r in caplog.records]
    assert said == [
        ("h/machines/m1/predictions", 1),
        (f"h/machines/m{REFUSALS_SAID_EVERY}/predictions", REFUSALS_SAID_EVERY),
        (f"h/machines/m{2 * REFUSALS_SAID_EVERY}/predictions", 2 * REFUSALS_SAID_EVERY),
    ]


def test_an_answer_refused_for_now_goes_again_and_its_input_waits() -> None:
    # Quota exceeded (Mosquitto, over its real Receive Maximum) and packet identifier in use
    # (EMQX) are no verdict on the answer: settled, its input was acknowledged and the window lost.
    out = Outbound(max_inflight=10)
    out.connect(1, connack(receive_maximum=3))
    out.publish([Outgoing("h/a", str(i).encode(), 1, then_ack=window(10 + i)) for i in range(3)])
    step = parsed(out.acknowledged([(1, 0), (2, codec.QUOTA_EXCEEDED)], []))
    assert step[0] == codec.Control(codec.PUBACK, packet_id=10), "answer 0's input"
    assert codec.Control(codec.PUBACK, packet_id=11) not in step, "answer 1's input waits for it"
    assert out.quota == 1, "what the broker took"
    assert [m.payload for m in out.waiting] == [b"1"], "first in line, sent once 2 settles"
    assert out.unacknowledged == 2
    again = parsed(out.acknowledged([(3, 0)], []))
    assert again == [codec.Control(codec.PUBACK, packet_id=12), codec.Message("h/a", b"1", 1, 4)]
    assert parsed(out.acknowledged([(4, 0x91)], [])) == [codec.Message("h/a", b"1", 1, 5)]
    assert parsed(out.acknowledged([(5, 0)], [])) == [codec.Control(codec.PUBACK, packet_id=11)]
    assert (out.unacknowledged, out.waiting, out.inflight) == (0, deque(), {})


def test_packet_ids_wrap_around_and_skip_the_ones_in_flight() -> None:
    out = Outbound(max_inflight=3)
    out.connect(1, connack())
    out.publish(Outgoing("h/a", b"", 1) for _ in range(3))
    out.acknowledged([(2, 0)], [])
    ids = [out.take_id() for _ in range(65535 - 3)]  # 4 .. 65535
    assert (ids[0], ids[-1]) == (4, 65535)
    assert [out.take_id(), out.take_id()] == [2, 4], "1 and 3 are still in flight"


def test_answers_beyond_a_receive_maximum_lowered_across_a_reconnect_wait_again_in_order() -> None:
    out = Outbound(max_inflight=100)
    out.connect(1, connack(receive_maximum=5))
    out.publish(Outgoing("h/a", str(i).encode(), 1, then_ack=window(i)) for i in range(8))
    out.disconnect()
    again = parsed(out.connect(2, connack(receive_maximum=2, session_present=True)))
    assert [(p.payload, p.packet_id) for p in again if isinstance(p, codec.Message)] == [(b"0", 1), (b"1", 2)]
    assert [m.payload for m in out.waiting] == [str(i).encode() for i in range(2, 8)]
    assert out.unacknowledged == 8
    step = parsed(out.acknowledged([(1, 0), (2, 0)], []))
    assert [p.payload for p in step if isinstance(p, codec.Message)] == [b"2", b"3"]


# --- input acknowledgements held for the next write ----------------------------------------


def test_acknowledgements_alone_are_held_and_go_first_with_the_next_write() -> None:
    held = HeldAcks(hold_s=0.01)
    acks = [codec.puback_packet(10), codec.puback_packet(11)]
    assert held.offer(acks, now=100.0) == []
    assert held
    answer = codec.publish_packet("h/p", b"a", qos=1, packet_id=3)
    assert held.take([answer]) == [*acks, answer]  # the PUBACKs first: their inputs came first
    assert not held
    assert held.take([answer]) == [answer]


def test_acknowledgements_with_anything_else_go_at_once_after_those_held() -> None:
    held = HeldAcks(hold_s=0.01)
    assert held.offer([codec.puback_packet(10)], now=100.0) == []
    mixed = [codec.puback_packet(11), codec.publish_packet("h/p", b"a", qos=1, packet_id=3)]
    assert held.offer(mixed, now=100.001) == [codec.puback_packet(10), *mixed]
    assert not held


def test_held_acknowledgements_fall_due_after_the_hold_from_the_oldest() -> None:
    held = HeldAcks(hold_s=0.01)
    assert held.wait_s(now=100.0, longest=1.0) == 1.0  # nothing held: the link waits as it would
    held.offer([codec.puback_packet(10)], now=100.0)
    held.offer([codec.puback_packet(11)], now=100.008)  # a later one does not push the deadline
    assert not held.due(now=100.009)
    assert abs(held.wait_s(now=100.009, longest=1.0) - 0.001) < 1e-9
    assert held.due(now=100.01)
    assert held.wait_s(now=100.02, longest=1.0) == 0.0


def test_held_acknowledgements_are_dropped_with_their_connection() -> None:
    held = HeldAcks(hold_s=0.01)
    held.offer([codec.puback_packet(10)], now=100.0)
    held.drop()
    assert not held
    assert not held.due(now=200.0)


def test_a_hold_of_zero_holds_nothing() -> None:
    held = HeldAcks(hold_s=0)
    assert held.offer([codec.puback_packet(10)], now=100.0) == [codec.puback_packet(10)]


def test_a_redelivered_input_is_acknowledged_only_once_the_answers_pending_before_it_are() -> None:
    # Six windows answered, two answers in flight and four waiting, when the connection drops. The
    # broker redelivers the six inputs; their answers are still pending: acknowledged at once, a
    # crash before those answers reach the broker would lose the windows.
    out = Outbound(max_inflight=2)
    out.connect(1, connack())
    out.publish(Outgoing("h/a", str(i).encode(), 1, then_ack=window(100 + i, 1)) for i in range(6))
    out.disconnect()
    out.connect(2, connack(session_present=True))
    assert [out.ack_after_pending(window(200 + i, 2)) for i in range(6)] == [[]] * 6
    acked_when: list[tuple[int, int]] = []  # (input packet id, answers still pending at its PUBACK)
    while out.inflight:
        packet_id = next(iter(out.inflight))
        step = parsed(out.acknowledged([(packet_id, 0)], []))
        pending = len(out.inflight) + len(out.waiting)
        acked_when += [
            (p.packet_id, pending) for p in step if isinstance(p, codec.Control) and p.kind == codec.PUBACK
        ]
    assert acked_when == [(200 + i, 0) for i in range(6)], "after the last answer, in order"
    # With nothing pending, a redelivery is acknowledged at once.
    assert parsed(out.ack_after_pending(window(300, 2))) == [codec.Control(codec.PUBACK, packet_id=300)]


def test_input_acknowledgements_are_held_for_the_next_answers_only_when_those_come_soon() -> None:
    assert ack_hold_s(0.0) == ACK_HOLD_S  # a hall's next window is answered within a few ms
    assert ack_hold_s(0.05) == 0.0  # windows held for company: the next answers are a deadline away
