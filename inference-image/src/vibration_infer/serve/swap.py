"""Hot swap: a new target model is validated inside the running pod, then swapped in between batches.

The target comes from the operator's target file (`targets`: the channel,
and why a file). Steps (one target at a time, on a thread of its own, while
the current model keeps serving): fetch into the node cache (a cached
digest needs no download) → load in the serving runtime → contract check →
evaluate on the node-local test data against the thresholds → mark last
good. This is the init container's validation (`candidate`), and the model
it returns is the session that passed. The worker picks the new model up
at its next batch boundary (one reference assignment), so every window is
answered by exactly one model and the version in predictions changes once.
A failure of any step leaves the old model serving, and the status (state
``failed``, with the reason), the
``vibration_infer_swaps_total{outcome="failed"}`` counter and a log line
say why. The same target is not tried again until the file changes, except
one that could not be fetched (the registry down, or refusing the node's
keys): that is the registry's fault, not the model's, and it is tried again
every ``fetch_retry_s`` until it can be fetched or the target changes.

Coral: the swap happens inside the pod that already holds the Edge TPU, so
a Coral node never needs a second pod (which could not get the TPU) and is
never without a serving model, also when the new version fails. The
candidate and the serving model share the TPU in one process, which the
Edge TPU runtime allows.

What stays here is one state machine (a target seen, fetched, validated,
shadowed, promoted or refused) whose steps share the candidate's state.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from vibration_core.validation import ExitCode
from vibration_infer.serve.candidate import validate_target
from vibration_infer.serve.shadow import Shadow
from vibration_infer.serve.targets import TargetWatcher, is_serving
from vibration_infer.validate import Outcome

if TYPE_CHECKING:
    from vibration_core.messages import CandidateState, ModelState
    from vibration_core.target import ModelTarget
    from vibration_core.validation import CompactReport
    from vibration_infer.cache import ModelCache
    from vibration_infer.loader import LoadedModel
    from vibration_infer.serve.metrics import ServeMetrics
    from vibration_infer.serve.settings import ServeSettings
    from vibration_infer.serve.targets import TargetChange

logger = logging.getLogger(__name__)


class SwapHost(Protocol):
    """What a hot swap needs from the serving pod."""

    def serving(self) -> LoadedModel | None:
        """The model answering now."""
        ...

    def promote(self, model: LoadedModel) -> None:
        """Make a validated model the one that answers."""
        ...

    def report_state(self, state: ModelState, message: str) -> None:
        """Publish a state change with its explanation."""
        ...

    def report_candidate(
        self, target: ModelTarget, state: CandidateState, report: CompactReport | None
    ) -> None:
        """Publish how the validation of a target stands (the operator reads it from /status)."""
        ...

    def shadow_with(self, shadow: Shadow | None) -> None:
        """Run `shadow` beside the serving model on every batch from now on; None stops it."""
        ...


class HotSwap:
    """Watches the target file and takes each new target through validation into service."""

    def __init__(
        self, settings: ServeSettings, cache: ModelCache, metrics: ServeMetrics, host: SwapHost
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.metrics = metrics
        self.host = host
        self.watcher = TargetWatcher(settings.target_file) if settings.target_file else None
        self._thread: threading.Thread | None = None
        self._retry: tuple[ModelTarget, float] | None = None
        """A target that could not be fetched, and when to try it again (the registry may be back)."""
        self._abandon = threading.Event()
        """Set when the target file changes during a validation or shadow run: that candidate is no
        longer wanted (it is neither promoted nor marked last good)."""
        self._pending: TargetChange | None = None
        """The change seen during a validation or shadow run, handled once the run has ended."""

    @property
    def busy(self) -> bool:
        """Whether a target is being validated right now."""
        return self._thread is not None and self._thread.is_alive()

    def poll(self) -> None:
        """Look at the target file; start a swap when it names a new model (one at a time)."""
        if self.watcher is None:
            return
        if self.busy:
            # A new target ends the run in hand (a shadow run at once, a validation before it promotes);
            # the next poll after it then handles the change.
            if self._pending is None and (change := self.watcher.poll()) is not None:
                self._pending = change
                self._abandon.set()
            return
        # The file as it is now first: a change noted during the last run may be gone already (v3
        # named, then the roll back to what serves), and must not be validated and promoted.
        change, self._pending = self.watcher.poll() or self._pending, None
        if change is None:
            if self._retry is not None and time.monotonic() >= self._retry[1]:
                target, self._retry = self._retry[0], None
                logger.info("swap_retry", extra={"version": target.version, "sha256": target.sha256})
                self._start(target)
            return
        self._retry = None  # a new target replaces whatever was to be tried again
        if change.target is None:
            self.metrics.swaps.labels(outcome="failed").inc()
            logger.warning("target_invalid", extra={"path": self.watcher.path, "problem": change.problem})
            self.host.report_state("failed", f"target file unusable: {change.problem}")
            return
        serving = self.host.serving()
        if serving is not None and is_serving(serving, change.target):
            logger.info(
                "target_already_active", extra={"version": change.target.version, "sha256": serving.sha256}
            )
            self.host.report_candidate(change.target, "passed", None)
            self.host.report_state("serving", f"serving {serving.card.model_id} {serving.card.version}")
            return
        self._start(change.target)

    def _start(self, target: ModelTarget) -> None:
        self._abandon.clear()
        self._thread = threading.Thread(target=self.run, args=(target,), name="swap", daemon=True)
        self._thread.start()

    def run(self, target: ModelTarget) -> None:
        """Validate `target` and promote it, or report why not; the current model serves throughout."""
        logger.info("swap_started", extra={"version": target.version, "sha256": target.sha256})
        self.host.report_candidate(target, "validating", None)
        self.host.report_state("validating", f"validating target {target.short}")
        try:
            shadows = self._shadows(target)
            # Marked last good only below, once nothing newer replaced the target meanwhile.
            # A newer target stops a download of this one in progress: a trickling registry must not
            # hold the swap (and the target after it) for as long as the transfer takes.
            outcome = validate_target(
                self.settings,
                target,
                self.cache,
                self.host.serving(),
                defer_promotion=True,
                cancel=self._abandon,
            )
        except Exception as exc:  # one target's handling: a crash must leave the old model serving
            logger.exception("swap_crashed", extra={"sha256": target.sha256})
            crashed = Outcome(code=ExitCode.INTERNAL, reason=f"{type(exc).__name__}: {exc}"[:500])
            self._failed(target, crashed)
            return
        try:
            self._conclude(target, outcome, shadows=shadows)
        finally:
            if outcome.unpin is not None:  # promoted (its last good record keeps it now) or given up
                outcome.unpin()

    def _conclude(self, target: ModelTarget, outcome: Outcome, *, shadows: bool) -> None:
        """Shadow a passed candidate where asked, then promote it or report why not."""
        if outcome.code is ExitCode.PASSED and outcome.model is not None and shadows:
            shadowed = self._shadow(target, outcome, outcome.model)
            if shadowed is None:  # abandoned for a newer target
                return
            outcome = shadowed
        if self._abandon.is_set():
            # The file named another target while this one was validated (the operator moved on,
            # or rolled back): this candidate is no longer wanted, whatever its outcome.
            logger.info("swap_abandoned", extra={"version": target.version, "sha256": target.sha256})
            return
        if outcome.code is ExitCode.PASSED and outcome.model is not None:
            if outcome.promote_later is not None:
                try:
                    outcome.promote_later()  # now it is the node's last good
                except Exception as exc:  # a full disk, say: keep serving the old model, and say why
                    logger.exception("swap_last_good_failed", extra={"sha256": target.sha256})
                    outcome.code, outcome.model = ExitCode.INTERNAL, None  # its figures stay in the report
                    outcome.reason = f"cannot record it as last good: {type(exc).__name__}: {exc}"[:500]
                    self._failed(target, outcome)
                    return
            self.metrics.swaps.labels(outcome="promoted").inc()
            self.host.report_candidate(target, "passed", outcome.compact())
            self.host.promote(outcome.model)
            logger.info(
                "swap_promoted", extra={"version": outcome.model.card.version, "sha256": outcome.model.sha256}
            )
            return
        self._failed(target, outcome)

    def _shadows(self, target: ModelTarget) -> bool:
        """Whether `target` asks for a shadow run and the pod serves the champion it names."""
        serving = self.host.serving()
        champion = target.champion
        return (
            target.shadow is not None
            and champion is not None
            and serving is not None
            and serving.sha256 == champion.sha256
        )

    def _shadow(self, target: ModelTarget, outcome: Outcome, candidate: LoadedModel) -> Outcome | None:
        """Run the validated candidate beside the champion on live windows; None when abandoned."""
        assert target.shadow is not None  # noqa: S101 - checked by _shadows, for the type checker
        shadow = Shadow(candidate, target.shadow)
        self.host.report_candidate(target, "validating", outcome.compact())
        self.host.report_state(
            "validating", f"shadowing {target.short} on live windows: 0/{target.shadow.windows}"
        )
        logger.info("shadow_started", extra={"version": target.version, "windows": target.shadow.windows})
        self.host.shadow_with(shadow)
        try:
            while not shadow.done.wait(0.2):
                if self._abandon.is_set():
                    logger.info(
                        "shadow_abandoned", extra={"version": target.version, "windows": shadow.windows}
                    )
                    return None
        finally:
            self.host.shadow_with(None)
        outcome.shadow = shadow.result()
        logger.info(
            "shadow_done",
            extra={
                "version": target.version,
                "windows": outcome.shadow.windows,
                "agreement": round(outcome.shadow.agreement, 4),
                "cpu_us_per_window": round(outcome.shadow.cpu_us_per_window, 1),
                "passed": outcome.shadow.passed,
            },
        )
        if shadow.error:
            outcome.code = ExitCode.CANNOT_LOAD
            outcome.reason = (
                f"shadow on live windows: the candidate failed after {shadow.windows} windows: {shadow.error}"
            )
            outcome.model = None
        elif not outcome.shadow.passed:
            outcome.code = ExitCode.BELOW_THRESHOLD
            outcome.reason = "shadow on live windows: " + "; ".join(outcome.shadow.failures())
            outcome.model = None
        return outcome

    def _failed(self, target: ModelTarget, outcome: Outcome) -> None:
        # A fetch that failed is tried again every fetch_retry_s: a day's registry outage is not
        # 2 880 failed swaps.
        fetch = outcome.code is ExitCode.CANNOT_FETCH
        self.metrics.swaps.labels(outcome="fetch_failed" if fetch else "failed").inc()
        code = outcome.code.name
        logger.warning(
            "swap_failed",
            extra={
                "version": target.version,
                "sha256": target.sha256,
                "code": code,
                "reason": outcome.reason,
            },
        )
        self.host.report_candidate(target, "failed", outcome.compact())
        if outcome.code is ExitCode.CANNOT_FETCH:  # the registry's fault, not the model's
            self._retry = (target, time.monotonic() + self.settings.fetch_retry_s)
        serving = self.host.serving()
        keeps = f"; still serving {serving.card.version}" if serving else ""
        message = f"target {target.short} refused, {code.lower()}: {outcome.reason}{keeps}"
        self.host.report_state("failed", message[:1000])
