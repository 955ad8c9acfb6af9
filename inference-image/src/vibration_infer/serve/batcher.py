"""Micro-batching: raw messages in, one answer per message out.

`collect` takes what the paho link's callback queued (the wire link hands
over each read at once, `link.Coalescer`): it waits for a first message,
then takes more until the batch holds `batch_max` windows or
`batch_deadline_ms` have passed since that first window *arrived* (so a
window that already waited while the previous batch ran is not held back
further). The default deadline is 0: a batch is whatever queued while the
previous one ran. Under load that is a full batch anyway; at a low load a
deadline trades latency for CPU per window (docs/benchmarks.md measures both).

`BatchProcessor.process` turns a batch into answers with one model
snapshot: it decodes every payload (`vibration_core.raw.decode_raw`),
refuses windows of another sample rate or length than the card's, runs the
extractor once and the model once over the stacked windows, and names each
class by the card's labels. Every message gets exactly one answer, a
`Prediction` or an `ErrorMessage`, except a window whose (machine,
timestamp_ns, payload) was answered already: that is a redelivery (a QoS 1 retry of
the sensor or the broker) and is only acknowledged. A broken window never
spoils the others of its batch.
"""

from __future__ import annotations

import math
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import xxhash

from vibration_core.errors import FeatureInputError, MessageError
from vibration_core.features import extract_features
from vibration_core.messages import ErrorMessage, ErrorReason, PredictionRow
from vibration_core.raw import decode_raw
from vibration_infer.errors import PredictError

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy.typing as npt

    from vibration_core.raw import RawWindow
    from vibration_core.topics import TopicLayout
    from vibration_infer.loader import LoadedModel
    from vibration_infer.serve.link import Incoming


class Answer(NamedTuple):
    """The one message that answers an input, and the input it acknowledges."""

    item: Incoming
    topic: str
    payload: bytes
    prediction: PredictionRow | None = None
    error: ErrorMessage | None = None


@dataclass(eq=False)
class BatchResult:
    """Everything one batch produced."""

    answers: list[Answer] = field(default_factory=list)
    duplicates: list[Incoming] = field(default_factory=list)
    features: npt.NDArray[np.float32] | None = None
    """Feature rows of the predicted windows, for drift."""
    classes: npt.NDArray[np.intp] | None = None
    """Predicted class index of each of those rows."""
    probabilities: npt.NDArray[np.float64] | None = None
    """Class probabilities of each of those rows, in the card's label order (drift estimates the mix)."""
    latencies_s: list[float] = field(default_factory=list)
    keys: set[Key] = field(default_factory=set)
    """The windows answered, as the deduper remembers them (forgotten again if their answers fail)."""

    @property
    def predictions(self) -> list[PredictionRow]:
        """The predictions among the answers, in batch order."""
        return [a.prediction for a in self.answers if a.prediction is not None]

    @property
    def errors(self) -> list[ErrorMessage]:
        """The error messages among the answers."""
        return [a.error for a in self.answers if a.error is not None]


def collect(
    inbox: queue.SimpleQueue[Incoming], batch_max: int, deadline_s: float, wait_s: float
) -> list[Incoming]:
    """Take one batch from `inbox`; an empty list when nothing came within `wait_s`."""
    try:
        first = inbox.get(timeout=wait_s)
    except queue.Empty:
        return []
    batch = [first]
    deadline = first.received_perf_ns / 1e9 + deadline_s
    while len(batch) < batch_max:
        try:
            batch.append(inbox.get_nowait())
            continue
        except queue.Empty:
            pass
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        try:
            batch.append(inbox.get(timeout=remaining))
        except queue.Empty:
            break
    return batch


MAX_MACHINES = 10_000
"""Raw topics whose machine and predictions topic are kept, at most: far more than a hall has."""

Key = tuple[str, int, int]
"""A window's (machine, timestamp_ns, 64-bit XXH3 digest of its payload): a redelivery brings the same bytes,
while a sensor whose clock ticks once a second sends several windows of one timestamp."""


