"""``vibration-infer validate``: may this node serve this model (contract 4)?

Resolve the target from the node cache or the registry, check its digest,
load it in the runtime it will serve with, check its contract, run the
node-local test data, compare with the thresholds. Only a passed validation
marks the version last good; a failed one leaves the cache's last good
version as it was, so the node keeps serving it.

With ``--target FILE`` (what the operator's pods run) the model, its digest
and thresholds come from the node's target file (`vibration_core.target`),
and a passed version is also recorded as the last good one of the target's
VibrationModel. With ``--fallback-last-good`` as well, a failed target still
exits 0 when this node has a last good version of that VibrationModel: the
report says the target failed (the operator reads it), the exit code lets
the pod start serving what passed before. A Coral node is then never without
a model, and a node that reboots offline serves again.

The outcome (`vibration_infer.outcome`) goes three ways: a full JSON report
on stdout, a compact one (under 4 KiB) in the termination-message file that
the operator reads from the pod status, and the exit code, one per failure
class (`vibration_infer.errors.exit_code_for`). Where the model comes from
is `vibration_infer.resolve`. The serving loop's hot swap calls
`run_validation` and keeps the returned `LoadedModel`, so the model it swaps
in is the very session that passed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from vibration_core.errors import TargetError, VibrationCoreError
from vibration_core.gate import Figures, Policy, judge
from vibration_core.target import load_target
from vibration_core.validation import ExitCode
from vibration_infer.cache import ModelCache
from vibration_infer.errors import InferenceError, exit_code_for
from vibration_infer.evaluate import (
    check_policy_labels,
    check_verdict,
    evaluate,
    figures_of,
    in_model_unit,
    read_test_data,
)
from vibration_infer.fetch import redact_uri
from vibration_infer.last_good import slot_of
from vibration_infer.loader import LoadedModel, load_model
from vibration_infer.outcome import Outcome, emit, one_line, secrets_of
from vibration_infer.resolve import resolve

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from vibration_core.modelcard import ModelCard
    from vibration_core.target import ModelTarget
    from vibration_infer.cache import CachedModel
    from vibration_infer.evaluate import TestData
    from vibration_infer.settings import ValidateSettings

# `Outcome` is part of this module's interface: the serving loop's swap takes it with `run_validation`.
__all__ = ["Outcome", "run_validation", "validate"]

logger = logging.getLogger(__name__)


def validate(settings: ValidateSettings, *, out: TextIO | None = None) -> ExitCode:
    """Run a validation, print the full report, write the compact one; return the exit code."""
    shadowed = False
    if settings.target is not None:
        try:
            target = load_target(settings.target)
            settings = settings.for_target(target)
            shadowed = _shadow_waits(settings, target)
        except TargetError as exc:
            outcome = Outcome(code=ExitCode.USAGE, reason=one_line(str(exc)), node=settings.node_name)
            emit(outcome, settings.termination_log, out=out)
            return _fallback(settings, outcome, slot=None)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "target"
            reason = one_line(f"target {settings.target}: {where}: {first['msg']}")
            outcome = Outcome(code=ExitCode.USAGE, reason=reason, node=settings.node_name)
            slot = slot_of(target.name, settings.namespace)
            code = _fallback(settings, outcome, slot=slot)  # before emit: the report names it
            emit(outcome, settings.termination_log, out=out)
            return code
    try:
        outcome = run_validation(settings, defer_promotion=shadowed)
    except Exception as exc:  # a bug must not keep a node that has a last good version from serving
        logger.exception("validate_crashed")
        reason = one_line(f"internal error: {type(exc).__name__}: {exc}", secrets_of(settings))
        outcome = Outcome(code=ExitCode.INTERNAL, reason=reason, node=settings.node_name)
    if outcome.unpin is not None:  # the pod's swap validates and shadows it again, pinning it then
        outcome.unpin()
    if shadowed and outcome.code is ExitCode.PASSED:
        outcome.details["shadow"] = "not last good yet: the serving pod runs it beside its champion first"
    code = _fallback(settings, outcome, slot=settings.slot)
    emit(outcome, settings.termination_log, out=out)
    return code


def _shadow_waits(settings: ValidateSettings, target: ModelTarget) -> bool:
    """Whether a passed target must still shadow its champion, which this node's last good version is.

    The init container runs again when the pod is recreated (a reboot, an eviction): were it to
    mark the candidate last good, the pod would start on it and skip the shadow run. Left
    unmarked, the pod starts on the champion and its swap validates and shadows the target. A
    node without the champion cannot shadow it (nor could its pod), and promotes as before.
    """
    if target.shadow is None or target.champion is None or settings.slot is None:
        return False
    good = ModelCache(settings.cache_dir, keep=settings.cache_keep).last_good_of_slot(settings.slot)
    return good is not None and good.sha256 == target.champion.sha256


def _fallback(settings: ValidateSettings, outcome: Outcome, *, slot: str | None) -> ExitCode:
    """The exit code: the outcome's, or 0 when a failed target falls back to this node's last good."""
    if outcome.code is ExitCode.PASSED or not settings.fallback_last_good or slot is None:
        return outcome.code
    good = ModelCache(settings.cache_dir, keep=settings.cache_keep).last_good_of_slot(slot)
    if good is None:
        return outcome.code
    outcome.details["fallback"] = good.model_dump(mode="json")
    logger.warning(
        "validation_failed_serving_last_good",
        extra={"code": outcome.code.name, "version": good.version, "sha256": good.sha256},
    )
    return ExitCode.PASSED


def run_validation(
    settings: ValidateSettings,
    *,
    cache: ModelCache | None = None,
    serving: LoadedModel | None = None,
    defer_promotion: bool = False,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Validate the target of `settings` on this node; never raises for a model or data problem.

    `serving` is the model the pod answers with (the in-pod swap): when it is
    the champion the settings name, it is evaluated as it is, not loaded again.
    With `defer_promotion` a passed model is not yet marked last good: the
    caller does it (`Outcome.promote_later`) once a shadow run passed too, so a
    pod that restarts meanwhile never falls back to an unproven candidate.
    `cancel`, once set, stops a download in progress (`resolve`).
    """
    cache = cache or ModelCache(settings.cache_dir, keep=settings.cache_keep)
    outcome = Outcome(code=ExitCode.INTERNAL, node=settings.node_name)
    outcome.details["model_uri"] = redact_uri(settings.artifact_uri)
    policy = _policy(settings)
    outcome.details["policy"] = _policy_report(policy)
    started = time.perf_counter()
    pin: Callable[[], None] | None = None
    try:
        entry, card = resolve(settings, cache, outcome, cancel=cancel)
        outcome.timings["resolve"] = time.perf_counter() - started
        pin = _pin(cache, entry)  # another pod's eviction must not take it before it is promoted
        model = load_model(
            entry.artifact,
            card,
            accelerator=settings.accelerator,
            edgetpu_fallback=settings.edgetpu_fallback,
            expected_sha256=settings.expected_sha256,
            threads=settings.threads,
        )
        outcome.details["backend"] = model.backend.name
        outcome.timings["load"] = model.load_seconds
        read_started = time.perf_counter()
        raw = read_test_data(settings.test_data, max_mb=settings.max_test_data_mb)
        data = in_model_unit(raw, card, convert=settings.convert_units)
        outcome.details["test_data_unit"] = data.unit
        outcome.timings["test_data"] = time.perf_counter() - read_started
        outcome.evaluation = evaluate(model, data, batch_size=settings.batch_size)
        outcome.timings["evaluate"] = outcome.evaluation.seconds
        check_policy_labels(policy, card.labels, outcome.evaluation)
        rival = _champion(settings, cache, entry.sha256, serving, outcome)
        rival_figures = _evaluate_champion(rival, data, settings.batch_size, outcome)
        outcome.verdict = judge(
            figures_of(outcome.evaluation, card.version), rival_figures, policy, card.labels
        )
        check_verdict(outcome.verdict)
        promote = functools.partial(_promote, cache, entry, card, settings.node_name, settings.slot)
        if defer_promotion:
            outcome.promote_later, outcome.unpin, pin = promote, pin, None
        else:
            promote()
    except (InferenceError, VibrationCoreError) as exc:
        outcome.code = exit_code_for(exc)
        outcome.reason = one_line(str(exc), secrets_of(settings))
        outcome.details["failures"] = getattr(exc, "failures", [outcome.reason])
        logger.warning("validation_failed", extra={"code": outcome.code.name, "reason": outcome.reason})
    else:
        outcome.code = ExitCode.PASSED
        outcome.model = model
        logger.info(
            "validation_passed",
            extra={"model_id": card.model_id, "version": card.version, "sha256": entry.sha256},
        )
    finally:
        if pin is not None:  # not handed to the caller: its own run's eviction may drop it
            pin()
    outcome.timings["total"] = time.perf_counter() - started
    if outcome.card is not None:
        _evict(cache, outcome.card.model_id)
        # The slot's own: another namespace's VibrationModel of this model id may have promoted since.
        good = (
            cache.last_good_of_slot(settings.slot)
            if settings.slot
            else cache.last_good(outcome.card.model_id)
        )
        outcome.details["last_good"] = good.model_dump(mode="json") if good else None
    return outcome


