"""The serving loop's MQTT link: what the app asks of it, and the two clients that provide it.

`wire.WireLink` (the default) is the project's own MQTT 5 client, built for
throughput: one read per megabyte, one write per batch. `mqtt.MqttLink` is
paho-mqtt v2. Both keep one persistent session, acknowledge an input only
when its answer was acknowledged, and pass the same tests; `mqtt_client`
chooses.

A link hands what it received to a `Deliver` callable on its network thread.
The wire link hands over each read's windows at once and can afford to wait
while they are answered (`INLINE`): answering on the thread that read them
saves the hand-off to a worker, two thread wake-ups and the GIL passing back
and forth for every window, most of serve's cost at a hall's few hundred
windows a second (docs/benchmarks.md). paho's callback gets one message at a
time and its loop must keep running, so its windows go to a queue
(`queue_into`) that a worker batches.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    import logging
    import queue
    from collections.abc import Callable, Iterable, Sequence

    from vibration_infer.serve.batcher import Incoming
    from vibration_infer.serve.settings import ServeSettings


def queue_into(inbox: queue.SimpleQueue[Incoming]) -> Callable[[list[Incoming]], None]:
    """A `Deliver` that only queues, for a worker to batch (`batcher.collect`)."""

    def deliver(items: list[Incoming]) -> None:
        for item in items:
            inbox.put(item)

    return deliver


def delivers_inline(settings: ServeSettings) -> bool:
    """Whether the link `settings` choose may answer windows on its own network thread."""
    return settings.mqtt_client != "paho"


class Outgoing(NamedTuple):
    """A message to publish; once the broker has it, `then_ack` (its input) is acknowledged."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    then_ack: Incoming | None = None


class LinkBase:
    """What both links keep alike: their inputs, the connection flag, and the change callback.

    `on_change` is called (on the network thread) whenever the connection comes
    up or goes down; `connected` tells which. `stale` are filters an older
    session of the same client id may still hold and this one must not: on each
    connect the link subscribes to `subscription` first, then unsubscribes them,
    so no window falls between the two (one both deliver is a duplicate, dropped).
    """

    def __init__(
        self,
        settings: ServeSettings,
        subscription: str,
        deliver: Callable[[list[Incoming]], None],
        on_change: Callable[[], None] | None = None,
        stale: Sequence[str] = (),
    ) -> None:
        self._settings = settings
        self._subscription = subscription
        self._stale = tuple(stale)
        self._deliver = deliver
        self._on_change = on_change
        self._connected = threading.Event()
        self.last_error = ""
        """Why the last connection attempt failed or the last session ended ('' before any)."""

    @property
    def connected(self) -> bool:
        """Whether the session is up right now."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected or `timeout_s` passed; return whether connected."""
        return self._connected.wait(timeout_s)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _failed(self, why: str) -> None:
        """A connection attempt failed or a session ended: keep why, for the pod's /status."""
        self.last_error = why[:200]
        self._changed()


class Link(Protocol):
    """Connects, subscribes, queues incoming windows, publishes answers and acknowledges inputs."""

    @property
    def connected(self) -> bool:
        """Whether the session is up right now."""

    last_error: str
    """Why the last connection attempt failed or the last session ended ('' before any)."""

    def start(self) -> None:
        """Connect in the background, retrying until the broker answers."""

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected or `timeout_s` passed; return whether connected."""

    def publish(
        self, topic: str, payload: bytes, *, qos: int, retain: bool = False, then_ack: Incoming | None = None
    ) -> None:
        """Publish; when the broker acknowledged it, acknowledge `then_ack`."""

    def publish_many(self, messages: Iterable[Outgoing]) -> None:
        """Publish messages in order (as `publish` each)."""

    def ack(self, item: Incoming) -> None:
        """Acknowledge an input now, if it arrived on the current connection at QoS 1 or 2."""

    def unacknowledged(self) -> int:
        """Answers published whose input still waits for the broker's acknowledgement."""

    def stop(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for pending acknowledgements, then disconnect (the session stays)."""


def wait_for_acknowledgements(link: Link, timeout_s: float, logger: logging.Logger) -> None:
    """Before a disconnect: wait up to `timeout_s` until no answer's input waits for the broker."""
    deadline = time.monotonic() + timeout_s
    while link.unacknowledged() and link.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    left = link.unacknowledged()
    if left:
        logger.warning("mqtt_stop_unacknowledged", extra={"count": left})


def make_link(
    settings: ServeSettings,
    subscription: str,
    deliver: Callable[[list[Incoming]], None],
    on_change: Callable[[], None] | None = None,
    stale: Sequence[str] = (),
) -> Link:
    """The link `settings.mqtt_client` names; it hands what it receives to `deliver`."""
    if settings.mqtt_client == "paho":
        from vibration_infer.serve.mqtt import MqttLink  # noqa: PLC0415 - paho only when chosen

        return MqttLink(settings, subscription, deliver, on_change, stale)
    from vibration_infer.serve.wire import WireLink  # noqa: PLC0415 - one client per process

    return WireLink(settings, subscription, deliver, on_change, stale)