class Deduper:
    """The most recent window keys (`Key`), oldest forgotten first.

    A key is kept as its 64-bit hash, in a set for lookups and a deque for the
    order: 4.7 MB of Python memory for the default 65 536 keys (under four
    minutes of a hall's 300 windows a second), where the tuples in an
    OrderedDict took 14.9 (a tuple, its int and its machine's string each).
    The timestamp is hashed as its two 32-bit halves: an int's own hash is the
    int modulo 2**61 - 1, so two timestamps that far apart would share it.
    Two keys of different machines share a hash with a chance of about 2**-64:
    with a full deduper, a window is taken for a redelivery once in some
    10**14 windows.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._hashes: set[int] = set()
        self._order: deque[int] = deque()

    def seen(self, key: Key) -> bool:
        """Whether `key` was answered already."""
        return _digest(key) in self._hashes

    def remember(self, keys: Iterable[Key]) -> None:
        """Record answered keys, forgetting the oldest beyond the capacity."""
        if self.capacity == 0:
            return
        for key in keys:
            digest = _digest(key)
            if digest in self._hashes:
                continue
            if len(self._order) >= self.capacity:
                self._hashes.discard(self._order.popleft())
            self._hashes.add(digest)
            self._order.append(digest)

    def forget(self, keys: Iterable[Key]) -> None:
        """Take back keys remembered for answers that did not go out after all."""
        for key in keys:
            self._hashes.discard(_digest(key))


def _digest(key: Key) -> int:
    machine, timestamp_ns, digest = key
    return hash((machine, timestamp_ns & 0xFFFFFFFF, timestamp_ns >> 32, digest))


class BatchProcessor:
    """Decodes, checks, extracts and predicts one batch at a time (one thread only)."""

    def __init__(self, layout: TopicLayout, *, max_payload_bytes: int, dedupe_keys: int) -> None:
        self.layout = layout
        self.max_payload_bytes = max_payload_bytes
        self.deduper = Deduper(dedupe_keys)
        # Each window's raw topic names its machine, and its answer goes to that machine's
        # predictions topic: both checked once per machine, not per window (a regex each).
        self._machines: dict[str, tuple[str, str]] = {}

    def process(self, items: list[Incoming], model: LoadedModel) -> BatchResult:
        """Answer every item of the batch with `model`."""
        result = BatchResult()
        accepted: list[tuple[Incoming, RawWindow]] = []
        keys: set[Key] = set()
        for item in items:
            machine: str | None = None
            try:
                machine = self._machine_of(item.topic)[0]
                window = decode_raw(item.payload, machine, max_bytes=self.max_payload_bytes)
                _check_signal(window, model)
            except MessageError as err:
                result.answers.append(self.error(item, err, machine))
                continue
            # XXH3, not CRC-32: a tenth of the instructions on a 16 KB window (63 k with
            # Debian's zlib, a tenth of a flood's), and 64 bits where CRC-32 has 32 (the
            # deduper's hash of a key takes the digest modulo 2**61 - 1: see `_digest`).
            key = (machine, window.timestamp_ns, xxhash.xxh3_64_intdigest(item.payload))
            if key in keys or self.deduper.seen(key):
                result.duplicates.append(item)
                continue
            keys.add(key)
            accepted.append((item, window))
        if accepted:
            self._predict(accepted, model, result)
        # Remembered only once answered: a batch that fails half-way is retried in full.
        self.deduper.remember(keys)
        result.keys = keys
        # Answers (and so acknowledgements) in arrival order, as MQTT asks of QoS 1 acks.
        if len(result.answers) > 1:
            position = {id(item): i for i, item in enumerate(items)}
            result.answers.sort(key=lambda answer: position[id(answer.item)])
        return result

    def _machine_of(self, topic: str) -> tuple[str, str]:
        """The machine of a raw topic and its predictions topic; `MessageError` for another topic."""
        known = self._machines.get(topic)
        if known is None:
            machine = self.layout.machine_of_raw(topic)
            if len(self._machines) >= MAX_MACHINES:  # a sensor inventing machine names: start over
                self._machines.clear()
            known = self._machines[topic] = (machine, self.layout.predictions(machine))
        return known

    def error(self, item: Incoming, err: MessageError, machine: str | None) -> Answer:
        """The error message answering `item`, on its machine's error topic or the hall's."""
        message = ErrorMessage.from_error(err, item.topic[:512], machine, item.received_ns)
        topic = self.layout.errors(machine) if machine is not None else self.layout.hall_errors()
        return Answer(item, topic, message.encode(), error=message)

    def _predict(
        self, accepted: list[tuple[Incoming, RawWindow]], model: LoadedModel, result: BatchResult
    ) -> None:
        card = model.card
        # One window (a hall's load, mostly) is a batch of one as it is: extract_features takes 1-D.
        windows = accepted[0][1].samples if len(accepted) == 1 else np.stack([w.samples for _, w in accepted])
        try:
            features = extract_features(windows, card.signal.sample_rate)
        except FeatureInputError as exc:
            # Samples so large (or one so tiny) that a feature is not finite in float32: refuse those
            # windows and run the rest (decode_raw already refused NaN and inf).
            bad = set(exc.windows) or set(range(len(accepted)))
            for i in sorted(bad):
                item, window = accepted[i]
                err = MessageError(ErrorReason.NON_FINITE, "samples", exc.reason)
                result.answers.append(self.error(item, err, window.machine))
            accepted = [pair for i, pair in enumerate(accepted) if i not in bad]
            if not accepted:
                return
            features = extract_features(np.stack([w.samples for _, w in accepted]), card.signal.sample_rate)
        try:
            probabilities = model.backend.predict_proba(features)
        except PredictError as exc:
            # A model that fails on contract-checked input is the model's
            # fault, not the sensor's (internal, not bad_field); the windows are still answered.
            for item, window in accepted:
                err = MessageError(ErrorReason.INTERNAL, "model", exc.detail[:300])
                result.answers.append(self.error(item, err, window.machine))
            return
        probs = np.clip(probabilities.astype(np.float64), 0.0, 1.0)
        if not np.isfinite(probs).all():  # NaN survives the clip; a Prediction holds numbers
            for item, window in accepted:
                err = MessageError(ErrorReason.INTERNAL, "model", "the model gave a probability that is NaN")
                result.answers.append(self.error(item, err, window.machine))
            return
        classes = np.argmax(probs, axis=1)
        labels, rows = card.labels, probs.tolist()
        model_id, version = card.model_id, card.version
        done_ns = time.perf_counter_ns()  # the whole batch is ready at once
        for (item, window), index, row in zip(accepted, classes.tolist(), rows, strict=True):
            elapsed_s = (done_ns - item.received_perf_ns) / 1e9
            # Every field checked already (see PredictionRow): the topic's machine, the decoded
            # timestamp, the card's id, version and labels, the probabilities just above.
            prediction = PredictionRow(
                window.machine,
                window.timestamp_ns,
                model_id,
                version,
                labels[index],
                row[index],
                dict(zip(labels, row, strict=True)),
                round(elapsed_s * 1e3, 4),
            )
            topic = self._machine_of(item.topic)[1]  # looked up again if the map started over
            result.answers.append(Answer(item, topic, prediction.encode(), prediction=prediction))
            result.latencies_s.append(elapsed_s)
        result.features = features
        result.classes = classes
        result.probabilities = probs


def _check_signal(window: RawWindow, model: LoadedModel) -> None:
    signal = model.card.signal
    if not math.isclose(window.sample_rate, signal.sample_rate, rel_tol=1e-9):
        detail = (
            f"{window.sample_rate:g} Hz, the model {model.card.version} was trained for "
            f"{signal.sample_rate:g} Hz"
        )
        raise MessageError(ErrorReason.SAMPLE_RATE_MISMATCH, "sample_rate", detail)
    if window.samples.size != signal.window_length:
        detail = (
            f"{window.samples.size} samples, the model {model.card.version} expects {signal.window_length}"
        )
        raise MessageError(ErrorReason.WINDOW_LENGTH_MISMATCH, "n_samples", detail)
    if window.unit is not None and window.unit != signal.unit:
        version = model.card.version
        detail = f"samples in {window.unit}, the model {version} was trained on samples in {signal.unit}"
        raise MessageError(ErrorReason.UNIT_MISMATCH, "unit", detail)