def _evict(cache: ModelCache, model_id: str) -> None:
    # After every run, passed or not: failed digests must not fill the node's disk.
    try:
        cache.evict(model_id)
    except OSError as exc:
        logger.warning("cache_evict_failed", extra={"reason": exc.strerror or type(exc).__name__})


def _pin(cache: ModelCache, entry: CachedModel) -> Callable[[], None] | None:
    """Pin `entry` in the cache for this run; its release, or None where the cache cannot take a pin."""
    try:
        return cache.pin(entry).release
    except OSError as exc:  # a read-only cache: validate all the same, as before pins
        logger.warning("cache_pin_failed", extra={"sha256": entry.sha256, "reason": exc.strerror})
        return None


def _promote(
    cache: ModelCache, entry: CachedModel, card: ModelCard, node: str | None, slot: str | None
) -> None:
    # The registry's card wins over a cached copy for the same artifact; it is
    # written only now, after it passed, so a failed card never reaches the cache.
    cache.mark_good(entry, card, node=node, slot=slot)


def _policy(settings: ValidateSettings) -> Policy:
    return Policy(
        min_accuracy=settings.min_accuracy,
        min_macro_f1=settings.min_macro_f1,
        min_class_recall=dict(settings.min_class_recall),
        max_p99_ms=settings.max_p99_ms,
        max_regression_macro_f1=settings.max_regression_macro_f1,
        max_regression_class_recall=settings.max_regression_class_recall,
        max_regression_per_class=dict(settings.max_regression_per_class),
    )


