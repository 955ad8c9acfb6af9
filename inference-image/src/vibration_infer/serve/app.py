"""The serving pod, wired: MQTT in, batches through the model, answers out, status beside.

Threads: the MQTT link's network thread hands over what each read brought
(`link`); the wire link's windows are answered right there, as one batch
(`_answer`), paho's are queued and a worker thread collects them into
batches (`batcher.collect`). Either way a batch is answered with the model
that is active when it starts (`Active`, swapped as one reference, so a
batch never mixes models); the main thread publishes status and watches the
target file; a swap runs on a thread of its own while the old model keeps
serving; the HTTP endpoints run on theirs.

The answering itself is `responder` (and, below it, `batcher`); this module
holds the pod's one lifecycle (start, serve, swap, stop) and the state its
endpoints and status topic report, which is why it is longer than the others:
split further, each part would reach back into the same state.

Stopping (SIGTERM): the batch in hand is finished and no new one is taken,
the link waits a little for the broker to acknowledge the last answers (and
so for their inputs to be acknowledged), a final status says not ready, and
the session is left for the next pod: windows received but not answered
here were never acknowledged, so the broker delivers them again.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from vibration_core.drift_monitor import DriftMonitor
from vibration_core.messages import ModelStatus
from vibration_core.modelcard import ModelCard
from vibration_core.target import load_target
from vibration_core.topics import TopicLayout
from vibration_infer.cache import ModelCache
from vibration_infer.last_good import slot_of
from vibration_infer.loader import load_model
from vibration_infer.serve.batcher import collect
from vibration_infer.serve.http import HttpServer
from vibration_infer.serve.link import Incoming, delivers_inline, queue_into
from vibration_infer.serve.memory import MemoryTrimmer
from vibration_infer.serve.metrics import ServeMetrics
from vibration_infer.serve.responder import Active, Responder
from vibration_infer.serve.swap import HotSwap

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from prometheus_client import CollectorRegistry

    from vibration_core.drift_monitor import DriftReport
    from vibration_core.messages import CandidateState, ModelState
    from vibration_core.target import ModelTarget
    from vibration_core.validation import CompactReport
    from vibration_infer.loader import LoadedModel
    from vibration_infer.serve.link import Link
    from vibration_infer.serve.settings import ServeSettings
    from vibration_infer.serve.shadow import Shadow

logger = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.1
_REFREEZE_AFTER_S = 1.0


def make_link(
    settings: ServeSettings,
    subscription: str,
    deliver: Callable[[list[Incoming]], None],
    on_change: Callable[[], None] | None = None,
    stale: Sequence[str] = (),
) -> Link:
    """The link `settings.mqtt_client` names; it hands what it receives to `deliver`."""
    if not delivers_inline(settings):  # paho: its callback only queues
        from vibration_infer.serve.paho_link import MqttLink  # noqa: PLC0415 - paho only when chosen

        return MqttLink(settings, subscription, deliver, on_change, stale)
    from vibration_infer.serve.wire.link import WireLink  # noqa: PLC0415 - one client per process

    return WireLink(settings, subscription, deliver, on_change, stale)


class ServeApp:
    """One serving pod. `start`, then `run_forever` until `request_stop`, then `shutdown`."""

    def __init__(self, settings: ServeSettings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.layout = TopicLayout(settings.topic_prefix)
        self.metrics = ServeMetrics(registry)
        self.cache = ModelCache(settings.cache_dir, keep=settings.cache_keep)
        self.inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        group = settings.mqtt_share_group
        self.subscription = self.layout.raw_subscription(group)
        # A session kept from before the share group still holds the plain filter, which would
        # bring every window on top of this pod's share: the link drops it on each connect.
        stale = [self.layout.raw_subscription()] if group else []
        self._inline = delivers_inline(settings)
        deliver = self._answer if self._inline else queue_into(self.inbox)
        self.link = make_link(settings, self.subscription, deliver, self._on_connection, stale)
        # Read at each scrape, the method looked up then too (a test stands in for a lagging broker).
        self.metrics.answers_unacknowledged.set_function(lambda: self.link.unacknowledged())  # noqa: PLW0108
        # The link hands windows to `_answer`, which only runs once the link is started.
        self.responder = Responder(settings, self.layout, self.metrics, self.link)
        self.http = HttpServer(self, settings.http_host, settings.http_port)
        self.swap = HotSwap(settings, self.cache, self.metrics, self)
        self.trimmer = MemoryTrimmer(settings.memory_trim_s)
        self._active: Active | None = None
        self._state: ModelState = "loading"
        self._message = ""
        self._candidate: tuple[ModelTarget, CandidateState, CompactReport | None] | None = None
        self._drift_report: DriftReport | None = None
        self._stop = threading.Event()
        self._signalled = False
        self._wake = threading.Event()
        self._dirty = threading.Event()
        self._consuming = False
        """Whether MQTT was started (once a model is active); the link then answers or queues."""
        self._worker: threading.Thread | None = None
        """The paho link's batching thread (the wire link answers on its own thread)."""
        self._shadow: Shadow | None = None
        """A candidate shadowing the serving model on live windows (the swap thread sets it)."""
        self._lock = threading.Lock()
        self._refreeze_at: float | None = None

    # --- what the endpoints and the status topic report ------------------------------------

    @property
    def registry(self) -> CollectorRegistry:
        """The pod's Prometheus registry."""
        return self.metrics.registry

    def serving(self) -> LoadedModel | None:
        """The model answering right now."""
        active = self._active
        return active.model if active else None

    def is_ready(self) -> bool:
        """A validated model is loaded, MQTT is connected, and the pod is not stopping."""
        return self._active is not None and self.link.connected and not self._stop.is_set()

    def status(self) -> ModelStatus:
        """The pod's status, as published on the status topic and served on /status."""
        active, report = self._active, self._drift_report
        received, _, errors = self.metrics.totals()
        card = active.model.card if active else None
        return ModelStatus(
            node=self.settings.node_name,
            model_id=card.model_id if card else None,
            version=card.version if card else None,
            sha256=active.model.sha256 if active else None,
            state=self._state,
            ready=self.is_ready(),
            windows_total=received,
            errors_total=errors,
            drift=report.as_flat() if report else {},
            drifted=report.drifted if report else False,
            message=self._status_message(),
            updated_ns=time.time_ns(),
            **self._candidate_fields(),
        )

    def _status_message(self) -> str:
        """The explanation on /status: a model that serves but cannot reach its broker says so."""
        s, why = self.settings, self.link.last_error
        if self._state == "serving" and why and not self.link.connected and self._consuming:
            return f"not connected to the MQTT broker {s.mqtt_host}:{s.mqtt_port}: {why}"
        return self._message

    def _candidate_fields(self) -> dict[str, Any]:
        if self._candidate is None:
            return {}
        target, state, report = self._candidate
        return {
            "candidate_version": target.version,
            "candidate_sha256": target.sha256,
            "candidate_state": state,
            "candidate_report": report,
        }

    # --- model ----------------------------------------------------------------------------

    def load_initial(self) -> LoadedModel:
        """Load the model to start with: the explicit files, else the cache's last good version.

        The last good version is the one of `model_id` when set, else the one of the
        VibrationModel named in the target file, which the init container validated.
        """
        s = self.settings
        if s.artifact is not None and s.card is not None:
            return self._load(s.artifact, ModelCard.load(s.card), None)
        if s.model_id is not None:
            good, what = self.cache.last_good(s.model_id), f"model id {s.model_id}"
        elif s.target_file is not None:
            target = load_target(s.target_file)
            slot = slot_of(target.name, s.namespace)
            good, what = self.cache.last_good_of_slot(slot), f"VibrationModel {slot}"
        else:  # refused by ServeSettings
            raise FileNotFoundError("no model_id, artifact or target_file to serve from")
        if good is None:
            raise FileNotFoundError(f"no last good version of {what} in {s.cache_dir}")
        return self._load(good.artifact, ModelCard.load(good.card), good.sha256)

    def _load(self, artifact: Path, card: ModelCard, sha256: str | None) -> LoadedModel:
        s = self.settings
        return load_model(
            artifact,
            card,
            accelerator=s.accelerator,
            edgetpu_fallback=s.edgetpu_fallback,
            expected_sha256=sha256,
            threads=s.threads,
        )

    def promote(self, model: LoadedModel) -> None:
        """Install a model that passed validation here; start consuming if it is the first one."""
        self.install(model)
        self._start_consuming()

    def install(self, model: LoadedModel) -> None:
        """Make `model` the one that answers, from the worker's next batch on."""
        # A new monitor per model: its class baseline is the first windows this model answers here.
        drift = DriftMonitor(model.card.reference, model.card.labels, self.settings.drift_policy)
        previous, self._active = self._active, Active(model, drift)
        if previous is not None:
            # serve's main froze the start-up heap (gc.freeze) so that full collections
            # skip it; the model replaced here is part of it. Once the batch in hand has
            # let go of it, collect it and freeze what lives on.
            self._refreeze_at = time.monotonic() + _REFREEZE_AFTER_S
        self._drift_report = drift.report()
        card = model.card
        problem = self.responder.alerts.policy.mismatch(card.labels)
        if problem:
            logger.warning("alert_policy_mismatch", extra={"version": card.version, "problem": problem})
        self.metrics.alert_policy_mismatch.set(1 if problem else 0)
        self.metrics.set_model(card.model_id, card.version, model.sha256, model.backend.name)
        said = f"serving {card.model_id} {card.version}"
        self.report_state("serving", f"{said}; alert policy: {problem}" if problem else said)
        logger.info(
            "model_active",
            extra={
                "model_id": card.model_id,
                "version": card.version,
                "sha256": model.sha256,
                "backend": model.backend.name,
                "previous": previous.model.card.version if previous else None,
            },
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the HTTP endpoints and, with a model, MQTT and the worker."""
        self.http.start()
        if self._active is None:
            self.report_state("no_model", self._message or "no model to serve yet")
        else:
            self._start_consuming()

    def _start_consuming(self) -> None:
        with self._lock:
            if self._consuming:
                return
            self._consuming = True
            if not self._inline:
                self._worker = threading.Thread(target=self._work, name="batcher", daemon=True)
                self._worker.start()
        self.link.start()

    def request_stop(self) -> None:
        """Ask `run_forever` to return (from another thread; a signal handler uses `signal_stop`)."""
        self._stop.set()
        self._wake.set()

    def signal_stop(self) -> None:
        """Ask `run_forever` to return, from a signal handler: a plain flag, no lock.

        A handler runs on the main thread between two bytecodes, possibly while that
        thread holds the lock inside `self._wake`; `Event.set` there would wait for it
        forever. `run_forever` sees the flag within one wait (at most `target_poll_s`).
        """
        self._signalled = True

    def run_forever(self) -> None:
        """Publish status and watch the target until `request_stop`."""
        s = self.settings
        next_status = next_poll = time.monotonic()
        while not (self._stop.is_set() or self._signalled):
            now = time.monotonic()
            if now >= next_poll:
                self.swap.poll()
                next_poll = now + s.target_poll_s
            if now >= next_status or self._dirty.is_set():
                self._dirty.clear()
                self.publish_status()
                next_status = now + s.status_interval_s
            self.trimmer.maybe_trim(now)
            self._maybe_refreeze(now)
            due = min(next_poll, next_status, self.trimmer.next_due, self._refreeze_at or float("inf"))
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
        self._stop.set()  # on this thread, outside any handler: the worker and readiness see it

    def _maybe_refreeze(self, now: float) -> None:
        if self._refreeze_at is not None and now >= self._refreeze_at:
            self._refreeze_at = None
            if gc.get_freeze_count():
                gc.unfreeze()
                gc.collect()
                gc.freeze()

    def shutdown(self) -> None:
        """Finish the batch in hand, let the last answers be acknowledged, disconnect."""
        self.request_stop()
        if self._consuming:
            if self._worker is not None:
                self._worker.join(timeout=10)
            if self.link.connected:
                self.status_message("stopping: the next pod takes over the session")
                self.publish_status()
            self.link.stop(self.settings.shutdown_timeout_s)
        self.http.stop()
        logger.info("serve_stopped")

    # --- status ---------------------------------------------------------------------------

    def status_message(self, message: str) -> None:
        """Set the status message shown until the next state change."""
        self._message = message
        self._dirty.set()

    def report_candidate(
        self, target: ModelTarget, state: CandidateState, report: CompactReport | None
    ) -> None:
        """Record how the validation of `target` stands; published with the status and in the metrics."""
        self._candidate = (target, state, report)
        if report is not None and report.reason_code is not None:
            self.metrics.set_gate(report)
        self._dirty.set()
        self._wake.set()

    def shadow_with(self, shadow: Shadow | None) -> None:
        """Run `shadow` beside the serving model on each batch from the next one on; None stops it."""
        self._shadow = shadow

    def report_state(self, state: ModelState, message: str) -> None:
        """Set the state and its message, and have the status published now."""
        self._state, self._message = state, message
        self._dirty.set()
        self._wake.set()

    def _on_connection(self) -> None:
        self.metrics.mqtt_connected.set(1 if self.link.connected else 0)
        self._dirty.set()
        self._wake.set()

    def publish_status(self) -> ModelStatus:
        """Refresh drift and readiness, publish the retained status (when connected), return it."""
        active = self._active
        if active is not None:
            self._drift_report = active.drift.report()
            self.metrics.set_drift(self._drift_report)
        status = self.status()
        self.metrics.ready.set(1 if status.ready else 0)
        if self._consuming and self.link.connected:
            topic = self.layout.status(self.settings.node_name)
            self.link.publish(topic, status.encode(), qos=1, retain=True)
        return status

    # --- the worker -----------------------------------------------------------------------

    def _work(self) -> None:
        """The paho link's worker: batches what its callback queued."""
        s = self.settings
        deadline_s = s.batch_deadline_ms / 1000
        while not self._stop.is_set():
            items = collect(self.inbox, s.batch_max, deadline_s, _IDLE_WAIT_S)
            if items:
                self._answer(items)

    def _answer(self, items: list[Incoming]) -> None:
        """Answer `items` with the active model (on the wire link's thread, or the paho worker)."""
        active = self._active
        if self._stop.is_set() or active is None:
            return  # never acknowledged: the broker delivers them again, to the next pod
        self.responder.answer(items, active, self._shadow)
