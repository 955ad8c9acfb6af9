"""A minimal MQTT 3.1.1 client on a plain socket, for load generation and timing.

The benchmarks need a sensor that can publish tens of thousands of 16 KB
windows a second and a listener that stamps each answer the moment it
arrives. paho-mqtt spends tens of microseconds of Python per message, which
would make the *load generator* the limit being measured. This client does
only what a load generator needs, on the bytes themselves:

- CONNECT (clean session, no keepalive), SUBSCRIBE, PUBLISH at QoS 0 or 1
  (packets built in advance: `publish_packet`), DISCONNECT;
- a reader thread that parses every packet the broker sends: PUBLISH (handed
  to `on_message` with the arrival time of the bytes that completed it, and
  acknowledged when QoS 1), PUBACK (counted), CONNACK and SUBACK (waited on).

TCP_NODELAY is on, as on every client of this project. The framing (remaining length, strings,
packets) is serve's own, `vibration_infer.serve.wire.codec` and `.parser`. It is not a general
client: no reconnect, no QoS 2, no MQTT 5 properties, no TLS.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from vibration_infer.serve.wire.codec import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    FAILURE,
    PUBACK,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    packet,
    puback_packet,
    utf8,
)
from vibration_infer.serve.wire.parser import fixed_header

if TYPE_CHECKING:
    from collections.abc import Callable

    OnMessage = Callable[[str, bytes, int], None]
    """(topic, payload, arrival `time.perf_counter_ns`)."""

_RECV_BYTES = 1 << 20
_MAX_PACKET_BYTES = 256 * 1024 * 1024


class WireError(RuntimeError):
    """The broker refused, or the connection broke."""


class WireClient:
    """One MQTT 3.1.1 connection; see the module docstring for what it does and does not do."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        on_message: OnMessage | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._on_message = on_message
        self._timeout_s = timeout_s
        self._ids = itertools.cycle(range(1, 65536))
        self._send_lock = threading.Lock()
        self._connack = threading.Event()
        self._subacks: dict[int, threading.Event] = {}
        self._refused: str | None = None
        self.pubacks = 0
        """PUBACKs received so far (for this client's QoS 1 publishes)."""
        self.closed = threading.Event()
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name=f"wire-{client_id}", daemon=True)
        self._reader.start()
        # Protocol "MQTT" level 4, clean session, keepalive 0 (the broker never drops us for silence).
        body = utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + utf8(client_id)
        self.send(packet(CONNECT << 4, body))
        if not self._connack.wait(timeout_s) or self._refused or self.closed.is_set():
            self._sock.close()
            raise WireError(f"CONNECT to {host}:{port} failed: {self._refused or 'no CONNACK'}")

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe and wait for the SUBACK."""
        packet_id = next(self._ids)
        acked = self._subacks[packet_id] = threading.Event()
        body = struct.pack("!H", packet_id) + utf8(topic_filter) + bytes([qos])
        self.send(packet((SUBSCRIBE << 4) | 0x02, body))
        if not acked.wait(self._timeout_s) or self._refused or self.closed.is_set():
            reason = self._refused or (
                "the broker closed the connection" if self.closed.is_set() else "no SUBACK"
            )
            raise WireError(f"SUBSCRIBE {topic_filter!r} failed: {reason}")

    def publish_packet(self, topic: str, payload: bytes, qos: int = 1) -> bytes:
        """A complete PUBLISH packet (a fresh packet id at QoS 1), to `send` now or later."""
        header = utf8(topic) + (struct.pack("!H", next(self._ids)) if qos else b"")
        return packet((PUBLISH << 4) | (qos << 1), header + payload)

    def send(self, data: bytes) -> None:
        """Write bytes (one or many packets) to the broker."""
        with self._send_lock:
            self._sock.sendall(data)

    def wait_pubacks(self, n: int, timeout_s: float) -> bool:
        """Wait until `n` PUBACKs arrived in total; False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.pubacks < n:
            if time.monotonic() > deadline or self.closed.is_set():
                return False
            time.sleep(0.001)
        return True

    def close(self) -> None:
        """DISCONNECT and close the socket."""
        if not self.closed.is_set():
            with contextlib.suppress(OSError):
                self.send(packet(DISCONNECT << 4, b""))
        self._sock.close()
        self._reader.join(timeout=5)

    def _read(self) -> None:
        buffer = bytearray()
        try:
            while True:
                chunk = self._sock.recv(_RECV_BYTES)
                arrived_ns = time.perf_counter_ns()
                if not chunk:
                    return
                buffer += chunk
                consumed = self._parse(buffer, arrived_ns)
                del buffer[:consumed]
        except OSError:
            return
        finally:
            self.closed.set()
            self._connack.set()
            for event in self._subacks.values():
                event.set()

    def _parse(self, buffer: bytearray, arrived_ns: int) -> int:
        """Handle every complete packet at the start of `buffer`; return the bytes consumed."""
        view = memoryview(buffer)
        offset = 0
        while (header := fixed_header(buffer, offset, _MAX_PACKET_BYTES)) is not None:
            start, end = header
            first = buffer[offset]
            self._handle(first >> 4, first & 0x0F, view[start:end], arrived_ns)
            offset = end
        return offset

    def _handle(self, kind: int, flags: int, body: memoryview, arrived_ns: int) -> None:
        if kind == PUBLISH:
            (topic_len,) = struct.unpack_from("!H", body)
            topic = bytes(body[2 : 2 + topic_len]).decode()
            start, qos = 2 + topic_len, (flags >> 1) & 0x03
            if qos:
                (packet_id,) = struct.unpack_from("!H", body, start)
                start += 2
                self.send(puback_packet(packet_id))
            if self._on_message is not None:
                self._on_message(topic, bytes(body[start:]), arrived_ns)
        elif kind == PUBACK:
            self.pubacks += 1
        elif kind == CONNACK:
            if body[1] != 0:
                self._refused = f"CONNACK return code {body[1]}"
            self._connack.set()
        elif kind == SUBACK:
            (packet_id,) = struct.unpack_from("!H", body)
            if FAILURE in bytes(body[2:]):
                self._refused = "SUBACK refused the subscription"
            event = self._subacks.get(packet_id)
            if event is not None:
                event.set()
