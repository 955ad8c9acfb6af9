"""The serving loop's MQTT link, as the app sees it: the transport types and the protocol.

`Incoming` (a window as received) and `Outgoing` (an answer to publish) are
what crosses between the transport and the rest of serve; `Link` is what the
app asks of a client, `LinkBase` what both clients keep alike. Two clients
provide it, and `app.make_link` (the composition root) chooses by
`mqtt_client`: `wire.link.WireLink` (the default), the project's own MQTT 5
client built for throughput (one read per megabyte, one write per batch),
and `paho_link.MqttLink` on paho-mqtt v2. Both keep one persistent session,
acknowledge an input only when its answer was acknowledged, and pass the
same tests (tests/infer/test_link.py and test_serve.py run each behaviour
against both, on a real Mosquitto).

Why paho stays, though it costs three times the CPU per window (make bench,
"MQTT link alone") and a setting: the wire client is this project's own and
has only met Mosquitto 2.0; paho is the client most brokers are tested
with. A hall whose broker (EMQX, HiveMQ, a PLC's embedded one) trips the
wire client on something Mosquitto never sends keeps serving with
`mqtt_client: paho` while the wire client is fixed, instead of stopping.

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

    from vibration_infer.serve.settings import ServeSettings


class Incoming(NamedTuple):
    """One raw message as the MQTT thread received it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    """Connection it arrived on; an acknowledgement is only valid on the same one."""
    received_ns: int
    """Wall clock at receipt, ns since the epoch (for error messages)."""
    received_perf_ns: int
    """`time.perf_counter_ns` at receipt (for latency)."""

    @property
    def receipt(self) -> Receipt:
        """What acknowledging this message takes, without its payload."""
        return Receipt(self.mid, self.qos, self.generation)


class Receipt(NamedTuple):
    """What acknowledging an input takes: its packet id, QoS and connection, not its payload.

    An answer waits in its link until the broker has it (behind the broker's
    Receive Maximum, which Mosquitto sets to 20 by default), and keeps what
    acknowledges its input all that time. A flood answered faster than the
    broker acknowledges then kept every window's 16 KB alive: about 430 MB of
    RSS for 20 000 windows, near the pod's memory limit. The receipt is a few
    dozen bytes.
    """

    mid: int
    qos: int
    generation: int


class Acknowledgeable(Protocol):
    """An input to acknowledge: an `Incoming`, or its `Receipt`."""

    @property
    def mid(self) -> int:
        """The packet id the input came with."""

    @property
    def qos(self) -> int:
        """The QoS it came at: 0 needs no acknowledgement."""

    @property
    def generation(self) -> int:
        """The connection it came on: an acknowledgement is only valid on that one."""


def queue_into(inbox: queue.SimpleQueue[Incoming]) -> Callable[[list[Incoming]], None]:
    """A `Deliver` that only queues, for a worker to batch (`batcher.collect`)."""

    def deliver(items: list[Incoming]) -> None:
        for item in items:
            inbox.put(item)

    return deliver


class Coalescer:
    """Holds windows back for company: until `batch_max` are held or `deadline_s` passed since the first.

    With a deadline of 0 (the default) every `add` is delivered at once: a batch
    is what one read brought. A hall's few hundred windows a second come one by
    one, and each then pays a batch's fixed costs (a one-window FFT, a one-row
    model call, an answer); a few milliseconds of company let them share those
    costs, for as much latency (`batch_deadline_ms`, make bench shows the trade).
    """

    def __init__(self, deliver: Callable[[list[Incoming]], None], batch_max: int, deadline_s: float) -> None:
        self._deliver = deliver
        self._max = batch_max
        self._deadline_s = deadline_s
        self._items: list[Incoming] = []
        self._smallest = 0
        """The smallest held window's payload bytes."""
        self._due = 0.0

    def add(self, items: list[Incoming]) -> None:
        """Take windows; deliver when the batch is full or no deadline is set."""
        fresh = not self._items
        if fresh:
            self._due = time.monotonic() + self._deadline_s
        self._items.extend(items)
        if len(self._items) >= self._max or self._deadline_s <= 0:
            self.flush()
        elif items:
            smallest = min(len(item.payload) for item in items)
            self._smallest = smallest if fresh else min(self._smallest, smallest)

    @property
    def holding(self) -> bool:
        """Whether windows are held for company."""
        return bool(self._items)

    def first_received_perf_ns(self) -> int | None:
        """The first held window's `received_perf_ns`; None when none is held."""
        return self._items[0].received_perf_ns if self._items else None

    def room_bytes(self) -> int:
        """The bytes the windows the held batch still has room for take at least; 0 when none is held.

        The smallest held payload times the windows still wanted: the wire link's reader sleeps
        until that many bytes came (`connection.LowWaterMark`) or the deadline passed. An estimate
        from what is held: smaller windows than all of those may fill the batch before the bytes
        come, and it then goes at its deadline (the wait its setting allows), one read later.
        """
        return (self._max - len(self._items)) * self._smallest if self._items else 0

    def wait_s(self, idle_s: float) -> float:
        """How long the reader may wait for bytes: `idle_s`, or less when windows are held."""
        return min(idle_s, max(0.0, self._due - time.monotonic())) if self._items else idle_s

    def flush_due(self) -> None:
        """Deliver the held windows if their deadline passed."""
        if self._items and time.monotonic() >= self._due:
            self.flush()

    def drop(self) -> None:
        """Forget what is held: its connection ended, so it can no longer be acknowledged (redelivered)."""
        self._items = []

    def flush(self) -> None:
        """Deliver whatever is held."""
        items, self._items = self._items, []
        if items:
            self._deliver(items)


def delivers_inline(settings: ServeSettings) -> bool:
    """Whether the link `settings` choose may answer windows on its own network thread."""
    return settings.mqtt_client != "paho"


class Outgoing(NamedTuple):
    """A message to publish; once the broker has it, `then_ack` (its input) is acknowledged."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    then_ack: Acknowledgeable | None = None


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
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        then_ack: Acknowledgeable | None = None,
    ) -> None:
        """Publish; when the broker acknowledged it, acknowledge `then_ack`."""

    def publish_many(self, messages: Iterable[Outgoing]) -> None:
        """Publish messages in order (as `publish` each)."""

    def ack(self, item: Acknowledgeable) -> None:
        """Acknowledge an input now, if it arrived on the current connection at QoS 1 or 2."""

    def ack_after_pending(self, item: Acknowledgeable) -> None:
        """Acknowledge a redelivered input once every answer published so far is settled.

        Its answer went out before (perhaps on the last connection, and is still pending):
        acknowledged at once, a crash before that answer reached the broker would lose it.
        """

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
