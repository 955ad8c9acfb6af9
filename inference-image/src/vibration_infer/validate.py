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

The outcome goes three ways: a full JSON report on stdout, a compact one
(under 4 KiB) in the termination-message file that the operator reads from
the pod status, and the exit code, one per failure class
(`vibration_infer.errors.exit_code_for`). The serving loop's hot swap calls
`run_validation` and keeps the returned `LoadedModel`, so the model it swaps
in is the very session that passed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO

from pydantic import ValidationError

from vibration_core.errors import TargetError, VibrationCoreError
from vibration_core.gate import REASONS, Check, Figures, Policy, ReasonCode, Verdict, judge
from vibration_core.modelcard import CARD_FILENAME, ModelCard
from vibration_core.target import load_target
from vibration_core.validation import MAX_CHECKS, REASON_OF_EXIT, CompactReport, ExitCode
from vibration_infer.cache import ModelCache, artifact_filename
from vibration_infer.errors import DigestMismatchError, FetchError, InferenceError, exit_code_for
from vibration_infer.evaluate import (
    check_policy_labels,
    check_verdict,
    evaluate,
    figures_of,
    in_model_unit,
    read_test_data,
)
from vibration_infer.fetch import FetchOptions, fetch, redact_uri, sibling_uri
from vibration_infer.loader import LoadedModel, load_model

if TYPE_CHECKING:
    from collections.abc import Callable

    from vibration_core.gate import ShadowResult
    from vibration_infer.cache import CachedModel
    from vibration_infer.evaluate import Evaluation, TestData
    from vibration_infer.settings import ValidateSettings

logger = logging.getLogger(__name__)

DEFAULT_TERMINATION_LOG: Final = Path("/dev/termination-log")
"""Kubernetes' default terminationMessagePath, which the operator's pods use."""
_CARD_MAX_BYTES = 1 << 20
_REASON_MAX = 600  # CompactReport.reason's limit


@dataclass
class Outcome:
    """The result of one validation: what `validate` prints, writes and returns."""

    code: ExitCode
    reason: str = ""
    node: str | None = None
    card: ModelCard | None = None
    sha256: str | None = None
    source: Literal["cache", "registry"] | None = None
    """``cache`` (no download) or ``registry``."""
    model: LoadedModel | None = None
    """The loaded model, set only when it passed."""
    evaluation: Evaluation | None = None
    verdict: Verdict | None = None
    """The gate's verdict, once the candidate (and the champion) ran on the test data."""
    shadow: ShadowResult | None = None
    """What the candidate did beside the champion on live windows (the in-pod swap only)."""
    promote_later: Callable[[], None] | None = None
    """Marks the model last good: set instead of done when the caller deferred it (a shadow run)."""
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def compact(self) -> CompactReport:
        """The termination-message report."""
        card, figures = self.card, self.evaluation
        return CompactReport(
            outcome="passed" if self.code is ExitCode.PASSED else "failed",
            code=int(self.code),
            reason=self.reason,
            model_id=card.model_id if card else None,
            version=card.version if card else None,
            sha256=self.sha256,
            node=self.node,
            samples=figures.samples if figures else None,
            accuracy=round(figures.accuracy, 4) if figures else None,
            macro_f1=round(figures.macro_f1, 4) if figures else None,
            class_recall={k: round(v, 4) for k, v in figures.class_recall.items()} if figures else {},
            p50_ms=round(figures.p50_ms, 4) if figures else None,
            p99_ms=round(figures.p99_ms, 4) if figures else None,
            source=self.source,
            reason_code=self.reason_code,
            champion=_rounded(self.verdict.champion) if self.verdict and self.verdict.champion else None,
            checks=[_rounded_check(c) for c in self.checks()[:MAX_CHECKS]],
            shadow_windows=self.shadow.windows if self.shadow else None,
            agreement=round(self.shadow.agreement, 4) if self.shadow else None,
            disagreements=dict(self.shadow.disagreements) if self.shadow else {},
        )

    def checks(self) -> list[Check]:
        """The gate's checks: on the test data, then (after a shadow run) on live windows."""
        on_data = list(self.verdict.checks) if self.verdict else []
        return on_data + (list(self.shadow.checks) if self.shadow else [])

    @property
    def reason_code(self) -> ReasonCode:
        """The gate's reason code: the verdict's for a model that ran, else the exit code's."""
        if self.shadow is not None and not self.shadow.passed:
            return "ShadowDisagreed"
        if self.verdict is not None and self.code in {ExitCode.PASSED, ExitCode.BELOW_THRESHOLD}:
            return self.verdict.reason
        return REASON_OF_EXIT[self.code]

    def report(self) -> dict[str, Any]:
        """The full JSON report."""
        card = self.card
        return {
            "outcome": "passed" if self.code is ExitCode.PASSED else "failed",
            "code": int(self.code),
            "code_name": self.code.name,
            "reason": self.reason,
            "node": self.node,
            "model": None
            if card is None
            else {
                "model_id": card.model_id,
                "version": card.version,
                "format": card.format,
                "sha256": self.sha256,
            },
            "source": self.source,
            "backend": self.model.backend.name if self.model else self.details.get("backend"),
            "evaluation": dataclasses.asdict(self.evaluation) if self.evaluation else None,
            "gate": None
            if self.verdict is None
            else {
                "reason_code": self.reason_code,
                "meaning": REASONS[self.reason_code],
                "champion": self.verdict.champion.model_dump() if self.verdict.champion else None,
                "checks": [check.model_dump() for check in self.verdict.checks],
            },
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            **self.details,
        }


