"""The kopf handlers: every registration of the operator, its kopf settings and its login.

Handlers are registered by `build_registry` on a fresh registry, with the
intervals of the `OperatorSettings` it is given, so nothing happens at
import time and tests run the real handlers with their own settings. Every
handler has an explicit id. They return nothing, so kopf writes nothing into
``status``; its own bookkeeping (progress, the last handled spec, the
finalizer that stops the timers) lives in annotations and finalizers under
``edge.vibration.io``. Each handler runs one step of `vibration_operator.steps`
(the RBAC test derives the operator's API calls from these registrations); the
timers take turns for theirs (`in_turn`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import kopf

from vibration_core.api import GROUP, PLURAL, VERSION
from vibration_operator import names
from vibration_operator.kube import KubeApi
from vibration_operator.steps import Runtime, check_drift, reconcile

if TYPE_CHECKING:
    import threading
    from collections.abc import Awaitable, Callable, Coroutine, Mapping

    from vibration_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


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
