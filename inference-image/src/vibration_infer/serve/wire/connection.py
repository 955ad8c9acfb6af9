"""The wire link's socket: dial, TLS, the CONNECT/CONNACK handshake, and non-blocking writes.

`open_connection` returns a connected, non-blocking socket with its parser
and the broker's CONNACK (and whatever packets came in the same read), or
raises: `OSError` (no route, refused, TLS verification, timeout),
`ConnectionRefusedError` naming the CONNACK's reason, or
`codec.ProtocolError`. Waiting uses `poll`, which has no limit on
descriptor numbers (`select` fails from 1024 on).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
from typing import TYPE_CHECKING, NamedTuple

from vibration_infer.serve.wire import codec
from vibration_infer.serve.wire.parser import Parser

if TYPE_CHECKING:
    from vibration_infer.serve.settings import ServeSettings

logger = logging.getLogger("vibration_infer.serve.wire")

RECV_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 10.0
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Connection(NamedTuple):
    """A connected session's socket and what the handshake brought."""

    sock: socket.socket
    parser: Parser
    connack: codec.Control
    early: list[codec.Message | codec.Control]
    """Packets that came in the same read as the CONNACK."""


def open_connection(settings: ServeSettings) -> Connection:
    """Dial the broker, start TLS for mqtts://, send CONNECT (clean start off) and await the CONNACK."""
    s = settings
    username, password = s.mqtt_credentials()
    sock = socket.create_connection((s.mqtt_host, s.mqtt_port), timeout=CONNECT_TIMEOUT_S)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if s.mqtt_tls:
            context = ssl.create_default_context(cafile=str(s.mqtt_ca_file) if s.mqtt_ca_file else None)
            sock = context.wrap_socket(sock, server_hostname=s.mqtt_host)
        sock.sendall(
            codec.connect_packet(
                s.effective_client_id,
                keepalive_s=s.keepalive_s,
                clean_start=False,
                session_expiry_s=s.session_expiry_s,
                receive_maximum=s.receive_maximum,
                maximum_packet_size=s.max_packet_bytes,
                username=username,
                password=password,
            )
        )
        connection = _await_connack(sock, s.max_packet_bytes)
        sock.setblocking(False)  # noqa: FBT003 - the socket API
    except BaseException:
        sock.close()
        raise
    return connection


def _await_connack(sock: socket.socket, max_packet_bytes: int) -> Connection:
    """Read up to the CONNACK (the connect timeout still applies); refuse a failure code.

    The connection's parser refuses a packet over `max_packet_bytes`, which CONNECT announced:
    a broker that sends one anyway breaks the protocol, and the link reconnects.
    """
    parser = Parser(max_packet_bytes)
    packets: list[codec.Message | codec.Control] = []
    while not packets:
        data = sock.recv(RECV_BYTES)
        if not data:
            raise ConnectionError("the broker closed the connection before CONNACK")
        packets = parser.feed(data)
    connack = packets[0]
    if not isinstance(connack, codec.Control) or connack.kind != codec.CONNACK:
        raise codec.ProtocolError("the broker's first packet was not a CONNACK")
    if connack.reason >= codec.FAILURE:
        detail = f"{codec.reason_name(connack.reason)} {connack.reason_string}".strip()
        logger.error("mqtt_connect_refused", extra={"reason": detail})
        raise ConnectionRefusedError(f"CONNACK refused: {detail}")
    return Connection(sock, parser, connack, packets[1:])


LAZY_LOW_WATER = 16
"""Bytes that wake the network thread while only acknowledgements are owed to it.

Fewer than the smallest PUBLISH the broker can send (21 bytes: a topic of at least
``p/machines/m/raw``, no payload), more than three bare PUBACKs (4 bytes each). At a hall's
pace each answer's PUBACK otherwise woke the pod once more per window (about 30 us of its
600 here, README "Benchmarks"); under the mark it is read with the next window instead, or after
`LAZY_READ_S` when none comes.
"""
LAZY_READ_S = 0.1
"""The longest acknowledgements lie unread under the mark (the inputs' own PUBACKs wait for them)."""


HOLD_LOW_WATER = 256 * 1024
"""The highest mark while the coalescer holds windows for company (`Coalescer.room_bytes`).

Its own bytes, not the batch's room, when that is larger: the kernel grows the socket's
buffer to twice the mark, and a flood reaches this many in a few hundred microseconds.
"""


class LowWaterMark:
    """The socket's SO_RCVLOWAT: 1 byte, `LAZY_LOW_WATER` while lazy, more while windows are held.

    Lazy only while nothing waits on the broker's few bytes: no PINGRESP awaited, no answer
    waiting for an acknowledgement to free its slot, no packet half read (its last bytes may
    be fewer than the mark). While lazy and the coalescer holds windows for company
    (`batch_deadline_ms`), the mark is the bytes of the windows the batch still has room for
    (`hold_bytes`, at most `HOLD_LOW_WATER`): the windows that come meanwhile lie in the socket
    until the batch could be full or its deadline passed, and a hall's windows cost one wake-up
    a batch, not one each. Under TLS a record's overhead makes byte counts meaningless: the
    mark stays at 1.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._able = not isinstance(sock, ssl.SSLSocket)
        self.level = 1

    @property
    def raised(self) -> bool:
        """Whether bytes may lie unread under the mark."""
        return self.level > 1

    @property
    def holding(self) -> bool:
        """Whether windows may lie unread under the mark (it is above the smallest PUBLISH)."""
        return self.level > LAZY_LOW_WATER

    def set(self, *, lazy: bool, hold_bytes: int = 0) -> None:
        """Raise the mark (`lazy`; higher with `hold_bytes`) or lower it to 1; a syscall on a change only."""
        level = 1
        if lazy and self._able:
            level = max(LAZY_LOW_WATER, min(hold_bytes, HOLD_LOW_WATER))
        if level != self.level:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, level)
            self.level = level


def wait_ready(sock: socket.socket, *, write: bool, timeout_s: float) -> bool:
    """Whether `sock` became readable (or writable) within `timeout_s`; an error or hang-up counts."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


def send_all(sock: socket.socket, data: bytes, timeout_s: float) -> None:
    """Write all of `data` to a non-blocking socket.

    TimeoutError when the peer takes nothing for `timeout_s`.
    """
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except WOULD_BLOCK:
            if not wait_ready(sock, write=True, timeout_s=timeout_s):
                raise TimeoutError(f"the broker took no bytes for {timeout_s:g} s") from None
