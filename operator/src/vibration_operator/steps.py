"""One step of a VibrationModel, as the kopf handlers run it: a reconcile or a drift check.

A reconcile reads, observes, decides and applies; a drift check reads the serving pods' drift
figures into the status. One step per VibrationModel at a time (a lock per object, in the
`Runtime` the handlers share), and always from a fresh read of the object: kopf's cached body
may predate our last status patch, and deciding from it would repeat events. Errors are
translated once, here (`boundary`): API errors are `kopf.TemporaryError`, a schedule that cannot
be read is `kopf.PermanentError`; an unusable spec already is one when it is parsed
(`vibration_operator.parse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import kopf

from vibration_operator.apply import apply_decision, drift_events, patch_status, post_events
from vibration_operator.conditions import Event
from vibration_operator.drift_status import apply_drift, only_checked_at_moved
from vibration_operator.kube import VIBRATIONMODELS, KubeError, NotFoundError
from vibration_operator.observe import observe, read_reports, status_session
from vibration_operator.parse import parse_spec, parse_status
from vibration_operator.readers import with_outdated_pods
from vibration_operator.rollout import decide
from vibration_operator.schedule import CronError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    import aiohttp

    from vibration_core.messages import ModelStatus
    from vibration_operator.kube import KubeApi
    from vibration_operator.settings import OperatorSettings

logger = logging.getLogger("vibration_operator.handlers")  # its events kept their logger when they moved

_RETRY_SOON_S = 5.0
_RETRY_LATER_S = 30.0


@dataclass
class Runtime:
    """What the handlers share: settings, the API client, the /status session, per-object locks."""

    settings: OperatorSettings
    kube: KubeApi
    credentials: kopf.ConnectionInfo | None = None
    """Fixed credentials (tests, embedding); None: kopf's login, in a cluster or from a kubeconfig."""
    http: aiohttp.ClientSession | None = None
    locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )
    refused: dict[tuple[str, str], str] = field(default_factory=dict)
    """The API server's last refusal of each VibrationModel's step, said once as an event."""
    timer_slots: asyncio.Semaphore = field(init=False)
    """Turns for the timers' steps: `settings.timer_steps` at once; the others wait theirs.

    Models applied together tick together. With 200 of them (make bench, on kmock) a tick round
    kept the API busy for seconds, and a new model's first reconcile waited 5 s (median) to 21 s
    behind it: every step of every reconcile takes its turn on the one event loop and at the API
    server. Taking turns, the timers hold at most this many steps in flight, so a change (create,
    update, resume: it never waits for a turn) competes with a few steps, not with every model's:
    0.9 s median, 1.1 s at most with 4 turns in the same bench (2: 0.6 s; 8: 1.0 s). A round
    takes about models x step / turns: when steps are slow (a node down: each /status read
    waits its 1 s timeout) the ticks fall behind, not the changes.
    """

    def __post_init__(self) -> None:
        """The timers' turns, from the settings."""
        self.timer_slots = asyncio.Semaphore(self.settings.timer_steps)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """The lock of one VibrationModel (kept while anyone holds or waits for it)."""
        key = (namespace, name)
        found = self.locks.get(key)
        if found is None:
            found = self.locks[key] = asyncio.Lock()
        return found

    def session(self) -> aiohttp.ClientSession:
        """The /status session, opened on first use (inside the operator's event loop)."""
        if self.http is None or self.http.closed:
            self.http = status_session()
        return self.http


@contextlib.asynccontextmanager
async def boundary(namespace: str, name: str) -> AsyncIterator[None]:
    """Translate the errors of one step for kopf."""
    try:
        yield
    except KubeError as exc:
        delay = _RETRY_SOON_S if exc.retryable else _RETRY_LATER_S
        logger.warning(
            "api_error", extra={"model": f"{namespace}/{name}", "status": exc.status, "error": str(exc)}
        )
        raise kopf.TemporaryError(str(exc), delay=delay) from exc
    except CronError as exc:
        raise kopf.PermanentError(str(exc)) from exc


