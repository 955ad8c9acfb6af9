"""What the wire link owes the broker: answers in flight or waiting, and the inputs they acknowledge.

A pure state machine, no socket and no lock (`link.WireLink` holds the lock
and writes what each method returns). Every method returns the packets to
send now, in order.

- QoS 1 and 2 publishes wait in order and go in flight while the broker's
  Receive Maximum allows; each keeps the input it answers (`then_ack`).
- When the broker has an answer (PUBACK, PUBCOMP, or a failure reason), the
  answer is settled: its input is acknowledged, if it arrived on the
  current connection (a packet id names another message on the next one,
  and the broker redelivers the unacknowledged anyway).
- A refused answer (reason from 0x80) is settled too, and logged (counted by
  reason): it would be refused again. Not one the broker refuses for now
  only (quota exceeded, packet identifier in use): that answer goes again,
  first in line, and its input waits for it; quota exceeded also lowers the
  number in flight to what the broker took.
- The CONNACK's limits hold: Maximum QoS lowers the QoS, Retain Available
  drops the retain flag, an answer above Maximum Packet Size is logged and
  settled unsent.
- On a new connection everything in flight goes again, marked DUP when the
  broker kept the session.
- A redelivered input (answered already, its answer perhaps still pending
  from the last connection) is acknowledged once every answer pending now is
  settled (`ack_after_pending`): its answer is among them, and the broker
  acknowledges in order. Acknowledged at once, a crash before its answer
  reached the broker would lose the window.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from vibration_infer.serve.wire import codec

if TYPE_CHECKING:
    from collections.abc import Iterable

    from vibration_infer.serve.link import Acknowledgeable, Outgoing

logger = logging.getLogger("vibration_infer.serve.wire")

MAX_QUOTA = 65000
"""Below the 65535 packet ids, so one is always free for a SUBSCRIBE."""
ACK_HOLD_S = 0.01
"""How long an input's PUBACK may wait for the link's next write (`HeldAcks`).

Three windows' gap at a hall's 300 windows/s. Below about 100 windows/s most
acknowledgements go alone, 10 ms later, at the cost of a wake-up each.
"""


def ack_hold_s(batch_deadline_s: float) -> float:
    """How long input PUBACKs wait for the next answers: `ACK_HOLD_S`, or not at all under a batch deadline.

    Windows held for company are answered a deadline apart: the inputs'
    PUBACKs then go at once, on the wake-up that read their answers' PUBACKs,
    not alone on a wake-up of their own 10 ms later.
    """
    return 0.0 if batch_deadline_s > 0 else ACK_HOLD_S


class InFlight(NamedTuple):
    """An answer the broker has not finished with."""

    data: bytes
    """The PUBLISH (or, after a PUBREC, the PUBREL) to send again after a reconnect."""
    message: Outgoing


TRANSIENT_REFUSALS = frozenset({codec.PACKET_ID_IN_USE, codec.QUOTA_EXCEEDED})
"""Packet identifier in use, quota exceeded: refused for now, not for good (EMQX, Mosquitto)."""
REFUSALS_SAID_EVERY = 1000
"""After the first refusal of a kind, every this many are logged (with the topic of the last)."""


class Outbound:
    """Answers in flight and waiting, on whichever connection is up."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.connected = False
        self.generation = 0
        self.limits = codec.Control(codec.CONNACK)
        self.quota = max_inflight
        self.inflight: dict[int, InFlight] = {}
        self.waiting: deque[Outgoing] = deque()
        self.unacknowledged = 0
        """Answers published whose input still waits for its acknowledgement."""
        self.inputs_open = 0
        """QoS 1 inputs received on this connection and not acknowledged yet."""
        self._next_id = 0
        self._refused: dict[int, int] = {}
        """Answers the broker refused, by reason code (not by topic: a sensor may invent machines)."""
        self._after: dict[int, list[Acknowledgeable]] = {}
        """Inputs to acknowledge once a pending answer (by `id` of its Outgoing) is settled."""

    def connect(self, generation: int, connack: codec.Control) -> list[bytes]:
        """A new connection is up: what was in flight goes again, then what waited."""
        self.connected, self.generation, self.limits = True, generation, connack
        self.inputs_open = 0
        self.quota = max(1, min(self.max_inflight, connack.receive_maximum, MAX_QUOTA))
        # Publishes beyond a Receive Maximum the broker lowered meanwhile wait again, in order.
        publishes = [i for i, f in self.inflight.items() if f.data[0] >> 4 == codec.PUBLISH]
        for packet_id in reversed(publishes[self.quota :]):
            self.waiting.appendleft(self.inflight.pop(packet_id).message)
        dup = connack.session_present
        out = [codec.as_duplicate(f.data) if dup else f.data for f in self.inflight.values()]
        self._release(out)
        return out

    def disconnect(self) -> None:
        """The connection is gone: keep everything for the next one."""
        self.connected = False

    def publish(self, messages: Iterable[Outgoing]) -> list[bytes]:
        """Queue messages in order; QoS 0 ones go now or, while disconnected, nowhere."""
        out: list[bytes] = []
        for message in messages:
            if message.qos:
                self.waiting.append(message)
                self.unacknowledged += message.then_ack is not None
            elif self.connected:
                # At QoS 0 the write is all the delivery there is: acknowledge the input with it.
                self._encode_into(out, message, 0, 0)
                self.ack_into(out, message.then_ack)
        self._release(out)
        return out

    def ack_into(self, out: list[bytes], item: Acknowledgeable | None) -> None:
        """Append the PUBACK of an input, if it came at QoS 1 on this connection."""
        if item is not None and item.qos and item.generation == self.generation and self.connected:
            out.append(codec.puback_packet(item.mid))
            self.inputs_open -= 1

    def ack_after_pending(self, item: Acknowledgeable) -> list[bytes]:
        """Acknowledge `item` once every answer pending now is settled; at once when none is."""
        last = self.waiting[-1] if self.waiting else None
        if last is None and self.inflight:
            last = next(reversed(self.inflight.values())).message
        if last is None:
            out: list[bytes] = []
            self.ack_into(out, item)
            return out
        self._after.setdefault(id(last), []).append(item)
        return []

    def acknowledged(
        self, done: Iterable[tuple[int, int]], received: Iterable[tuple[int, int]]
    ) -> list[bytes]:
        """The broker answered: (packet id, reason) of PUBACK/PUBCOMP in `done`, of PUBREC in `received`."""
        out: list[bytes] = []
        finished = list(done)
        for packet_id, reason in received:
            entry = self.inflight.get(packet_id)
            if entry is None:
                continue
            if reason >= codec.FAILURE:  # a refused QoS 2 publish ends at its PUBREC
                finished.append((packet_id, reason))
                continue
            release = codec.pubrel_packet(packet_id)
            self.inflight[packet_id] = entry._replace(data=release)
            out.append(release)
        again: list[Outgoing] = []
        for packet_id, reason in finished:
            settled = self.inflight.pop(packet_id, None)
            if settled is None:
                continue
            if reason in TRANSIENT_REFUSALS:
                again.append(settled.message)
                if reason == codec.QUOTA_EXCEEDED:
                    self.quota = max(1, len(self.inflight))
                continue
            if reason >= codec.FAILURE:
                self._note_refusal(settled.message.topic, reason)
            self._settle(out, settled.message)
        self.waiting.extendleft(reversed(again))
        self._release(out)
        return out

    def take_id(self) -> int:
        """A packet id that nothing in flight uses."""
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self.inflight:
                return self._next_id

    def _settle(self, out: list[bytes], message: Outgoing) -> None:
        if message.then_ack is not None:
            self.unacknowledged -= 1
            self.ack_into(out, message.then_ack)
        for item in self._after.pop(id(message), ()):
            self.ack_into(out, item)

    def _release(self, out: list[bytes]) -> None:
        """Move waiting messages in flight while the broker's Receive Maximum allows."""
        if not self.connected:
            return
        while self.waiting and len(self.inflight) < self.quota:
            message = self.waiting.popleft()
            qos = min(message.qos, self.limits.maximum_qos)
            packet_id = self.take_id() if qos else 0
            data = self._encode_into(out, message, qos, packet_id)
            if data is None or not qos:
                self._settle(out, message)
                continue
            self.inflight[packet_id] = InFlight(data, message)

    def _encode_into(self, out: list[bytes], message: Outgoing, qos: int, packet_id: int) -> bytes | None:
        """Append the PUBLISH within the broker's limits; None when it is larger than the broker takes."""
        retain = message.retain and self.limits.retain_available
        data = codec.publish_packet(
            message.topic, message.payload, qos=qos, packet_id=packet_id, retain=retain
        )
        limit = self.limits.maximum_packet_size
        if limit is not None and len(data) > limit:
            logger.error(
                "mqtt_publish_too_large",
                extra={"topic": message.topic, "bytes": len(data), "broker_maximum": limit},
            )
            return None
        out.append(data)
        return data

    def _note_refusal(self, topic: str, reason: int) -> None:
        count = self._refused[reason] = self._refused.get(reason, 0) + 1
        if count == 1 or count % REFUSALS_SAID_EVERY == 0:  # a refusal that goes on is still said
            extra = {"topic": topic, "reason": codec.reason_name(reason), "refusals": count}
            logger.error("mqtt_publish_refused", extra=extra)