def validate(settings: ValidateSettings, *, out: TextIO | None = None) -> ExitCode:
    """Run a validation, print the full report, write the compact one; return the exit code."""
    if settings.target is not None:
        try:
            settings = settings.for_target(load_target(settings.target))
        except TargetError as exc:
            outcome = Outcome(code=ExitCode.USAGE, reason=one_line(str(exc)), node=settings.node_name)
            emit(outcome, settings.termination_log, out=out)
            return _fallback(settings, outcome, slot=None)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "target"
            reason = one_line(f"target {settings.target}: {where}: {first['msg']}")
            outcome = Outcome(code=ExitCode.USAGE, reason=reason, node=settings.node_name)
            emit(outcome, settings.termination_log, out=out)
            return outcome.code
    outcome = run_validation(settings)
    code = _fallback(settings, outcome, slot=settings.slot)
    emit(outcome, settings.termination_log, out=out)
    return code


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


def termination_path(given: Path | None) -> Path | None:
    """Where the compact report goes: the path given, else Kubernetes' file if it is there.

    The kubelet mounts ``/dev/termination-log`` into every container, so the
    file exists exactly where someone reads it; a run on a laptop or in CI
    writes nothing under ``/dev``.
    """
    if given is not None:
        return given
    return DEFAULT_TERMINATION_LOG if DEFAULT_TERMINATION_LOG.is_file() else None


def emit(outcome: Outcome, termination_log: Path | None, *, out: TextIO | None = None) -> None:
    """Print the full report and write the compact one (a failed write is logged, not fatal)."""
    out = out or sys.stdout  # looked up now: a test or an embedding program may have replaced it
    out.write(json.dumps(outcome.report(), indent=2, default=str) + "\n")
    out.flush()
    termination_log = termination_path(termination_log)
    if termination_log is None:
        return
    data = outcome.compact().encode()
    try:
        termination_log.write_bytes(data)
    except OSError as exc:
        logger.warning(
            "termination_log_unwritable",
            extra={"path": termination_log, "reason": exc.strerror or type(exc).__name__},
        )


def run_validation(
    settings: ValidateSettings,
    *,
    cache: ModelCache | None = None,
    serving: LoadedModel | None = None,
    defer_promotion: bool = False,
) -> Outcome:
    """Validate the target of `settings` on this node; never raises for a model or data problem.

    `serving` is the model the pod answers with (the in-pod swap): when it is
    the champion the settings name, it is evaluated as it is, not loaded again.
    With `defer_promotion` a passed model is not yet marked last good: the
    caller does it (`Outcome.promote_later`) once a shadow run passed too, so a
    pod that restarts meanwhile never falls back to an unproven candidate.
    """
    cache = cache or ModelCache(settings.cache_dir, keep=settings.cache_keep)
    outcome = Outcome(code=ExitCode.INTERNAL, node=settings.node_name)
    outcome.details["model_uri"] = redact_uri(settings.artifact_uri)
    policy = _policy(settings)
    outcome.details["policy"] = _policy_report(policy)
    started = time.perf_counter()
    try:
        entry, card = _resolve(settings, cache, outcome)
        outcome.timings["resolve"] = time.perf_counter() - started
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
        data = in_model_unit(read_test_data(settings.test_data), card, convert=settings.convert_units)
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
            outcome.promote_later = promote
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
    outcome.timings["total"] = time.perf_counter() - started
    if outcome.card is not None:
        # Evicted after every run, passed or not: failed digests must not fill the node's disk.
        try:
            cache.evict(outcome.card.model_id)
        except OSError as exc:
            logger.warning("cache_evict_failed", extra={"reason": exc.strerror or type(exc).__name__})
        good = cache.last_good(outcome.card.model_id)
        outcome.details["last_good"] = good.model_dump(mode="json") if good else None
    return outcome


