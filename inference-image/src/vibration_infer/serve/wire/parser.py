"""MQTT 5 packets read: `Parser` splits the broker's byte stream into packets and decodes them.

Pure functions over bytes, no sockets: `link.WireLink` does the I/O, `codec` holds the packet
types, what a packet decodes to (`Message`, `Control`) and the encoders. Decoded here (OASIS
MQTT 5.0, chapters 2 and 3): PUBLISH, PUBACK, PUBREC, PUBCOMP, CONNACK (with the limits the pod
keeps), SUBACK, UNSUBACK, PINGRESP and DISCONNECT. A PUBLISH's properties are skipped: the pod
asks for no topic aliases and reads none.

The parser reads each `recv` where it lies and returns every complete packet, so
one `recv` of a megabyte holding sixty windows costs one call, not sixty; only a
packet a read cuts in two is copied, to be completed by the next.

Why not the PyPI package `mqtt5` (Rust, sans-I/O, 0.8.0, the codec of
aiomqtt's next client), measured against this parser and `codec` with their tests and a
real Mosquitto: it aborts the process's thread with a Rust panic (not a
Python exception, so the link's reconnect loop never sees it) on a topic or
reason string that is not valid UTF-8, which a broker passes on from any
client; it reads one packet from the start of a buffer, with no incremental
parser and no packet size limit (a partial and an oversized packet raise the
same IndexError); a reason code it does not know raises ValueError and would
drop the session. Behind this seam, with a UTF-8 check and our types around
it, it saves a few percent of a window's batch work (measured when this was
decided, 2026-12). Kept ours.
"""

from __future__ import annotations

from typing import Final, TypeAlias

# Imported by name, not read as `codec.X`: the per-packet path looks up globals only, as in one module.
from vibration_infer.serve.wire.codec import (
    CONNACK,
    DISCONNECT,
    PROP_MAXIMUM_PACKET_SIZE,
    PROP_MAXIMUM_QOS,
    PROP_REASON_STRING,
    PROP_RECEIVE_MAXIMUM,
    PROP_RETAIN_AVAILABLE,
    PROP_SERVER_KEEP_ALIVE,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    SUBACK,
    UNSUBACK,
    Control,
    Message,
    ProtocolError,
)

Bytes: TypeAlias = bytes | bytearray | memoryview
"""What packets are parsed from: the parser's buffer, or a read where it lies."""

_PUBACK_BYTE: Final = PUBACK << 4
"""A PUBACK's first byte: its type, and no flags."""

# Every property a CONNACK or DISCONNECT may carry, by the size of its value (-1: variable).
_BYTE, _TWO, _FOUR, _STRING, _BINARY, _VARINT, _PAIR = 1, 2, 4, -1, -2, -3, -4
_PROPERTY_KINDS: Final = {
    0x01: _BYTE, 0x02: _FOUR, 0x03: _STRING, 0x08: _STRING, 0x09: _BINARY, 0x0B: _VARINT,
    0x11: _FOUR, 0x12: _STRING, 0x13: _TWO, 0x15: _STRING, 0x16: _BINARY, 0x17: _BYTE,
    0x18: _FOUR, 0x19: _BYTE, 0x1A: _STRING, 0x1C: _STRING, 0x1F: _STRING, 0x21: _TWO,
    0x22: _TWO, 0x23: _TWO, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _FOUR, 0x28: _BYTE,
    0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip


class Parser:
    """Splits a stream of bytes from the broker into packets."""

    def __init__(self, max_packet_bytes: int) -> None:
        self._buffer = bytearray()
        self._max = max_packet_bytes

    @property
    def partial(self) -> bool:
        """Whether bytes of a packet not yet complete are held."""
        return bool(self._buffer)

    def feed(self, data: Bytes) -> list[Message | Control]:
        """Add received bytes; return the packets they completed, in order.

        Parsed where `data` lies: only a packet that a read cuts is copied into the buffer,
        and the next read gives it just the bytes that complete it, so a flood's reads (a
        megabyte, 63 windows, each read ending inside a packet) are not copied whole first;
        each payload is copied once, into its `Message`. After a malformed packet, it and what
        follows are kept: the next feed meets the failure again.
        """
        out: list[Message | Control] = []
        held = self._buffer
        if held:
            take = 0
            try:
                take = _completing(held, data, self._max)
                held += data[:take]
                del held[: self._scan(held, out)]
            except ProtocolError as exc:
                del held[: exc.offset]
                held += data[take:]
                raise
            if held:  # still cut: `data` went into it whole
                return out
            data = data[take:]
        try:
            offset = self._scan(data, out)
        except ProtocolError as exc:
            held += data[exc.offset :]
            raise
        if offset < len(data):
            held += data[offset:]
        return out

    def _scan(self, buffer: Bytes, out: list[Message | Control]) -> int:
        """Append the complete packets at the start of `buffer` to `out`; return the bytes they took."""
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
            exc.parsed, exc.offset = out, offset
            raise
        finally:
            view.release()
        return offset


def _completing(held: bytearray, data: Bytes, max_bytes: int) -> int:
    """How many bytes of `data` complete the packet `held` starts; all of `data` when it falls short."""
    head = bytes(held[:5]) if len(held) >= 5 else bytes(held) + bytes(data[: 5 - len(held)])  # noqa: PLR2004
    bounds = _bounds(head, 0, max_bytes)
    if bounds is None:  # its length is cut too
        return len(data)
    return min(len(data), max(0, bounds[1] - len(held)))


def fixed_header(buffer: Bytes, offset: int, max_bytes: int) -> tuple[int, int] | None:
    """Where the packet at `offset` has its body and where it ends; None while incomplete."""
    bounds = _bounds(buffer, offset, max_bytes)
    return bounds if bounds is not None and bounds[1] <= len(buffer) else None


def _bounds(buffer: Bytes, offset: int, max_bytes: int) -> tuple[int, int] | None:
    """Where the packet at `offset` has its body and would end; None while its length is cut."""
    got = _varint(buffer, offset + 1)
    if got is None:
        return None
    length, start = got
    if length > max_bytes:
        raise ProtocolError(f"packet of {length} bytes, more than {max_bytes} taken")
    return start, start + length


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
            receive_maximum=int(props.get(PROP_RECEIVE_MAXIMUM, 65535)),
            keepalive_s=int(props[PROP_SERVER_KEEP_ALIVE]) if PROP_SERVER_KEEP_ALIVE in props else None,
            maximum_qos=int(props.get(PROP_MAXIMUM_QOS, 2)),
            retain_available=bool(props.get(PROP_RETAIN_AVAILABLE, 1)),
            maximum_packet_size=(
                int(props[PROP_MAXIMUM_PACKET_SIZE]) if PROP_MAXIMUM_PACKET_SIZE in props else None
            ),
            reason_string=str(props.get(PROP_REASON_STRING, "")),
        )
    if kind in (SUBACK, UNSUBACK):
        length, start = _varint_at(body, 2)
        codes = body[start + length :]
        return Control(kind, packet_id=int.from_bytes(body[:2]), reason=codes[0] if codes else 0x80)
    if kind == DISCONNECT:
        reason = body[0] if body else 0
        props = _properties(body, 1) if len(body) > 1 else {}
        return Control(kind, reason=reason, reason_string=str(props.get(PROP_REASON_STRING, "")))
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
