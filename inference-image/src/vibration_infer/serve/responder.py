"""Answering windows: a batch through the active model, its answers out, then alerts, metrics, drift, shadow.

`Responder.answer` is what the link hands each read (or the paho worker each
batch) to, through `app.ServeApp`, which says which model is active and
whether a candidate shadows it. A batch that fails before its answers went
out is retried one window at a time, so one broken window never costs the
others their answers; a window whose own handling fails is answered with
nothing, counted as `internal` and acknowledged, so the broker does not
redeliver it forever. What follows the answers (metrics, alerts, drift, the
shadow run) is never retried: its failure is logged and the next batch goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vibration_core.errors import MessageError
from vibration_core.messages import ErrorReason
from vibration_infer.serve.alerts import AlertPolicy, AlertTracker
from vibration_infer.serve.batcher import BatchProcessor
from vibration_infer.serve.link import Outgoing

if TYPE_CHECKING:
    from vibration_core.drift_monitor import DriftMonitor
    from vibration_core.topics import TopicLayout
    from vibration_infer.loader import LoadedModel
    from vibration_infer.serve.batcher import BatchResult
    from vibration_infer.serve.link import Incoming, Link
    from vibration_infer.serve.metrics import ServeMetrics
    from vibration_infer.serve.settings import ServeSettings
    from vibration_infer.serve.shadow import Shadow

logger = logging.getLogger("vibration_infer.serve.app")


@dataclass(frozen=True, eq=False)
class Active:
    """The model that answers, with the drift monitor against its card's reference."""

    model: LoadedModel
    drift: DriftMonitor


class Responder:
    """Answers batches of windows (one thread at a time: the link's, or the paho worker)."""

    def __init__(
        self, settings: ServeSettings, layout: TopicLayout, metrics: ServeMetrics, link: Link
    ) -> None:
        self.settings = settings
        self.link = link
        self.layout = layout
        self.metrics = metrics
        self.processor = BatchProcessor(
            layout, max_payload_bytes=settings.max_payload_bytes, dedupe_keys=settings.dedupe_keys
        )
        self.alerts = AlertTracker(AlertPolicy.from_settings(settings))

    def answer(self, items: list[Incoming], active: Active, shadow: Shadow | None) -> None:
        """Answer `items` with `active` in batches of at most `batch_max`."""
        batch_max = self.settings.batch_max
        for start in range(0, len(items), batch_max):
            batch = items[start : start + batch_max]
            try:
                result = self._publish(batch, active)
            except Exception:  # retried one message at a time just below
                logger.warning(
                    "batch_failed", extra={"size": len(batch), "retry": "one_by_one"}, exc_info=True
                )
                for item in batch:
                    try:
                        one = self._publish([item], active)
                    except Exception as exc:  # one message's handling: the loop must go on
                        logger.exception("message_failed", extra={"topic": item.topic[:200]})
                        self._answer_failure(item, exc)
                    else:
                        self._observe([item], one, active, shadow)
            else:
                self._observe(batch, result, active, shadow)

    def _answer_failure(self, item: Incoming, exc: Exception) -> None:
        """The error message `internal` for a window whose handling failed, then its acknowledgement."""
        self.metrics.record_errors([ErrorReason.INTERNAL.value])
        try:
            machine = self.layout.machine_of_raw(item.topic)
        except MessageError:
            machine = None
        detail = f"{type(exc).__name__} while answering this window; the pod's log has the rest"
        try:
            answer = self.processor.error(item, MessageError(ErrorReason.INTERNAL, "window", detail), machine)
            self.link.publish_many(
                [Outgoing(answer.topic, answer.payload, self.settings.predictions_qos, then_ack=item.receipt)]
            )
        except Exception:  # nothing more to say: acknowledge it, or the broker brings it back forever
            logger.exception("error_message_failed", extra={"topic": item.topic[:200]})
            self.link.ack(item)

    def _publish(self, items: list[Incoming], active: Active) -> BatchResult:
        """Answer a batch: its answers published (each acknowledging its window once settled)."""
        result = self.processor.process(items, active.model)
        qos = self.settings.predictions_qos
        try:
            self.link.publish_many(
                Outgoing(a.topic, a.payload, qos, then_ack=a.item.receipt) for a in result.answers
            )
        except Exception:  # retried: its windows must not be taken for redeliveries of themselves
            self.processor.deduper.forget(result.keys)
            raise
        for item in result.duplicates:
            self.link.ack_after_pending(item)
        return result

    def _observe(
        self, items: list[Incoming], result: BatchResult, active: Active, shadow: Shadow | None
    ) -> None:
        """What follows a batch's answers: metrics, alerts, drift, the shadow run.

        The windows are answered already: a failure here is logged, never retried, for a retry
        would take them for redeliveries and acknowledge each a second time.
        """
        try:
            self._count(items, result)
            if result.features is not None and result.probabilities is not None:
                active.drift.update(result.features, result.probabilities)
                if shadow is not None and result.classes is not None:
                    shadow.observe(result.features, result.classes, active.model.card.labels)
        except Exception:  # the next batch must be observed, whatever broke this one
            logger.exception("batch_observe_failed", extra={"size": len(items)})

    def _count(self, items: list[Incoming], result: BatchResult) -> None:
        qos = self.settings.predictions_qos
        self.metrics.record_received(len(items))
        predictions = result.predictions
        self.metrics.record_batch([p.label for p in predictions], result.latencies_s)
        errors = result.errors
        if errors:
            self.metrics.record_errors(e.reason.value for e in errors)
        if result.duplicates:
            self.metrics.duplicates.inc(len(result.duplicates))
        alerts = [alert for alert in map(self.alerts.observe, predictions) if alert is not None]
        if alerts:  # one write for the batch's alerts, encoded before the link's lock is taken
            self.link.publish_many([Outgoing(self.layout.alerts(a.machine), a.encode(), qos) for a in alerts])
        for alert in alerts:
            self.metrics.alerts.labels(label=alert.label, severity=alert.severity).inc()
            logger.info(
                "alert",
                extra={
                    "machine": alert.machine,
                    "label": alert.label,
                    "confidence": round(alert.confidence, 3),
                    "severity": alert.severity,
                },
            )
