"""Shadow: a validated candidate runs beside the serving model on live windows before it may answer.

A node's test set is a sample of the past; live traffic may hold machines it
lacks. So after a candidate passed validation in the pod, and where the
rollout asks for it (``spec.rollout.shadow``), the worker runs the candidate
on the very features of every batch it answers with the serving model (the
champion), and counts how often the two agree: overall, and per class the
champion predicted (the disagreement matrix, champion label by candidate
label). Only the champion's predictions are published. After `windows`
windows the gate decides: agreement at least `min_agreement` overall and
`min_class_agreement` for each class the champion predicted at least
`min_class_windows` times (fewer windows say too little about a class to
refuse for it; they are counted and shown). A candidate that falls short is
refused as for a failed validation (reason ``ShadowDisagreed``) and the
champion keeps serving. A candidate that fails on a live batch (its runtime
raises) ends the run at once and is refused as one that cannot load.

Cost: one more model call per batch on features already extracted (the
extractor is the larger part of a window's cost); `make bench` measures it.
Counting is numpy over the batch, under a lock shared with the swap thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from vibration_core.gate import Check, ShadowResult

if TYPE_CHECKING:
    import numpy.typing as npt

    from vibration_core.target import ShadowPolicy
    from vibration_infer.loader import LoadedModel

logger = logging.getLogger(__name__)


class Shadow:
    """Counts the agreement of a candidate with the serving model on live batches."""

    def __init__(self, candidate: LoadedModel, policy: ShadowPolicy) -> None:
        self.candidate = candidate
        self.policy = policy
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], int] = {}
        self._windows = 0
        self._cpu_ns = 0
        self._done = threading.Event()
        self._error = ""

    @property
    def done(self) -> threading.Event:
        """Set once `policy.windows` windows were counted, or the candidate failed on a batch."""
        return self._done

    @property
    def error(self) -> str:
        """Why the candidate could not answer a live batch ('' while it could)."""
        with self._lock:
            return self._error

    def observe(
        self,
        features: npt.NDArray[np.float32],
        champion_classes: npt.NDArray[np.intp],
        champion_labels: tuple[str, ...],
    ) -> None:
        """Run the candidate on a batch's features and count it against the champion's classes."""
        remaining = self.policy.windows - self._windows
        if remaining <= 0 or self._done.is_set():
            return
        rows = features[:remaining]
        started = time.thread_time_ns()
        try:
            probabilities = self.candidate.backend.predict_proba(rows)
            if not np.isfinite(probabilities).all():  # argmax would read NaN as class 0: agreement
                msg = "the candidate gave a probability that is NaN or infinite"
                raise ValueError(msg)  # noqa: TRY301 - the candidate's fault, handled as its others
            candidate = np.argmax(probabilities, axis=1)
            pairs, counts = np.unique(
                np.stack([champion_classes[: len(rows)], candidate]), axis=1, return_counts=True
            )
        except Exception as exc:  # the candidate's fault (its runtime, or answers of another shape):
            # the run ends, refused, and the champion answers on
            logger.exception("shadow_candidate_failed", extra={"windows": self._windows})
            with self._lock:
                self._error = f"{type(exc).__name__}: {exc}"[:300]
                self._done.set()
            return
        spent = time.thread_time_ns() - started
        mine, theirs = self.candidate.card.labels, champion_labels
        with self._lock:
            for (a, b), count in zip(pairs.T.tolist(), counts.tolist(), strict=True):
                key = (theirs[a], mine[b])
                self._pairs[key] = self._pairs.get(key, 0) + count
            self._windows += len(rows)
            self._cpu_ns += spent
            if self._windows >= self.policy.windows:
                self._done.set()

    @property
    def windows(self) -> int:
        """Windows counted so far."""
        with self._lock:
            return self._windows

    def result(self) -> ShadowResult:
        """The counts so far and the gate's checks on them."""
        with self._lock:
            pairs, windows, cpu_ns = dict(self._pairs), self._windows, self._cpu_ns
        agree = sum(n for (a, b), n in pairs.items() if a == b)
        overall = agree / windows if windows else 0.0
        per_class: dict[str, float] = {}
        for label in sorted({a for a, _ in pairs}):
            total = sum(n for (a, _), n in pairs.items() if a == label)
            if total >= self.policy.min_class_windows:
                per_class[label] = pairs.get((label, label), 0) / total
        checks = [_at_least("agreement", overall, self.policy.min_agreement)]
        checks += [
            _at_least(f"agreement[{label}]", value, self.policy.min_class_agreement)
            for label, value in per_class.items()
        ]
        return ShadowResult(
            windows=windows,
            agreement=overall,
            class_agreement=per_class,
            disagreements={f"{a}->{b}": n for (a, b), n in sorted(pairs.items()) if a != b},
            checks=tuple(checks),
            cpu_us_per_window=cpu_ns / 1000 / windows if windows else 0.0,
        )


def _at_least(figure: str, value: float, threshold: float) -> Check:
    return Check(
        figure=figure, value=value, threshold=threshold, kind="floor", passed=round(value, 4) >= threshold
    )