def _policy_report(policy: Policy) -> dict[str, Any]:
    """The policy as the full report shows it, saying which floor applies where none was given."""
    report = dataclasses.asdict(policy)
    if policy.min_macro_f1 is None:
        report["min_macro_f1"] = "default floor: halfway from chance to 1 (0.625 for 4 classes)"
    report["min_class_recall_default"] = (
        "default floor: a quarter of the way from chance to 1 (0.4375 for 4 classes)"
    )
    return report


def _champion(
    settings: ValidateSettings,
    cache: ModelCache,
    candidate_sha256: str,
    serving: LoadedModel | None,
    outcome: Outcome,
) -> LoadedModel | None:
    """The champion to hold the candidate to: the served model, or its copy in the node cache."""
    wanted = settings.champion_sha256
    if wanted is None or wanted == candidate_sha256:
        return None
    if serving is not None and serving.sha256 == wanted:
        return serving
    entry = cache.find(wanted)
    if entry is None:
        # A node that never served the champion (new, or its cache was cleared) has nothing to compare.
        outcome.details["champion"] = f"{wanted[:12]} is not in this node's cache: no comparison"
        return None
    try:
        # The card it passed under on this node (a retry's may differ from the one its bytes came with).
        card = cache.card_of(entry, settings.champion_version, settings.slot) or entry.card()
        return load_model(
            entry.artifact,
            card,
            accelerator=settings.accelerator,
            edgetpu_fallback=settings.edgetpu_fallback,
            expected_sha256=wanted,
            threads=settings.threads,
        )
    except (InferenceError, VibrationCoreError) as exc:
        outcome.details["champion"] = f"{wanted[:12]} cannot be loaded ({exc}): no comparison"
        logger.warning("champion_unloadable", extra={"sha256": wanted, "reason": str(exc)})
        return None


def _evaluate_champion(
    champion: LoadedModel | None, data: TestData, batch_size: int, outcome: Outcome
) -> Figures | None:
    if champion is None:
        return None
    try:
        evaluation = evaluate(champion, data, batch_size=batch_size)
    except (InferenceError, VibrationCoreError) as exc:
        # The champion does not fit this test data (its labels, say): it cannot be a yardstick here.
        outcome.details["champion"] = f"{champion.card.version} cannot run on the test data ({exc})"
        return None
    outcome.details["champion"] = champion.card.version
    return figures_of(evaluation, champion.card.version)