def _resolve(
    settings: ValidateSettings, cache: ModelCache, outcome: Outcome
) -> tuple[CachedModel, ModelCard]:
    """The target's cache entry and card: from the cache when its digest is known and present."""
    expected = settings.expected_sha256
    if expected is not None and (hit := cache.find(expected)) is not None:
        return _found(hit, hit.card(), "cache", outcome)
    access, secret = settings.s3_credentials()
    options = FetchOptions(
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        s3_endpoint=settings.s3_endpoint,
        s3_region=settings.s3_region,
        access_key=access,
        secret_key=secret,
        ca_file=settings.ca_file,
    )
    try:
        with cache.staging() as staged:
            return _download(settings, options, cache, staged, outcome)
    except OSError as exc:
        detail = (
            f"cache dir {settings.cache_dir} is unusable ({exc.strerror or type(exc).__name__}); "
            f"it must be a directory writable by uid {os.getuid()} (on a node: the hostPath "
            "serving.cacheHostPath, created by the node's administrator)"
        )
        raise FetchError(redact_uri(settings.artifact_uri), detail) from None


def _download(
    settings: ValidateSettings, options: FetchOptions, cache: ModelCache, staged: Path, outcome: Outcome
) -> tuple[CachedModel, ModelCard]:
    """Fetch the card, then (unless its digest is cached) the artifact, into the cache."""
    expected = settings.expected_sha256
    card_uri = settings.card_uri or sibling_uri(settings.artifact_uri, CARD_FILENAME)
    fetch(card_uri, staged / CARD_FILENAME, dataclasses.replace(options, max_bytes=_CARD_MAX_BYTES))
    card = ModelCard.load(staged / CARD_FILENAME)
    outcome.card = card
    if expected is not None and card.artifact.sha256 != expected:
        where = f"{redact_uri(settings.artifact_uri)} (as named by its model card)"
        raise DigestMismatchError(where, expected, card.artifact.sha256)
    if (hit := cache.find(card.artifact.sha256)) is not None:
        return _found(hit, card, "cache", outcome)
    max_bytes = int(settings.max_artifact_mb * (1 << 20))
    fetched = fetch(
        settings.artifact_uri,
        staged / artifact_filename(card),
        dataclasses.replace(options, max_bytes=max_bytes),
    )
    if fetched.sha256 != card.artifact.sha256:
        raise DigestMismatchError(redact_uri(settings.artifact_uri), card.artifact.sha256, fetched.sha256)
    return _found(cache.store(staged, card), card, "registry", outcome)


def _found(
    entry: CachedModel, card: ModelCard, source: Literal["cache", "registry"], outcome: Outcome
) -> tuple[CachedModel, ModelCard]:
    outcome.card, outcome.sha256, outcome.source = card, entry.sha256, source
    logger.info(
        "model_resolved",
        extra={"model_id": card.model_id, "version": card.version, "sha256": entry.sha256, "source": source},
    )
    return entry, card


def _promote(
    cache: ModelCache, entry: CachedModel, card: ModelCard, node: str | None, slot: str | None
) -> None:
    # The registry's card wins over a cached copy for the same artifact; it is
    # written only now, after it passed, so a failed card never reaches the cache.
    if entry.card() != card:
        card.save(entry.card_path)
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
        return load_model(
            entry.artifact,
            entry.card(),
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


def _rounded(figures: Figures) -> Figures:
    return figures.model_copy(
        update={
            "accuracy": round(figures.accuracy, 4),
            "macro_f1": round(figures.macro_f1, 4),
            "class_recall": {k: round(v, 4) for k, v in figures.class_recall.items()},
            "p99_ms": None if figures.p99_ms is None else round(figures.p99_ms, 4),
        }
    )


def _rounded_check(check: Check) -> Check:
    return check.model_copy(update={"value": round(check.value, 4), "threshold": round(check.threshold, 4)})


def secrets_of(settings: ValidateSettings) -> tuple[str, ...]:
    """Credential values to blank out of a reason, as far as they can be read."""
    try:
        values = settings.s3_credentials()
    except InferenceError:
        values = (None, None)
    return tuple(v for v in values if v)


def one_line(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A single line of at most 600 characters, with any credential value blanked."""
    for secret in secrets:
        text = text.replace(secret, "***")
    line = " ".join(text.split())
    return line if len(line) <= _REASON_MAX else line[: _REASON_MAX - 3] + "..."