class HeldAcks:
    """Input PUBACKs held back, at most `hold_s`, to go out with the link's next write.

    At a hall's load each window costs the link two writes: its answer, then,
    once the broker has the answer, the input's PUBACK. Held, the PUBACK goes
    with the next window's answer: one `send` a window instead of two, about
    a tenth of serve's CPU at 300 windows/s (docs/benchmarks.md). An input is
    owed the same as before: acknowledged only after its answer, only on the
    connection it came on (held ones are dropped with their connection, and
    the broker redelivers those as any unacknowledged input), and at most
    `hold_s` later. Pure like `Outbound`: the link holds the lock and the clock.
    """

    def __init__(self, hold_s: float = ACK_HOLD_S) -> None:
        self.hold_s = hold_s
        self._packets: list[bytes] = []
        self._since = 0.0

    def __bool__(self) -> bool:
        return bool(self._packets)

    def offer(self, out: list[bytes], now: float) -> list[bytes]:
        """What to write of `out` now: nothing if it is only input PUBACKs (held), else all held and `out`."""
        if self.hold_s > 0 and out and all(packet[0] >> 4 == codec.PUBACK for packet in out):
            if not self._packets:
                self._since = now
            self._packets.extend(out)
            return []
        return self.take(out)

    def take(self, out: list[bytes]) -> list[bytes]:
        """Everything held, then `out`; nothing stays held."""
        if not self._packets:
            return out
        held, self._packets = self._packets, []
        return [*held, *out]

    def due(self, now: float) -> bool:
        """Whether the oldest held PUBACK has waited `hold_s`."""
        return bool(self._packets) and now - self._since >= self.hold_s

    def wait_s(self, now: float, longest: float) -> float:
        """How long the link may wait for the socket before the held PUBACKs are due; at most `longest`."""
        if not self._packets:
            return longest
        return max(0.0, min(longest, self._since + self.hold_s - now))

    def drop(self) -> None:
        """Forget what is held: its connection ended, and the broker sends those inputs again."""
        self._packets = []
