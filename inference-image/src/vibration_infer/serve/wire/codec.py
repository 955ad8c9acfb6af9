"""MQTT 5 packets as bytes: the packet types and reason codes, and the few packets a serving pod sends.

Pure functions over bytes, no sockets: `link.WireLink` does the I/O, and
`parser.Parser` reads what the broker sends back into this module's
`Message` and `Control`. Only what the pod needs is here (OASIS MQTT 5.0,
chapters 2 and 3): CONNECT (clean start or not, keep-alive, Session Expiry
Interval, Receive Maximum, user name and password), SUBSCRIBE (one filter),
UNSUBSCRIBE, PUBLISH at QoS 0, 1 or 2 without properties, PUBACK, PUBREL,
PINGREQ, DISCONNECT; and what both directions share: the packet types, the
property identifiers, the reason codes, what a packet decodes to and
`ProtocolError`.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Sequence

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

PINGREQ_PACKET: Final = b"\xc0\x00"
DISCONNECT_PACKET: Final = b"\xe0\x00"
"""Normal disconnection (reason 0, no properties): the session stays for its expiry."""
DUP_FLAG: Final = 0x08
FAILURE: Final = 0x80
"""Reason codes from here on are failures."""
PACKET_ID_IN_USE: Final = 0x91
QUOTA_EXCEEDED: Final = 0x97

# Property identifiers: CONNECT sends some, `parser` reads those of a CONNACK and a DISCONNECT.
PROP_SESSION_EXPIRY: Final = 0x11
PROP_SERVER_KEEP_ALIVE: Final = 0x13
PROP_REASON_STRING: Final = 0x1F
PROP_RECEIVE_MAXIMUM: Final = 0x21
PROP_MAXIMUM_QOS: Final = 0x24
PROP_RETAIN_AVAILABLE: Final = 0x25
PROP_MAXIMUM_PACKET_SIZE: Final = 0x27

REASONS: Final = {
    0x00: "success",
    0x04: "disconnect with will message",
    0x11: "no subscription existed",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x92: "packet identifier not found",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
}


class ProtocolError(ValueError):
    """The broker sent bytes that are not the MQTT 5 this pod speaks."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.parsed: list[Message | Control] = []
        """The packets before the bad one, complete and valid: still to be handled."""
        self.offset = 0
        """Where the bad packet starts in the bytes the parser was reading (the parser's own use)."""


def reason_name(code: int) -> str:
    """A reason code as words, e.g. 0x87 -> 'not authorized (0x87)'."""
    return f"{REASONS.get(code, 'reason')} (0x{code:02x})"


def varint(n: int) -> bytes:
    """A Variable Byte Integer (remaining length, property length)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first_byte: int, body: bytes) -> bytes:
    """A whole packet: fixed header (type and flags, remaining length) and `body`."""
    return bytes((first_byte,)) + varint(len(body)) + body


def utf8(text: str) -> bytes:
    """A UTF-8 Encoded String: two bytes of length, then the bytes."""
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(
    client_id: str,
    *,
    keepalive_s: int,
    clean_start: bool,
    session_expiry_s: int,
    receive_maximum: int,
    maximum_packet_size: int | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT, protocol level 5."""
    flags = 0x02 if clean_start else 0
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    props = bytes((PROP_SESSION_EXPIRY,)) + struct.pack("!I", session_expiry_s)
    props += bytes((PROP_RECEIVE_MAXIMUM,)) + struct.pack("!H", receive_maximum)
    if maximum_packet_size is not None:
        props += bytes((PROP_MAXIMUM_PACKET_SIZE,)) + struct.pack("!I", maximum_packet_size)
    body = utf8("MQTT") + bytes((5, flags)) + struct.pack("!H", keepalive_s) + varint(len(props)) + props
    body += utf8(client_id)
    if username is not None:
        body += utf8(username)
    if password is not None:
        body += utf8(password)
    return packet(CONNECT << 4, body)


def subscribe_packet(packet_id: int, topic_filter: str, qos: int) -> bytes:
    """SUBSCRIBE to one filter at most at `qos`, no properties."""
    body = struct.pack("!H", packet_id) + b"\x00" + utf8(topic_filter) + bytes((qos,))
    return packet((SUBSCRIBE << 4) | 0x02, body)


def unsubscribe_packet(packet_id: int, topic_filters: Sequence[str]) -> bytes:
    """UNSUBSCRIBE from `topic_filters`, no properties."""
    body = struct.pack("!H", packet_id) + b"\x00" + b"".join(utf8(f) for f in topic_filters)
    return packet((UNSUBSCRIBE << 4) | 0x02, body)


def publish_packet(
    topic: str, payload: bytes, *, qos: int, packet_id: int = 0, retain: bool = False
) -> bytes:
    """PUBLISH without properties; `packet_id` only at QoS 1 and 2."""
    variable = utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + b"\x00"
    return packet((PUBLISH << 4) | (qos << 1) | int(retain), variable + payload)


def puback_packet(packet_id: int) -> bytes:
    """PUBACK, success (the reason code may be left out when it is 0)."""
    return struct.pack("!BBH", PUBACK << 4, 2, packet_id)


def pubrel_packet(packet_id: int) -> bytes:
    """PUBREL, the second step of a QoS 2 publish."""
    return struct.pack("!BBH", (PUBREL << 4) | 0x02, 2, packet_id)


def as_duplicate(publish: bytes) -> bytes:
    """The same PUBLISH with the DUP flag set, for a resend after a reconnect; other packets as they are."""
    if publish[0] >> 4 != PUBLISH:
        return publish
    return bytes((publish[0] | DUP_FLAG,)) + publish[1:]


class Message(NamedTuple):
    """A PUBLISH the broker delivered."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    """0 at QoS 0."""


class Control(NamedTuple):
    """Any other packet: its type, and what the pod reads of it."""

    kind: int
    packet_id: int = 0
    """PUBACK, SUBACK, UNSUBACK."""
    reason: int = 0
    """PUBACK, CONNACK, DISCONNECT: the reason code; SUBACK, UNSUBACK: the first one."""
    session_present: bool = False
    """CONNACK."""
    receive_maximum: int = 65535
    """CONNACK: how many QoS 1 and 2 publishes the broker takes unacknowledged."""
    keepalive_s: int | None = None
    """CONNACK: the Server Keep Alive, when the broker sets one."""
    maximum_qos: int = 2
    """CONNACK: the highest QoS the broker takes."""
    retain_available: bool = True
    """CONNACK: whether the broker takes retained messages."""
    maximum_packet_size: int | None = None
    """CONNACK: the largest packet the broker takes, when it sets a limit."""
    reason_string: str = ""
