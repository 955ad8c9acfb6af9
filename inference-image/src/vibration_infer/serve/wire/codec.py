"""MQTT 5 packets as bytes: the few a serving pod sends, and a parser for what a broker sends back.

Pure functions over bytes, no sockets: `link.WireLink` does the I/O. Only
what the pod needs is here (OASIS MQTT 5.0, chapters 2 and 3):

- out: CONNECT (clean start or not, keep-alive, Session Expiry Interval,
  Receive Maximum, user name and password), SUBSCRIBE (one filter),
  UNSUBSCRIBE, PUBLISH at QoS 0, 1 or 2 without properties, PUBACK, PUBREL,
  PINGREQ, DISCONNECT;
- in: `Parser` splits a byte stream into packets and decodes PUBLISH,
  PUBACK, PUBREC, PUBCOMP, CONNACK (with the limits the pod keeps), SUBACK,
  UNSUBACK, PINGRESP and DISCONNECT. A PUBLISH's properties
  are skipped: the pod asks for no topic aliases and reads none.

The parser works on a growing buffer and returns every complete packet, so
one `recv` of a megabyte holding sixty windows costs one call, not sixty.

Why not the PyPI package `mqtt5` (Rust, sans-I/O, 0.8.0, the codec of
aiomqtt's next client), measured against this module with its tests and a
real Mosquitto: it aborts the process's thread with a Rust panic (not a
Python exception, so the link's reconnect loop never sees it) on a topic or
reason string that is not valid UTF-8, which a broker passes on from any
client; it reads one packet from the start of a buffer, with no incremental
parser and no packet size limit (a partial and an oversized packet raise the
same IndexError); a reason code it does not know raises ValueError and would
drop the session. Behind this seam, with a UTF-8 check and our types around
it, it saves a few percent of a window's batch work (measured when this was
decided, 2026-12). Kept ours.

Longer than the others: it is the MQTT 5 wire format the pod speaks, encoders
and the parser side by side so that each packet's layout is read in one place.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final, NamedTuple, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Sequence

Bytes: TypeAlias = bytes | bytearray | memoryview
"""What packets are parsed from: the parser's buffer, or a read where it lies."""

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
_PUBACK_BYTE: Final = PUBACK << 4
"""A PUBACK's first byte: its type, and no flags."""
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

