"""The kopf handlers: parse, observe, decide, apply. Thin; all logic is in the pure modules.

Handlers are registered by `build_registry` on a fresh registry, with the
intervals of the `OperatorSettings` it is given, so nothing happens at
import time and tests run the real handlers with their own settings. Every
handler has an explicit id. They return nothing, so kopf writes nothing into
``status``; its own bookkeeping (progress, the last handled spec, the
finalizer that stops the timers) lives in annotations and finalizers under
``edge.vibration.io``. One reconcile per VibrationModel at a time (a lock per
object), and always from a fresh read of the object: kopf's cached body may
predate our last status patch, and deciding from it would repeat events.
Errors are translated once, here: API errors are `kopf.TemporaryError`, an
unusable spec is `kopf.PermanentError`.

Longer than the others: it is every kopf registration in one place (the RBAC
test derives the operator's API calls from them); each handler only parses,
calls the pure modules and applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import kopf
from pydantic import ValidationError

from vibration_core.api import GROUP, PLURAL, VERSION
from vibration_core.spec import VibrationModelSpec
from vibration_core.status import VibrationModelStatus
from vibration_operator import names
from vibration_operator.apply import apply_decision, drift_events, patch_status, post_events
from vibration_operator.conditions import Event
from vibration_operator.drift_status import apply_drift, only_checked_at_moved
from vibration_operator.kube import VIBRATIONMODELS, KubeApi, KubeError, NotFoundError
from vibration_operator.observe import observe, read_reports, status_session
from vibration_operator.readers import with_outdated_pods
from vibration_operator.rollout import decide
from vibration_operator.schedule import CronError

if TYPE_CHECKING:
    import threading
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping

    import aiohttp

    from vibration_core.messages import ModelStatus
    from vibration_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

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


def parse_spec(body: Mapping[str, Any]) -> VibrationModelSpec:
    """The spec, or `kopf.PermanentError` with pydantic's message (the CRD should have refused it)."""
    try:
        return VibrationModelSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc


def parse_status(body: Mapping[str, Any]) -> VibrationModelStatus | None:
    """The status as last written; None when absent or unreadable (it is then rebuilt).

    Fields this build does not know are left out, not a reason to rebuild: another operator
    release (a `helm rollback`, with the CRD of the newer one) writes some. A rebuilt status
    takes the hall's active version from the nodes' ConfigMaps (`rollout.decide`).
    """
    raw = body.get("status")
    if not raw:
        return None
    try:
        return VibrationModelStatus.model_validate(raw)
    except ValidationError as exc:
        unknown = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
        problem = exc
    document = copy.deepcopy(dict(raw))  # copied only to drop fields: kopf's body is read-only
    if unknown and all(_drop(document, loc) for loc in unknown):
        try:
            status = VibrationModelStatus.model_validate(document)
        except ValidationError as exc:
            problem = exc
        else:
            fields = ", ".join(".".join(map(str, loc)) for loc in unknown)
            logger.info("status_fields_ignored", extra={"fields": fields})
            return status
    logger.warning("status_unreadable", extra={"error": str(problem).splitlines()[0]})
    return None


def _drop(document: dict[str, Any], loc: tuple[int | str, ...]) -> bool:
    """Remove the item at `loc` from the nested dicts and lists of `document`; whether it was there."""
    *path, last = loc
    node: object = document
    for key in path:
        node = _child(node, key)
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    return False


def _child(node: object, key: int | str) -> object:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None


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


async def in_turn(slots: asyncio.Semaphore, step: Callable[[], Awaitable[None]], busy: asyncio.Lock) -> None:
    """Start `step` once one of `slots` is free, and hold it until the step ends.

    Skipped when `busy` (its model's lock) is held once the turn comes: a step of that model
    runs already, and this one would only hold a turn to wait for it, then repeat its work.
    """
    async with slots:
        if busy.locked():
            return
        await step()


async def unless_stopped(step: Coroutine[Any, Any, None], stopped: kopf.DaemonStopped | None) -> None:
    """Run a timer's step, abandoning it when kopf stops the timer (a step is safe to cut short)."""
    if stopped is None:
        await step
        return
    task = asyncio.ensure_future(step)

    async def until_stopped() -> None:
        await stopped.wait()

    waiter = asyncio.ensure_future(until_stopped())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _owner(body: Mapping[str, Any]) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "VibrationModel" and ref.get("controller"):
            return str(ref.get("name"))
    return None


def configure_kopf(kopf_settings: kopf.OperatorSettings) -> None:
    """Set kopf's settings: standalone, quiet in events, bookkeeping in annotations, only our pods watched."""
    kopf_settings.peering.standalone = True  # one replica (Recreate): no peering objects or RBAC
    kopf_settings.scanning.disabled = True  # the chart installs the CRD first: no CRD/namespace watches
    kopf_settings.posting.level = logging.WARNING  # our transitions are the events, and ApplyFailed
    kopf_settings.persistence.finalizer = f"{names.DOMAIN}/timers"
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.DOMAIN)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=names.DOMAIN)
    kopf_settings.watching.label_selectors["v1", "pods"] = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
    kopf_settings.watching.server_timeout = 300  # re-list now and then: a lost watch heals itself
    kopf_settings.watching.connect_timeout = 10
    kopf_settings.networking.request_timeout = 30
    kopf_settings.background.instant_exit_timeout = 2.0  # timers abandon their step when stopped


