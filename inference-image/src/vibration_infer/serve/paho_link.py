"""The pod's MQTT link: paho-mqtt v2, one persistent session, acknowledgements after the answer.

Session. MQTT 5 with a stable client id, ``clean_start=False`` on every
connect and a session expiry: while the pod restarts or the link is down,
the broker keeps the subscription and queues the QoS 1 windows, and
delivers them when the same client id comes back. Reconnects back off
exponentially (`reconnect_delay_set`); TCP_NODELAY is set on every new
socket, since Nagle's algorithm alone costs milliseconds per 16 KB window.

Acknowledgements. paho acknowledges a QoS 1 message as soon as `on_message`
returns, which would lose every window still queued in the pod when it
dies. Manual acks are on instead (`manual_ack_set`): each input is
acknowledged when the broker acknowledged the *answer* to it (its
prediction or error message, published at QoS 1), so a crash, a broker
restart or a lost link at any point leads to a redelivery, never to a
silent loss. The price is at-least-once delivery; the batcher drops a
redelivered window it already answered, by (machine, timestamp_ns).

An acknowledgement only goes out on the connection that received the
message: after a reconnect the packet id may name a different message, and
the broker redelivers the unacknowledged ones anyway. The broker's
Receive Maximum bounds how many windows can wait in the pod unacknowledged
(`receive_maximum`), which bounds its memory.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vibration_infer.serve.link import Acknowledgeable, Incoming, LinkBase, wait_for_acknowledgements

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from paho.mqtt.client import SocketLike
    from paho.mqtt.reasoncodes import ReasonCode

    from vibration_infer.serve.link import Outgoing
    from vibration_infer.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

_MQTT_RECEIVE_MAXIMUM = 65535


class MqttLink(LinkBase):
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
        self._generation = 0
        self._lock = threading.Lock()
        self._pending: dict[int, Acknowledgeable | None] = {}
        self._after: dict[int, list[Acknowledgeable]] = {}
        """Redelivered inputs to acknowledge once the publish (by mid) pending before them is."""
        self._qos0: set[int] = set()
        """Pending mids at QoS 0: paho forgets those unwritten at a disconnect without a word."""
        self._early: set[int] = set()
        self._chained = 0
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.effective_client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.manual_ack_set(on=True)
        client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
        # paho fixes this before connecting; it scans that many in-flight messages per PUBACK.
        client.max_inflight_messages_set(settings.max_inflight)
        client.max_queued_messages_set(0)
        if settings.mqtt_tls:
            ca = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
            client.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = lambda *_: self._failed("cannot connect (no answer, or no such host)")
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        # paho passes a refused (un)subscription on silently; the wire link logs it, and so does this one.
        client.on_subscribe = lambda _client, _userdata, _mid, codes, _props: _log_refused(
            "mqtt_subscribe_refused", {"filter": self._subscription}, codes
        )
        client.on_unsubscribe = lambda _client, _userdata, _mid, codes, _props: _log_refused(
            "mqtt_unsubscribe_refused", {"filters": ",".join(self._stale)}, codes
        )
        self._client = client

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start the network thread."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        props.SessionExpiryInterval = self._settings.session_expiry_s
        props.ReceiveMaximum = self._settings.receive_maximum
        props.MaximumPacketSize = self._settings.max_packet_bytes
        self._client.connect_async(
            self._settings.mqtt_host,
            self._settings.mqtt_port,
            keepalive=self._settings.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

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
        # At QoS 0 paho reports the publish once written to the socket: as
        # delivered as it gets. Every QoS goes through the same bookkeeping, so
        # a packet id is never taken for another publish's.
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0 and info.rc != paho.MQTT_ERR_SUCCESS:
            # Dropped (no connection): paho reports nothing more of it, so nothing may wait for it.
            # Its input stays unacknowledged, and the broker delivers it again.
            return
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                done = True
            else:
                self._pending[info.mid] = then_ack
                self._chained += then_ack is not None
                if qos == 0:
                    self._qos0.add(info.mid)
                done = False
        if done and then_ack is not None:
            self.ack(then_ack)

    def publish_many(self, messages: Iterable[Outgoing]) -> None:
        """Publish messages in order, one `publish` each."""
        for m in messages:
            self.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, then_ack=m.then_ack)

    def ack(self, item: Acknowledgeable) -> None:
        """Acknowledge an input now, if it arrived on the current connection at QoS 1 or 2."""
        if item.qos == 0 or item.generation != self._generation:
            return
        self._client.ack(item.mid, item.qos)

    def ack_after_pending(self, item: Acknowledgeable) -> None:
        """Acknowledge a redelivered input once every answer published so far is: the broker acks in order."""
        with self._lock:
            last = next(reversed(self._pending), None)
            if last is not None:
                self._after.setdefault(last, []).append(item)
                return
        self.ack(item)

    def unacknowledged(self) -> int:
        """Answers published whose input still waits for the broker's PUBACK."""
        with self._lock:
            return self._chained

    def stop(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for pending acknowledgements, then disconnect (the session stays)."""
        wait_for_acknowledgements(self, timeout_s, logger)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    # --- paho callbacks (network thread) -----------------------------------------------------

    def _on_pre_connect(self, client: paho.Client, _userdata: object) -> None:
        # Read at every (re)connect, so a rotated Secret is used without a restart.
        username, password = self._settings.mqtt_credentials()
        if username is not None:
            client.username_pw_set(username, password)

    def _on_socket_open(self, _client: paho.Client, _userdata: object, sock: SocketLike) -> None:
        # An SSLSocket is a socket too; a websocket wrapper is not, and has no Nagle to switch off.
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            logger.error("mqtt_connect_refused", extra={"reason": reason_code.getName()})
            self._failed(f"refused: {reason_code.getName()}")
            return
        broker_max = getattr(properties, "ReceiveMaximum", _MQTT_RECEIVE_MAXIMUM)
        if isinstance(broker_max, int) and self._settings.max_inflight > broker_max:
            # The broker would drop the connection once more are in flight than it accepts.
            logger.warning(
                "mqtt_inflight_above_broker_limit",
                extra={"max_inflight": self._settings.max_inflight, "broker_receive_maximum": broker_max},
            )
        self._generation += 1
        result, _ = client.subscribe(self._subscription, qos=1)
        if self._stale:  # after the SUBSCRIBE: the broker takes them in order
            client.unsubscribe(list(self._stale))
        logger.info(
            "mqtt_connected",
            extra={
                "host": self._settings.mqtt_host,
                "port": self._settings.mqtt_port,
                "client_id": self._settings.effective_client_id,
                "session_present": flags.session_present,
                "subscribe_rc": int(result),
            },
        )
        self._connected.set()
        self._changed()

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: object,
        _flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        with self._lock:
            # QoS 0 answers not yet written are gone, and no callback will say so: nothing may
            # wait for them. What waited (inputs of this connection) can no longer be acknowledged.
            for mid in self._qos0:
                self._chained -= self._pending.pop(mid, None) is not None
                self._after.pop(mid, None)
            self._qos0.clear()
        if was:
            logger.warning("mqtt_disconnected", extra={"reason": reason_code.getName()})
            self._failed(f"disconnected: {reason_code.getName()}")
        else:  # a refused connect ends here too, with a vaguer reason than the refusal's own
            self._changed()

    def _on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        # Only hand over (delivers_inline is False): the network thread must keep reading and acknowledging.
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = bytes(message._topic).decode(errors="replace")  # noqa: SLF001 - the raw topic, for the error
        self._deliver(
            [
                Incoming(
                    topic=topic,
                    payload=bytes(message.payload),
                    mid=message.mid,
                    qos=message.qos,
                    generation=self._generation,
                    received_ns=time.time_ns(),
                    received_perf_ns=time.perf_counter_ns(),
                )
            ]
        )

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: object,
        mid: int,
        _reason_code: ReasonCode,
        _properties: Properties,
    ) -> None:
        with self._lock:
            if mid in self._pending:
                item = self._pending.pop(mid)
                self._chained -= item is not None
                self._qos0.discard(mid)
            else:
                # The PUBACK beat `publish` to registering the mid.
                self._early.add(mid)
                item = None
            after = self._after.pop(mid, [])
        for each in [item, *after]:
            if each is not None:
                self.ack(each)


def _log_refused(event: str, fields: dict[str, str], codes: list[ReasonCode]) -> None:
    for code in codes:
        if code.is_failure:
            logger.error(event, extra=fields | {"reason": code.getName()})
