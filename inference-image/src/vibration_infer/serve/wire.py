"""The pod's MQTT link on the project's own MQTT 5 client: one network thread, one write per batch.

Why not paho here. Under a flood, paho-mqtt spends 130-240 us of CPU per
window on this hardware (`make bench`, "serve's MQTT link alone"): several
`recv` calls per packet, a properties object per PUBLISH and PUBACK, a
wake-up of its network thread per publish. That alone caps a pod at a few
thousand windows a second, whatever the model costs. This link reads up to
a megabyte per `recv`, parses every packet in it at once (`mqtt5.Parser`),
and writes a whole batch of answers, and the acknowledgements they release,
in one `send`. paho stays available (`mqtt_client: paho`); both links keep
the same contract, and the same tests run against both.

The contract (as `mqtt.MqttLink`):

- a persistent MQTT 5 session: a stable client id, clean start off, a
  Session Expiry Interval and a Receive Maximum; reconnects back off
  exponentially between `reconnect_min_s` and `reconnect_max_s`; TCP_NODELAY
  on every socket; TLS for mqtts://; credentials read at each connect;
- an input is acknowledged when the broker acknowledged its *answer*, so a
  crash or a lost link leads to a redelivery, never to a silent loss; an
  acknowledgement only goes out on the connection the input arrived on;
- answers not yet acknowledged are sent again after a reconnect (with DUP
  when the broker kept the session); the broker's Receive Maximum (capped by
  `max_inflight`) bounds how many are in flight, the rest wait in order.

Threads: the network thread connects, reads and parses, and answers the
broker's acknowledgements; the worker publishes. One lock covers the socket
and the outbound state. The socket is non-blocking, so a TLS read never
waits on a half record while holding the lock.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from vibration_infer.errors import UsageError
from vibration_infer.serve import mqtt5
from vibration_infer.serve.batcher import Incoming
from vibration_infer.serve.link import Outgoing

if TYPE_CHECKING:
    import queue
    from collections.abc import Callable, Iterable

    from vibration_infer.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

_RECV_BYTES = 1 << 20
_CONNECT_TIMEOUT_S = 10.0
_MAX_PACKET_BYTES = 256 * 1024 * 1024  # MQTT's own limit; the batcher refuses big payloads by reason
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _Connection(NamedTuple):
    sock: socket.socket
    parser: mqtt5.Parser
    connack: mqtt5.Control
    early: list[mqtt5.Message | mqtt5.Control]
    """Packets that came in the same read as the CONNACK."""


class WireLink:
    """Connects, subscribes, queues incoming windows, publishes answers and acknowledges them."""

    def __init__(
        self,
        settings: ServeSettings,
        subscription: str,
        inbox: queue.SimpleQueue[Incoming],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._subscription = subscription
        self._inbox = inbox
        self._on_change = on_change
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Everything below is guarded by _lock.
        self._sock: socket.socket | None = None
        self._generation = 0
        self._quota = settings.max_inflight
        self._next_id = 0
        self._inflight: dict[int, tuple[bytes, Incoming | None]] = {}
        """Packet id -> (what to send again after a reconnect, the input it acknowledges)."""
        self._waiting: deque[Outgoing] = deque()
        self._chained = 0
        self._last_sent = 0.0

    @property
    def connected(self) -> bool:
        """Whether the session is up right now."""
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start the network thread."""
        self._thread = threading.Thread(target=self._run, name="mqtt-wire", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected or `timeout_s` passed; return whether connected."""
        return self._connected.wait(timeout_s)

    def publish(
        self, topic: str, payload: bytes, *, qos: int, retain: bool = False, then_ack: Incoming | None = None
    ) -> None:
        """Publish; when the broker acknowledged it, acknowledge `then_ack` (the input it answers)."""
        self.publish_many([Outgoing(topic, payload, qos, retain, then_ack)])

    def publish_many(self, messages: Iterable[Outgoing]) -> None:
        """Publish messages in order, with one write; QoS 0 ones are dropped while disconnected."""
        with self._lock:
            out: list[bytes] = []
            for message in messages:
                if message.qos:
                    self._waiting.append(message)
                    self._chained += message.then_ack is not None
                elif self._sock is not None:
                    # At QoS 0 the write is all the delivery there is: acknowledge the input with it.
                    out.append(
                        mqtt5.publish_packet(message.topic, message.payload, qos=0, retain=message.retain)
                    )
                    if message.then_ack is not None:
                        self._puback_into(out, message.then_ack)
            self._release_waiting(out)
            self._write(out)

    def ack(self, item: Incoming) -> None:
        """Acknowledge an input now, if it arrived on the current connection at QoS 1."""
        with self._lock:
            out: list[bytes] = []
            self._puback_into(out, item)
            self._write(out)

    def unacknowledged(self) -> int:
        """Answers published whose input still waits for the broker's PUBACK."""
        with self._lock:
            return self._chained

    def stop(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for pending acknowledgements, then disconnect (the session stays)."""
        deadline = time.monotonic() + timeout_s
        while self.unacknowledged() and self.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        left = self.unacknowledged()
        if left:
            logger.warning("mqtt_stop_unacknowledged count=%d", left)
        self._stopping.set()
        with self._lock:
            self._write([mqtt5.DISCONNECT_PACKET])
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- outbound (callers hold _lock) ---------------------------------------------------------

    def _puback_into(self, out: list[bytes], item: Incoming) -> None:
        if item.qos and item.generation == self._generation and self._sock is not None:
            out.append(mqtt5.puback_packet(item.mid))

    def _release_waiting(self, out: list[bytes]) -> None:
        """Move waiting messages in flight while the broker's Receive Maximum allows."""
        if self._sock is None:
            return
        while self._waiting and len(self._inflight) < self._quota:
            message = self._waiting.popleft()
            packet_id = self._take_id()
            data = mqtt5.publish_packet(
                message.topic, message.payload, qos=message.qos, packet_id=packet_id, retain=message.retain
            )
            self._inflight[packet_id] = (data, message.then_ack)
            out.append(data)

    def _take_id(self) -> int:
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight:
                return self._next_id

    def _write(self, out: list[bytes]) -> None:
        sock = self._sock
        if not out or sock is None:
            return
        view = memoryview(b"".join(out))
        try:
            while view:
                try:
                    view = view[sock.send(view) :]
                except _WOULD_BLOCK:
                    if not select.select([], [sock], [], self._settings.keepalive_s)[1]:
                        raise TimeoutError(
                            f"the broker took no bytes for {self._settings.keepalive_s} s"
                        ) from None
        except OSError as exc:
            # The network thread sees the closed socket and reconnects; what is in flight is kept.
            logger.warning("mqtt_write_failed error=%s", exc)
            self._close_socket()
            return
        self._last_sent = time.monotonic()

    def _close_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None

    # --- the network thread ------------------------------------------------------------------

    def _run(self) -> None:
        s = self._settings
        delay = float(s.reconnect_min_s)
        while not self._stopping.is_set():
            try:
                connection = self._open()
            except (OSError, mqtt5.ProtocolError, UsageError) as exc:
                logger.warning(
                    "mqtt_connect_failed host=%s port=%d error=%s retry_s=%g",
                    s.mqtt_host,
                    s.mqtt_port,
                    exc,
                    delay,
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, s.reconnect_max_s)
                continue
            delay = float(s.reconnect_min_s)
            self._established(connection)
            reason = "stopped"
            try:
                self._read(connection)
            except (OSError, mqtt5.ProtocolError) as exc:
                reason = str(exc) or type(exc).__name__
            finally:
                with self._lock:
                    if self._sock is connection.sock:
                        self._close_socket()
                    else:
                        connection.sock.close()
                self._connected.clear()
            if not self._stopping.is_set():
                logger.warning("mqtt_disconnected reason=%s", reason)
            self._changed()
            if not self._stopping.is_set():
                self._stopping.wait(s.reconnect_min_s)

    def _open(self) -> _Connection:
        s = self._settings
        username, password = s.mqtt_credentials()
        sock = socket.create_connection((s.mqtt_host, s.mqtt_port), timeout=_CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if s.mqtt_tls:
                context = ssl.create_default_context(cafile=str(s.mqtt_ca_file) if s.mqtt_ca_file else None)
                sock = context.wrap_socket(sock, server_hostname=s.mqtt_host)
            sock.sendall(
                mqtt5.connect_packet(
                    s.effective_client_id,
                    keepalive_s=s.keepalive_s,
                    clean_start=False,
                    session_expiry_s=s.session_expiry_s,
                    receive_maximum=s.receive_maximum,
                    username=username,
                    password=password,
                )
            )
            connection = _await_connack(sock)
            sock.setblocking(False)  # noqa: FBT003 - the socket API
        except BaseException:
            sock.close()
            raise
        return connection

    def _established(self, connection: _Connection) -> None:
        s, connack = self._settings, connection.connack
        with self._lock:
            self._sock = connection.sock
            self._generation += 1
            self._quota = max(1, min(s.max_inflight, connack.receive_maximum))
            # The broker redelivers unacknowledged inputs; answers still in flight are sent
            # again, marked DUP where the broker kept the session (and so their packet ids).
            out = [mqtt5.subscribe_packet(self._take_id(), self._subscription, 1)]
            for data, _ in self._inflight.values():
                out.append(mqtt5.as_duplicate(data) if connack.session_present else data)
            self._release_waiting(out)
            self._write(out)
        self._connected.set()
        logger.info(
            "mqtt_connected host=%s port=%d client_id=%s session_present=%s resent=%d receive_maximum=%d",
            s.mqtt_host,
            s.mqtt_port,
            s.effective_client_id,
            connack.session_present,
            len(self._inflight),
            connack.receive_maximum,
        )
        self._changed()

    def _read(self, connection: _Connection) -> None:
        s, sock = self._settings, connection.sock
        keepalive = connection.connack.keepalive_s or s.keepalive_s
        pinged_at: float | None = None
        chunk = bytearray(_RECV_BYTES)
        view = memoryview(chunk)
        self._handle(connection.early, time.time_ns(), time.perf_counter_ns())
        while not self._stopping.is_set():
            if self._sock is not sock:
                raise ConnectionError("the connection was closed after a failed write")
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
            if pending or _readable(sock, min(1.0, keepalive / 4)):
                with self._lock:
                    if self._sock is not sock:
                        raise ConnectionError("the connection was closed after a failed write")
                    try:
                        size = sock.recv_into(chunk)
                    except _WOULD_BLOCK:
                        continue
                if not size:
                    raise ConnectionError("the broker closed the connection")
                pinged_at = None
                self._handle(connection.parser.feed(view[:size]), time.time_ns(), time.perf_counter_ns())
            now = time.monotonic()
            if pinged_at is not None and now - pinged_at > keepalive:
                raise TimeoutError(f"no answer to PINGREQ within {keepalive} s")
            if pinged_at is None and now - self._last_sent >= keepalive / 2:
                pinged_at = now
                with self._lock:
                    self._write([mqtt5.PINGREQ_PACKET])

    def _handle(
        self, packets: list[mqtt5.Message | mqtt5.Control], received_ns: int, received_perf_ns: int
    ) -> None:
        generation = self._generation  # only this thread changes it
        done: list[int] = []
        received: list[int] = []
        for packet in packets:
            if isinstance(packet, mqtt5.Message):
                self._inbox.put(
                    Incoming(
                        packet.topic,
                        packet.payload,
                        packet.packet_id,
                        packet.qos,
                        generation,
                        received_ns,
                        received_perf_ns,
                    )
                )
            elif packet.kind in (mqtt5.PUBACK, mqtt5.PUBCOMP):
                done.append(packet.packet_id)
            elif packet.kind == mqtt5.PUBREC:
                received.append(packet.packet_id)
            elif packet.kind == mqtt5.SUBACK and packet.reason >= 0x80:  # noqa: PLR2004 - failure codes
                logger.error(
                    "mqtt_subscribe_refused filter=%s reason=%s",
                    self._subscription,
                    mqtt5.reason_name(packet.reason),
                )
            elif packet.kind == mqtt5.DISCONNECT:
                detail = f"{mqtt5.reason_name(packet.reason)} {packet.reason_string}".strip()
                raise ConnectionError(f"the broker disconnected: {detail}")
        if done or received:
            self._acknowledged(done, received)

    def _acknowledged(self, done: list[int], received: list[int]) -> None:
        """The broker has answers: release QoS 2 ones, acknowledge their inputs, send what waited."""
        with self._lock:
            out: list[bytes] = []
            for packet_id in received:
                entry = self._inflight.get(packet_id)
                if entry is not None:
                    release = mqtt5.pubrel_packet(packet_id)
                    self._inflight[packet_id] = (release, entry[1])
                    out.append(release)
            for packet_id in done:
                entry = self._inflight.pop(packet_id, None)
                if entry is not None and entry[1] is not None:
                    self._chained -= 1
                    self._puback_into(out, entry[1])
            self._release_waiting(out)
            self._write(out)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


def _readable(sock: socket.socket, timeout_s: float) -> bool:
    try:
        return bool(select.select([sock], [], [], timeout_s)[0])
    except ValueError:  # closed by a failed write on the worker's side meanwhile
        raise ConnectionError("the connection was closed after a failed write") from None


def _await_connack(sock: socket.socket) -> _Connection:
    """Read up to the CONNACK (the connect timeout still applies); refuse a failure code."""
    parser = mqtt5.Parser(_MAX_PACKET_BYTES)
    packets: list[mqtt5.Message | mqtt5.Control] = []
    while not packets:
        data = sock.recv(_RECV_BYTES)
        if not data:
            raise ConnectionError("the broker closed the connection before CONNACK")
        packets = parser.feed(data)
    connack = packets[0]
    if not isinstance(connack, mqtt5.Control) or connack.kind != mqtt5.CONNACK:
        raise mqtt5.ProtocolError("the broker's first packet was not a CONNACK")
    if connack.reason >= 0x80:  # noqa: PLR2004 - reason codes from 0x80 are failures
        detail = f"{mqtt5.reason_name(connack.reason)} {connack.reason_string}".strip()
        logger.error("mqtt_connect_refused reason=%s", detail)
        raise ConnectionRefusedError(f"CONNACK refused: {detail}")
    return _Connection(sock, parser, connack, packets[1:])