_PROP_SESSION_EXPIRY: Final = 0x11
_PROP_SERVER_KEEP_ALIVE: Final = 0x13
_PROP_REASON_STRING: Final = 0x1F
_PROP_RECEIVE_MAXIMUM: Final = 0x21
_PROP_MAXIMUM_QOS: Final = 0x24
_PROP_RETAIN_AVAILABLE: Final = 0x25
_PROP_MAXIMUM_PACKET_SIZE: Final = 0x27
# Every property a CONNACK or DISCONNECT may carry, by the size of its value (-1: variable).
_BYTE, _TWO, _FOUR, _STRING, _BINARY, _VARINT, _PAIR = 1, 2, 4, -1, -2, -3, -4
_PROPERTY_KINDS: Final = {
    0x01: _BYTE, 0x02: _FOUR, 0x03: _STRING, 0x08: _STRING, 0x09: _BINARY, 0x0B: _VARINT,
    0x11: _FOUR, 0x12: _STRING, 0x13: _TWO, 0x15: _STRING, 0x16: _BINARY, 0x17: _BYTE,
    0x18: _FOUR, 0x19: _BYTE, 0x1A: _STRING, 0x1C: _STRING, 0x1F: _STRING, 0x21: _TWO,
    0x22: _TWO, 0x23: _TWO, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _FOUR, 0x28: _BYTE,
    0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip

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
    props = bytes((_PROP_SESSION_EXPIRY,)) + struct.pack("!I", session_expiry_s)
    props += bytes((_PROP_RECEIVE_MAXIMUM,)) + struct.pack("!H", receive_maximum)
    if maximum_packet_size is not None:
        props += bytes((_PROP_MAXIMUM_PACKET_SIZE,)) + struct.pack("!I", maximum_packet_size)
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


class Parser:
    """Splits a stream of bytes from the broker into packets."""

    def __init__(self, max_packet_bytes: int) -> None:
        self._buffer = bytearray()
        self._max = max_packet_bytes

    @property
    def partial(self) -> bool:
        """Whether bytes of a packet not yet complete are held."""
        return bool(self._buffer)

    def feed(self, data: bytes | memoryview) -> list[Message | Control]:
        """Add received bytes; return the packets they completed, in order.

        With no partial packet held, the packets are parsed where `data` lies and only what
        is left of an incomplete one is kept: a flood's read (a megabyte, 63 windows) is not
        copied whole into the buffer first, each payload is copied once, into its `Message`.
        """
        held = self._buffer
        if held:
            held += data
        buffer: Bytes = held or data
        out: list[Message | Control] = []
        view = memoryview(buffer)
        offset, size = 0, len(buffer)
        try:
            # `fixed_header` and `_packet_at` inline for the two packets of every window: its
            # PUBLISH and its answer's PUBACK (a few Python calls each, a hall's fixed cost).
            while offset + 1 < size:
                digit = buffer[offset + 1]
                if digit & 0x80 or digit > self._max:  # a longer Remaining Length, or too long
                    header = fixed_header(buffer, offset, self._max)
                    if header is None:
                        break
                    start, end = header
                else:
                    start, end = offset + 2, offset + 2 + digit
                    if end > size:
                        break
                first = buffer[offset]
                if first == _PUBACK_BYTE and end - start >= 2:  # noqa: PLR2004 - a packet id at least
                    reason = buffer[start + 2] if end - start > 2 else 0  # noqa: PLR2004 - then a reason
                    out.append(Control(PUBACK, (buffer[start] << 8) | buffer[start + 1], reason))
                else:
                    out.append(_packet_at(buffer, view, offset, start, end))
                offset = end
        except ProtocolError as exc:
            exc.parsed = out
            raise
        finally:
            if buffer is held:
                view.release()
                del held[:offset]
            else:
                held += view[offset:]
                view.release()
        return out


def fixed_header(buffer: Bytes, offset: int, max_bytes: int) -> tuple[int, int] | None:
    """Where the packet at `offset` has its body and where it ends; None while incomplete."""
    got = _varint(buffer, offset + 1)
    if got is None:
        return None
    length, start = got
    if length > max_bytes:
        raise ProtocolError(f"packet of {length} bytes, more than {max_bytes} taken")
    end = start + length
    return (start, end) if end <= len(buffer) else None


def _packet_at(buffer: Bytes, view: memoryview, offset: int, start: int, end: int) -> Message | Control:
    first = buffer[offset]
    if first >> 4 == PUBLISH:
        return _publish(first, buffer, view, start, end)
    try:
        return _control(first >> 4, bytes(view[start:end]))
    except IndexError:
        raise ProtocolError(f"packet of type {first >> 4} shorter than its fields") from None


def _publish(first: int, buffer: Bytes, view: memoryview, start: int, end: int) -> Message:
    qos = (first >> 1) & 0x03
    if qos > 1:  # the link subscribes at QoS 1: a QoS 2 window would need PUBREC, not PUBACK; 3 is none
        raise ProtocolError(f"PUBLISH at QoS {qos}; this client subscribes at QoS 1 and takes no more")
    topic_end = start + 2 + int.from_bytes(buffer[start : start + 2])
    raw_topic = bytes(buffer[start + 2 : topic_end])
    try:
        topic = raw_topic.decode()
    except UnicodeDecodeError:
        topic = raw_topic.decode(errors="replace")  # answered with an error naming it
    i, packet_id = topic_end, 0
    if qos:
        packet_id = int.from_bytes(buffer[i : i + 2])
        i += 2
    props, i = _varint_at(buffer, i)
    if i + props > end:
        raise ProtocolError("PUBLISH properties longer than the packet")
    return Message(topic, bytes(view[i + props : end]), qos, packet_id)


def _control(kind: int, body: bytes) -> Control:
    if kind in (PUBACK, PUBREC, PUBCOMP):
        reason = body[2] if len(body) > 2 else 0  # noqa: PLR2004 - id, then an optional reason
        return Control(kind, packet_id=int.from_bytes(body[:2]), reason=reason)
    if kind == CONNACK:
        props = _properties(body, 2)
        return Control(
            kind,
            reason=body[1],
            session_present=bool(body[0] & 0x01),
            receive_maximum=int(props.get(_PROP_RECEIVE_MAXIMUM, 65535)),
            keepalive_s=int(props[_PROP_SERVER_KEEP_ALIVE]) if _PROP_SERVER_KEEP_ALIVE in props else None,
            maximum_qos=int(props.get(_PROP_MAXIMUM_QOS, 2)),
            retain_available=bool(props.get(_PROP_RETAIN_AVAILABLE, 1)),
            maximum_packet_size=(
                int(props[_PROP_MAXIMUM_PACKET_SIZE]) if _PROP_MAXIMUM_PACKET_SIZE in props else None
            ),
            reason_string=str(props.get(_PROP_REASON_STRING, "")),
        )
    if kind in (SUBACK, UNSUBACK):
        length, start = _varint_at(body, 2)
        codes = body[start + length :]
        return Control(kind, packet_id=int.from_bytes(body[:2]), reason=codes[0] if codes else 0x80)
    if kind == DISCONNECT:
        reason = body[0] if body else 0
        props = _properties(body, 1) if len(body) > 1 else {}
        return Control(kind, reason=reason, reason_string=str(props.get(_PROP_REASON_STRING, "")))
    return Control(kind)


def _varint(data: Bytes, i: int) -> tuple[int, int] | None:
    """The Variable Byte Integer at `i` and the index after it; None when `data` ends first."""
    value, shift = 0, 0
    while True:
        if i >= len(data):
            return None
        digit = data[i]
        value |= (digit & 0x7F) << shift
        i += 1
        if not digit & 0x80:
            return value, i
        shift += 7
        if shift > 21:  # noqa: PLR2004 - four bytes at most
            raise ProtocolError("variable byte integer longer than four bytes")


def _varint_at(data: Bytes, i: int) -> tuple[int, int]:
    got = _varint(data, i)
    if got is None:
        raise ProtocolError("truncated variable byte integer")
    return got


def _properties(body: bytes, start: int) -> dict[int, int | str | bytes]:
    length, i = _varint_at(body, start)
    end = i + length
    out: dict[int, int | str | bytes] = {}
    if end > len(body):
        raise ProtocolError("properties longer than the packet")
    while i < end:
        key, i = _varint_at(body, i)
        kind = _PROPERTY_KINDS.get(key)
        if kind is None:
            raise ProtocolError(f"unknown property 0x{key:02x}")
        if kind > 0:
            out[key], i = int.from_bytes(body[i : i + kind]), i + kind
        elif kind == _VARINT:
            out[key], i = _varint_at(body, i)
        else:
            size = int.from_bytes(body[i : i + 2])
            value = body[i + 2 : i + 2 + size]
            i += 2 + size
            if kind == _PAIR:  # a user property: a second string follows
                i += 2 + int.from_bytes(body[i : i + 2])
            else:
                out[key] = value.decode(errors="replace") if kind == _STRING else value
    return out