async def _fresh(rt: Runtime, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        vm = await rt.kube.get(VIBRATIONMODELS, namespace, name)
    except NotFoundError:
        return None
    return None if (vm.get("metadata") or {}).get("deletionTimestamp") else vm


async def reconcile(rt: Runtime, namespace: str, name: str) -> None:
    """One rollout step for a VibrationModel: read, observe, decide, apply."""
    async with rt.lock(namespace, name), boundary(namespace, name):
        vm = await _fresh(rt, namespace, name)
        if vm is None:
            rt.refused.pop((namespace, name), None)  # a refusal it met goes with it
            return  # deleted: the pods and ConfigMaps go with it (ownerReferences)
        spec = parse_spec(vm)
        generation = int(vm["metadata"].get("generation") or 0)
        try:  # a refusal reading the cluster (RBAC: list nodes) is said on the object as one writing it
            observed = await observe(
                rt.kube,
                rt.session(),
                namespace=namespace,
                vm_name=name,
                spec=spec,
                http_port=rt.settings.http_port,
            )
            now = datetime.now(UTC)
            nodes = with_outdated_pods(
                observed.nodes, observed.pods, name, namespace, vm["metadata"]["uid"], spec, rt.settings
            )
            decision = decide(
                name, spec, generation, parse_status(vm), nodes, now, unavailable=observed.unavailable
            )
            applied = await apply_decision(
                rt.kube, vm=vm, spec=spec, decision=decision, observed=observed, settings=rt.settings, now=now
            )
        except KubeError as exc:
            await _say_refused(rt, vm, exc, datetime.now(UTC))
            raise
        rt.refused.pop((namespace, name), None)
        if applied.changed:
            logger.info(
                "reconciled",
                extra={
                    "model": f"{namespace}/{name}",
                    "phase": decision.status.phase,
                    "ready_nodes": decision.status.ready_nodes,
                    "pods_created": applied.pods_created,
                    "pods_deleted": applied.pods_deleted,
                    "pods_adopted": applied.pods_adopted,
                    "configmaps": applied.configmaps,
                    "events": applied.events,
                },
            )


async def _say_refused(rt: Runtime, vm: Mapping[str, Any], exc: KubeError, now: datetime) -> None:
    """A Warning event `ApplyFailed` with the API server's words, once per refusal while it lasts.

    A refusal that will not pass by itself (403 from PodSecurity or RBAC, a ResourceQuota, 422)
    stops the rollout on every step; the operator's log alone would leave `kubectl describe`
    and `kubectl get` showing a rollout in progress.
    """
    if exc.retryable or isinstance(exc, NotFoundError):  # a 404: gone since observed, the next step mends it
        return
    key, message = (vm["metadata"]["namespace"], vm["metadata"]["name"]), str(exc)[:1024]
    if rt.refused.get(key) == message:
        return
    rt.refused[key] = message
    await post_events(rt.kube, vm, [Event("Warning", "ApplyFailed", message)], now)


async def check_drift(rt: Runtime, namespace: str, name: str) -> None:
    """Read the serving pods' drift figures into ``status.drift`` and the Drifted condition."""
    async with rt.lock(namespace, name), boundary(namespace, name):
        vm = await _fresh(rt, namespace, name)
        status = parse_status(vm) if vm is not None else None
        if vm is None or status is None:
            return  # the first reconcile has not written a status yet
        spec = parse_spec(vm)
        reports: dict[str, ModelStatus] = {}
        unanswered: set[str] = set()
        if spec.drift.enabled:
            reports, unanswered = await read_reports(
                rt.kube, rt.session(), namespace, name, rt.settings.http_port
            )
        now = datetime.now(UTC)
        new = apply_drift(status, reports, spec.drift, now, unanswered=unanswered)
        if only_checked_at_moved(status, new, now):
            return  # nothing to say: 200 quiet models were 3 status writes a second
        if await patch_status(rt.kube, vm, new.model_dump(by_alias=True, exclude_none=True, mode="json")):
            await post_events(rt.kube, vm, drift_events(status, new), now)
            drift = new.drift
            logger.info(
                "drift_checked",
                extra={"model": f"{namespace}/{name}", "drifted": bool(drift and drift.drifted)},
            )
