"""The pod's MQTT link on the project's own MQTT 5 client: one network thread, writes per batch.

Why not paho here. Under a flood, paho-mqtt spends about three times this
link's CPU per window (docs/benchmarks.md, "serve's MQTT link alone"): several
`recv` calls per packet, a properties object per PUBLISH and PUBACK, a
wake-up of its network thread per publish. That alone caps a pod at a few
thousand windows a second, whatever the model costs. This link reads up to
a megabyte per `recv` (and reads on while the socket has more, up to a
batch), parses every packet in it at once (`parser.Parser`),
and writes what a batch may send now (as many answers as the broker's
Receive Maximum and `max_inflight` leave room for) in one `send`; the
PUBACKs of a read release the next answers and the inputs' acknowledgements
in one `send` more; acknowledgements alone wait up to 10 ms to go with the
next answers (`outbound.HeldAcks`; not under a batch deadline, where the next
answers are a deadline away). Nor do the broker's acknowledgements
wake the thread by themselves: while nothing waits on them, the socket's
low-water mark (`connection.LowWaterMark`) lets them lie until the next
window's bytes come, or `LAZY_READ_S`, so a hall's window costs one wake-up,
not two. While windows are held for company (`batch_deadline_ms`), the mark
rises to the bytes the batch still has room for: the windows that come
meanwhile are read together when the batch could be full or is due, one
wake-up a batch. paho stays available (`mqtt_client:
paho`); both links keep the same contract, and the same tests run against
both.

The contract (as `paho_link.MqttLink`):

- a persistent MQTT 5 session: a stable client id, clean start off, a
  Session Expiry Interval and a Receive Maximum; reconnects back off
  exponentially between `reconnect_min_s` and `reconnect_max_s` (a
  connection that did not last a keep-alive does not reset the backoff);
  TCP_NODELAY; TLS for mqtts://; credentials read at each connect;
- the subscription made on every connect, then the filters an older
  session kept and this one must not unsubscribed (`link.LinkBase`);
- an input is acknowledged when the broker acknowledged its *answer*, so a
  crash or a lost link leads to a redelivery, never to a silent loss; an
  acknowledgement only goes out on the connection the input arrived on;
- what is owed to the broker (answers in flight or waiting, the inputs they
  acknowledge, the CONNACK's limits, resends after a reconnect, refusals)
  is the pure state machine of `outbound.Outbound`;
- keep-alive: a PINGREQ when nothing was sent or nothing was heard for half
  the keep-alive, and the link is dead when a PINGREQ gets no answer within
  a keep-alive (a half-open connection is found in seconds, not when TCP
  gives up).

Threads: the network thread connects, reads and parses, answers the
broker's acknowledgements, and hands each read's windows to `deliver`, which
answers them on this thread (`link.delivers_inline`); other threads publish
too (the status, a swap's reports). One lock covers the socket
(TLS objects are not thread-safe) and the outbound state. The socket is
non-blocking, so a read never waits on a half record while holding the lock.

Longer than the others: it is the client's one network thread (connect, read,
keep-alive, reconnect) and the lock it shares with the publishers; the pure
parts are already apart (codec, parser, outbound, connection).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING

from vibration_infer.errors import UsageError
from vibration_infer.serve.link import (
    Acknowledgeable,
    Coalescer,
    Incoming,
    LinkBase,
    Outgoing,
    wait_for_acknowledgements,
)
from vibration_infer.serve.wire import codec
from vibration_infer.serve.wire.connection import (
    LAZY_READ_S,
    RECV_BYTES,
    WOULD_BLOCK,
    LowWaterMark,
    open_connection,
    send_all,
    wait_ready,
)
from vibration_infer.serve.wire.outbound import HeldAcks, Outbound, ack_hold_s

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from vibration_infer.serve.settings import ServeSettings
    from vibration_infer.serve.wire.connection import Connection
    from vibration_infer.serve.wire.parser import Parser

logger = logging.getLogger("vibration_infer.serve.wire")

TAKE_BYTES = 8 * RECV_BYTES
"""What one take may read before its windows are answered: bounds the memory a flood holds."""


class WireLink(LinkBase):
    """Connects, subscribes, hands incoming windows over, publishes answers and acknowledges them."""

    def __init__(
        self,
        settings: ServeSettings,
        subscription: str,
        deliver: Callable[[list[Incoming]], None],
        on_change: Callable[[], None] | None = None,
        stale: Sequence[str] = (),
    ) -> None:
        super().__init__(settings, subscription, deliver, on_change, stale)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Guarded by _lock; the connection's generation is the Outbound's.
        self._sock: socket.socket | None = None
        self._keepalive_s = float(settings.keepalive_s)
        deadline_s = settings.batch_deadline_ms / 1000
        self._coalescer = Coalescer(deliver, settings.batch_max, deadline_s)
        self._out = Outbound(settings.max_inflight)
        self._held = HeldAcks(ack_hold_s(deadline_s))
        self._last_sent = 0.0
        self._subscribing = 0
        """SUBACKs and UNSUBACKs still to come on this connection (read at once: they may be refusals)."""
        self._over_limit_warned = 0
        """The connection (generation) the Receive Maximum warning was given on."""

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start the network thread."""
        self._thread = threading.Thread(target=self._run, name="mqtt-wire", daemon=True)
        self._thread.start()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        then_ack: Acknowledgeable | None = None,
    ) -> None:
        """Publish; when the broker acknowledged it, acknowledge `then_ack` (the input it answers)."""
        self.publish_many([Outgoing(topic, payload, qos, retain, then_ack)])

    def publish_many(self, messages: Iterable[Outgoing]) -> None:
        """Publish messages in order, with one write; QoS 0 ones are dropped while disconnected."""
        with self._lock:
            self._write(self._out.publish(messages))

    def ack(self, item: Acknowledgeable) -> None:
        """Acknowledge an input now, if it arrived on the current connection at QoS 1."""
        with self._lock:
            out: list[bytes] = []
            self._out.ack_into(out, item)
            self._write(out)

    def ack_after_pending(self, item: Acknowledgeable) -> None:
        """Acknowledge a redelivered input once every answer published so far is settled."""
        with self._lock:
            self._write(self._out.ack_after_pending(item))

    def unacknowledged(self) -> int:
        """Answers published whose input still waits for the broker's PUBACK."""
        with self._lock:
            return self._out.unacknowledged

    def stop(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for pending acknowledgements, then disconnect (the session stays)."""
        wait_for_acknowledgements(self, timeout_s, logger)
        self._stopping.set()
        with self._lock:
            sock = self._sock
            self._write([codec.DISCONNECT_PACKET])
            self._sock = None  # nothing may follow the DISCONNECT; the network thread closes it
            self._out.disconnect()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the socket (callers hold _lock) -------------------------------------------------------

    def _write(self, out: list[bytes]) -> None:
        sock = self._sock
        if not out or sock is None:
            return
        out = self._held.take(out)  # held input PUBACKs go with any write
        try:
            send_all(sock, b"".join(out), self._keepalive_s)
        except OSError as exc:
            # The network thread sees the closed socket and reconnects; what is in flight is kept.
            logger.warning("mqtt_write_failed", extra={"error": str(exc)})
            self._close_socket()
            return
        self._last_sent = time.monotonic()

    def _close_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        self._out.disconnect()
        self._held.drop()

    # --- the network thread ------------------------------------------------------------------

    def _run(self) -> None:
        s = self._settings
        delay = float(s.reconnect_min_s)
        while not self._stopping.is_set():
            try:
                connection = open_connection(s)
            except Exception as exc:  # the thread must live on: a mended Secret or broker lets it connect
                if not isinstance(exc, OSError | codec.ProtocolError | UsageError):
                    logger.exception("mqtt_connect_error")
                logger.warning(
                    "mqtt_connect_failed",
                    extra={"host": s.mqtt_host, "port": s.mqtt_port, "error": str(exc), "retry_s": delay},
                )
                self._failed(f"cannot connect: {exc}")
                self._stopping.wait(delay)
                delay = min(delay * 2, s.reconnect_max_s)
                continue
            up_since = time.monotonic()
            reason = self._session(connection)
            if not self._stopping.is_set():
                logger.warning("mqtt_disconnected", extra={"reason": reason})
            self._failed(f"disconnected: {reason}")
            if time.monotonic() - up_since >= self._keepalive_s:
                delay = float(s.reconnect_min_s)  # it had worked for a while: start the backoff over
            if not self._stopping.is_set():
                self._stopping.wait(delay)
                delay = min(delay * 2, s.reconnect_max_s)

    def _session(self, connection: Connection) -> str:
        """Serve one connection until it ends; return why it ended."""
        try:
            self._established(connection)
            self._read(connection)
        except (OSError, codec.ProtocolError) as exc:
            return str(exc) or type(exc).__name__
        except Exception as exc:  # the thread must live on to reconnect, whatever broke this session
            logger.exception("mqtt_link_error")
            return f"{type(exc).__name__}: {exc}"
        finally:
            self._coalescer.drop()  # held windows of this connection come again on the next
            with self._lock:
                if self._sock is connection.sock:
                    self._close_socket()
                else:
                    connection.sock.close()
            self._connected.clear()
        return "stopped"

    def _established(self, connection: Connection) -> None:
        s, connack = self._settings, connection.connack
        with self._lock:
            if self._stopping.is_set():  # stopped while this connect was under way
                raise ConnectionError("stopped")
            self._sock = connection.sock
            self._held.drop()  # a packet id on this connection names another message
            self._keepalive_s = float(connack.keepalive_s or s.keepalive_s)
            # The broker redelivers unacknowledged inputs; answers still in flight go again.
            resent = len(self._out.inflight)
            subscribe = [codec.subscribe_packet(self._out.take_id(), self._subscription, 1)]
            if self._stale:  # after the SUBSCRIBE: the broker takes them in order
                subscribe.append(codec.unsubscribe_packet(self._out.take_id(), self._stale))
            self._subscribing = len(subscribe)
            self._write([*subscribe, *self._out.connect(self._out.generation + 1, connack)])
        self._connected.set()
        logger.info(
            "mqtt_connected",
            extra={
                "host": s.mqtt_host,
                "port": s.mqtt_port,
                "client_id": s.effective_client_id,
                "session_present": connack.session_present,
                "resent": resent,
                "receive_maximum": connack.receive_maximum,
            },
        )
        self._changed()

    def _read(self, connection: Connection) -> None:
        sock, parser = connection.sock, connection.parser
        keepalive = self._keepalive_s
        heard = time.monotonic()
        pinged_at: float | None = None
        view = memoryview(bytearray(RECV_BYTES))
        mark = LowWaterMark(sock)
        self._handle(connection.early, time.time_ns(), time.perf_counter_ns())
        while not self._stopping.is_set():
            with self._lock:
                if self._sock is not sock:
                    raise ConnectionError("the connection was closed")
                pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
                lazy = pinged_at is None and not (parser.partial or self._out.waiting or self._subscribing)
                owed = bool(self._out.inflight)
            mark.set(lazy=lazy, hold_bytes=self._coalescer.room_bytes())
            wait_s = self._held.wait_s(time.monotonic(), self._coalescer.wait_s(min(1.0, keepalive / 4)))
            # Under the mark the broker's acknowledgements lie unread until a window comes, and
            # while windows are held for company, the windows that come meanwhile: when the wait
            # ends without them, they are read now (a read takes what is there, mark or not).
            unread = mark.raised and (owed or self._coalescer.holding)
            if mark.raised and owed:
                wait_s = min(wait_s, LAZY_READ_S)
            readable = pending or _readable(sock, wait_s)
            if readable or unread:
                received_ns, received_perf_ns = self._stamps(mark)
                try:
                    packets = self._take(sock, parser, view)
                except codec.ProtocolError as exc:
                    self._handle(exc.parsed, received_ns, received_perf_ns)
                    self._coalescer.flush()
                    raise
                if packets is not None:
                    heard, pinged_at = time.monotonic(), None
                    self._handle(packets, received_ns, received_perf_ns)
                elif readable:
                    continue
            self._coalescer.flush_due()
            self._flush_held()
            now = time.monotonic()
            if pinged_at is not None and now - pinged_at > keepalive:
                raise TimeoutError(f"no answer to PINGREQ within {keepalive:g} s")
            if pinged_at is None and (now - heard >= keepalive / 2 or now - self._last_sent >= keepalive / 2):
                pinged_at = now
                with self._lock:
                    self._write([codec.PINGREQ_PACKET])
        # Stopping. Should this thread close the socket before `stop` writes its DISCONNECT
        # (which would carry them), the held acknowledgements still go out first.
        self._flush_held(everything=True)

    def _stamps(self, mark: LowWaterMark) -> tuple[int, int]:
        """The receipt stamps (wall clock, perf counter, ns) of the windows the next take reads.

        Taken before the first read: a window's latency counts the whole take. Windows that may
        have lain under a hold's mark count theirs from the held batch's first (they came after
        it): an upper bound, never less than they waited, up to a deadline more. The wall clock
        (error messages' `received_ns`) stays the read's.
        """
        received_ns, received_perf_ns = time.time_ns(), time.perf_counter_ns()
        held = self._coalescer.first_received_perf_ns() if mark.holding else None
        return received_ns, received_perf_ns if held is None else held

    def _take(
        self, sock: socket.socket, parser: Parser, view: memoryview
    ) -> list[codec.Message | codec.Control] | None:
        """The packets the socket holds now, read by reads of `view`; None when it held no bytes after all.

        A read that came back full (or, under TLS, one that left more to read) means more is
        waiting, so reading goes on while another read like the last ones still fits in
        `batch_max` windows, and up to `TAKE_BYTES`: then a flood of JSON windows (80 KB each, a
        dozen to a read) is batched as a flood of binary ones (63 to a read) is. A hall's window
        comes alone, in a short read, which ends the take at once. Packets read before a failure
        are still returned (or, for a malformed packet, carried by the `ProtocolError`): the
        next read meets the failure again.
        """
        packets: list[codec.Message | codec.Control] = []
        taken = reads = windows = 0
        while True:
            try:
                got = self._recv(sock, view)
            except OSError:  # a reset, say: what came before it is handled first
                if packets:
                    return packets
                raise
            if got is None:
                return packets if taken else None
            size, more = got
            if not size:
                if packets:
                    return packets  # handled first; the next read finds the end again
                raise ConnectionError("the broker closed the connection")
            try:
                read = parser.feed(view[:size])
            except codec.ProtocolError as exc:
                exc.parsed = packets + exc.parsed
                raise
            packets += read
            taken, reads = taken + size, reads + 1
            if not more or taken >= TAKE_BYTES:  # a hall's window: one short read, nothing counted
                return packets
            windows += sum(isinstance(packet, codec.Message) for packet in read)
            if windows + windows / reads > self._settings.batch_max:
                return packets

    def _recv(self, sock: socket.socket, view: memoryview) -> tuple[int, bool] | None:
        """One read into `view` and whether more is waiting behind it; None when the read would block."""
        with self._lock:
            if self._sock is not sock:
                raise ConnectionError("the connection was closed")
            try:
                size = sock.recv_into(view)
            except WOULD_BLOCK:
                return None
            # Asked under the lock too: a TLS object is not thread-safe.
            if isinstance(sock, ssl.SSLSocket):  # a read takes one TLS record (16 KB) at most
                return size, sock.pending() > 0 or _readable(sock, 0)
            return size, size == len(view)

    def _flush_held(self, *, everything: bool = False) -> None:
        """Send the held input PUBACKs that waited their hold (no answer went out to take them), or all."""
        if everything or self._held.due(time.monotonic()):
            with self._lock:
                self._write(self._held.take([]))

    def _handle(
        self, packets: list[codec.Message | codec.Control], received_ns: int, received_perf_ns: int
    ) -> None:
        generation = self._out.generation  # only this thread changes it
        done: list[tuple[int, int]] = []
        received: list[tuple[int, int]] = []
        arrived: list[Incoming] = []
        inputs = 0
        for packet in packets:
            if isinstance(packet, codec.Message):
                inputs += packet.qos > 0
                arrived.append(
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
            elif packet.kind in (codec.PUBACK, codec.PUBCOMP):
                done.append((packet.packet_id, packet.reason))
            elif packet.kind == codec.PUBREC:
                received.append((packet.packet_id, packet.reason))
            elif packet.kind in (codec.SUBACK, codec.UNSUBACK):
                self._subscribing = max(0, self._subscribing - 1)
                self._log_refusal(packet)
            elif packet.kind == codec.DISCONNECT:
                self._acknowledged(done, received)  # what the broker had, before it hung up
                detail = f"{codec.reason_name(packet.reason)} {packet.reason_string}".strip()
                raise ConnectionError(f"the broker disconnected: {detail}")
        if inputs:
            self._count_inputs(inputs)
        if done or received:  # first: an answer acknowledged frees its slot for the new ones
            self._acknowledged(done, received)
        if arrived:
            self._coalescer.add(arrived)

    def _log_refusal(self, packet: codec.Control) -> None:
        if packet.reason < codec.FAILURE:
            return
        if packet.kind == codec.SUBACK:
            logger.error(
                "mqtt_subscribe_refused",
                extra={"filter": self._subscription, "reason": codec.reason_name(packet.reason)},
            )
        else:
            logger.error(
                "mqtt_unsubscribe_refused",
                extra={"filters": ",".join(self._stale), "reason": codec.reason_name(packet.reason)},
            )

    def _count_inputs(self, n: int) -> None:
        """Say once per connection when the broker sends beyond the Receive Maximum asked for.

        Memory is then no longer bounded by `receive_maximum`. Debian 12's Mosquitto
        2.0.11 does this once the first inputs are acknowledged (tests/infer/test_wire.py).
        """
        with self._lock:
            self._out.inputs_open += n
            open_now, generation = self._out.inputs_open, self._out.generation
        limit = self._settings.receive_maximum
        if open_now > limit and self._over_limit_warned != generation:
            self._over_limit_warned = generation
            logger.warning(
                "mqtt_broker_exceeds_receive_maximum",
                extra={"unacknowledged": open_now, "receive_maximum": limit},
            )

    def _acknowledged(self, done: list[tuple[int, int]], received: list[tuple[int, int]]) -> None:
        with self._lock:
            self._write(self._held.offer(self._out.acknowledged(done, received), time.monotonic()))


def _readable(sock: socket.socket, timeout_s: float) -> bool:
    try:
        return wait_ready(sock, write=False, timeout_s=timeout_s)
    except ValueError:  # closed on the worker's side after a failed write, since the check
        raise ConnectionError("the connection was closed") from None