def _namespace(namespace: str | None) -> str:
    if namespace is None:  # VibrationModels and pods are namespaced; kopf types it optional
        raise kopf.PermanentError("a namespaced object without a namespace")
    return namespace


def _register_activities(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    @kopf.on.startup(id="configure", registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        configure_kopf(settings)
        logger.info("operator_started", extra={"namespaces": rt.settings.watched_namespaces() or "all"})

    @kopf.on.login(id="login", registry=registry)
    async def login(settings: kopf.OperatorSettings, **_: object) -> kopf.ConnectionInfo:
        info = rt.credentials if rt.credentials is not None else await asyncio.to_thread(_login, settings)
        await rt.kube.use(info)
        return info

    @kopf.on.cleanup(id="close", registry=registry)
    async def close(**_: object) -> None:
        await rt.kube.close()
        if rt.http is not None:
            await rt.http.close()


def _register_models(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    tick, drift_tick = rt.settings.status_poll_interval_s, rt.settings.drift_interval_s
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.resume(*resource, id="reconcile", registry=registry)
    @kopf.on.create(*resource, id="reconcile", registry=registry)
    @kopf.on.update(*resource, id="reconcile", registry=registry)
    async def on_change(namespace: str | None, name: str, **_: object) -> None:
        await reconcile(rt, _namespace(namespace), name)

    @kopf.timer(*resource, id="rollout-tick", interval=tick, initial_delay=tick, registry=registry)
    async def rollout_tick(
        namespace: str | None, name: str, stopped: kopf.DaemonStopped | None = None, **_: object
    ) -> None:
        ns = _namespace(namespace)
        step = in_turn(rt.timer_slots, lambda: reconcile(rt, ns, name), rt.lock(ns, name))
        await unless_stopped(step, stopped)

    @kopf.timer(*resource, id="drift", interval=drift_tick, initial_delay=drift_tick, registry=registry)
    async def drift(
        namespace: str | None, name: str, stopped: kopf.DaemonStopped | None = None, **_: object
    ) -> None:
        ns = _namespace(namespace)
        step = in_turn(rt.timer_slots, lambda: check_drift(rt, ns, name), rt.lock(ns, name))
        await unless_stopped(step, stopped)


def _register_pods(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    ours = {names.LABEL_MANAGED_BY: names.MANAGED_BY}

    @kopf.on.event("v1", "pods", id="pod-event", labels=ours, registry=registry)
    async def pod_event(
        type: str | None,  # noqa: A002 - kopf passes the event type by this name
        body: Mapping[str, Any],
        namespace: str | None,
        **_: object,
    ) -> None:
        # An init container finished, a pod became Ready or went away: take the next step now
        # instead of at the next tick. Our own creations (ADDED) and the initial listing teach nothing.
        owner = _owner(body)
        if owner is None or namespace is None or type not in {"MODIFIED", "DELETED"}:
            return
        try:
            await reconcile(rt, namespace, owner)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            logger.info("pod_event_deferred", extra={"model": f"{namespace}/{owner}", "error": str(exc)})


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator, bound to `rt`."""
    registry = kopf.OperatorRegistry()
    _register_activities(registry, rt)
    _register_models(registry, rt)
    _register_pods(registry, rt)
    return registry


def _login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """In a cluster the service account, else the kubeconfig (via the official client's loader)."""
    info: kopf.ConnectionInfo | None = kopf.login_via_client(logger=logger, settings=settings)
    if info is None:
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
    if info is None:
        raise kopf.LoginError("neither a service account nor a kubeconfig is available")
    return info


async def run_operator(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    liveness_endpoint: str | None = None,
    credentials: kopf.ConnectionInfo | None = None,
) -> None:
    """Run the operator until `stop_flag` is set or a signal arrives.

    `credentials` replaces kopf's login (service account or kubeconfig): for tests and embedding.
    """
    kopf_settings = kopf.OperatorSettings()  # configured by the startup handler

    async def relogin() -> kopf.ConnectionInfo:
        return credentials if credentials is not None else await asyncio.to_thread(_login, kopf_settings)

    rt = Runtime(settings=settings, kube=KubeApi(relogin=relogin), credentials=credentials)
    namespaces = settings.watched_namespaces()
    await kopf.operator(
        registry=build_registry(rt),
        settings=kopf_settings,
        standalone=True,
        clusterwide=namespaces is None,
        namespaces=namespaces or [],
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        liveness_endpoint=liveness_endpoint,
    )
