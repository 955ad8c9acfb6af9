"""A Kubernetes API for the wiring tests: kmock's emulator on loopback, plus a fake kubelet.

`kmock_cluster` starts kmock's `KubernetesEmulator` on 127.0.0.1 with the
resources the operator and kopf discover (the VibrationModel kind from
`vibration_core.spec`, nodes, pods, ConfigMaps, events) and talks to it only
over HTTP, as kubectl would. kmock's gaps (no generation, no resourceVersion, no
CRD schema) are closed here where
the operator or kopf rely on the real behaviour, in `ApiServerLikeEmulator`:
``metadata.resourceVersion`` on every change (kopf's JSON patches test it;
without it every finalizer patch fails), a failed ``test`` op answered 422,
``metadata.generation`` set on create and bumped on spec changes only,
a patch of ``/status`` changing only ``status`` and a patch of the object
never changing ``status`` (for kinds with a status subresource), and a patch
that changes nothing producing no watch event. kmock also ignores label
selectors, which the operator's client applies itself. It crashes on
``GET /api/v1/namespaces``; kopf never sends it because the operator runs
with ``scanning.disabled``, so that needs no patch.

`FakeKubelet` plays the kubelet and the serving pods of the selected nodes:
it "starts" each serving pod (its init container validates the node's target
and writes a `CompactReport` termination message; the pod gets an IP and is
Ready) and serves each pod's ``GET /status`` from a real HTTP server on its
own loopback address (127.0.0.10, .11, ...) and the port of the pod spec, so
the operator's observer runs unchanged. A running pod swaps to a new target
from its ConfigMap the way the real serve container does: validate, then
serve it, or keep the last good version and report the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import aiohttp.web
import attrs
import jsonpatch
import kmock
import kopf

from vibration_core import spec as vm_spec
from vibration_core.messages import ModelStatus
from vibration_core.validation import CompactReport, ExitCode
from vibration_operator import names
from vibration_operator.handlers import run_operator
from vibration_operator.readers import read_target_configmap

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from vibration_core.target import ModelTarget
    from vibration_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)
VM_PATH = f"/apis/{vm_spec.GROUP}/{vm_spec.VERSION}"
ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
OURS = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"


def _resources() -> dict[str, kmock.ResourceInfo]:
    def info(kind: str, *, namespaced: bool, status: bool = False) -> kmock.ResourceInfo:
        subresources = {"status"} if status else set()
        return kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=ALL_VERBS, subresources=subresources
        )

    vibm = info(vm_spec.KIND, namespaced=True, status=True)
    vibm.singular, vibm.shortnames = vm_spec.SINGULAR, set(vm_spec.SHORT_NAMES)
    vibm.categories = set(vm_spec.CATEGORIES)
    return {
        f"{vm_spec.GROUP}/{vm_spec.VERSION}/{vm_spec.PLURAL}": vibm,
        "v1/nodes": info("Node", namespaced=False, status=True),
        "v1/pods": info("Pod", namespaced=True, status=True),
        "v1/configmaps": info("ConfigMap", namespaced=True),
        "v1/events": info("Event", namespaced=True),
        "v1/namespaces": info("Namespace", namespaced=False),
        "apiextensions.k8s.io/v1/customresourcedefinitions": info(
            "CustomResourceDefinition", namespaced=False
        ),
    }


STATUS_SUBRESOURCE = frozenset({vm_spec.PLURAL, "pods", "nodes"})
_REVISIONS = itertools.count(1)


def merge(obj: Any, patch: Any) -> Any:
    """RFC 7386: apply a JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(obj) if isinstance(obj, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def diff(old: Any, new: Any) -> dict[str, Any]:
    """RFC 7386: the merge patch from `old` to `new` (the form kmock applies)."""
    out: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            if sub := diff(old[key], value):
                out[key] = sub
        elif key not in old or old[key] != value:
            out[key] = value
    return out


@dataclass(frozen=True)
class Write:
    """A write request as the client sent it (kmock's log holds the rewritten one)."""

    method: str
    plural: str
    subresource: str | None
    data: Any
    at: float = field(default_factory=time.monotonic)
    """When it arrived (time.monotonic)."""


_VERBS = {
    kmock.action.FETCH: "get",
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.CREATE: "create",
    kmock.action.DELETE: "delete",
}


class ApiServerLikeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the API-server behaviour listed in the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writes: list[Write] = []
        self.calls: set[tuple[str, str, str, str]] = set()
        """(User-Agent, apiGroup, resource[/subresource], verb) of every resource request."""
        self._in_flight: set[int] = set()
        self._replaced: dict[int, int] = {}
        """id of a request being answered -> id of the copy `_replace` put in the log."""

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # kmock finds a request's reaction by scanning its whole request log with each
        # reaction's filter: quadratic over a test, minutes with 200 models. The tests keep
        # what they need in `writes` and `calls`, so the log holds only the requests still
        # being answered (kmock matches by identity, and watches stay in flight).
        self._in_flight.add(id(request))
        self._requests[:] = [seen for seen in self._requests if id(seen) in self._in_flight]
        try:
            return await self._answer(request)
        finally:
            self._in_flight.discard(id(request))
            self._in_flight.discard(self._replaced.pop(id(request), 0))

    async def _answer(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.resource.plural:
            self._log(request)
        if request.resource is not None and request.action == kmock.action.CREATE:
            request = self._replace(request, self._on_create(request))
        elif request.resource is not None and request.action == kmock.action.UPDATE and request.name:
            key = (request.resource, request.namespace, request.name)
            current = self.objects[key] if key in self.objects else None  # noqa: SIM401 - no .get
            if current is not None and not current.deleted:
                new = self._on_patch(request, dict(current.raw))
                if new is None:
                    return aiohttp.web.json_response(current.raw)
                request = self._replace(request, diff(current.raw, new))
        return await super()._handle(request)

    def _log(self, request: kmock.Request) -> None:
        assert request.resource is not None
        method = request.method.upper()
        verb = "patch" if method == "PATCH" else _VERBS.get(request.action) if request.action else None
        plural = (request.resource.plural or "") + (f"/{request.subresource}" if request.subresource else "")
        agent = request.headers.get("User-Agent", "")
        self.calls.add((agent, request.resource.group or "", plural, verb or method.lower()))
        if method in {"POST", "PATCH", "PUT", "DELETE"}:
            data = copy.deepcopy(request.data)
            self.writes.append(Write(method, request.resource.plural or "", request.subresource, data))

    def _replace(self, request: kmock.Request, data: Any) -> kmock.Request:
        """The request with other data, also in the log (kmock matches reactions by identity)."""
        new: kmock.Request = attrs.evolve(request, data=data)
        requests = self._requests
        requests[next(i for i, seen in enumerate(requests) if seen is request)] = new
        self._in_flight.add(id(new))
        self._replaced[id(request)] = id(new)
        return new

    @staticmethod
    def _on_create(request: kmock.Request) -> dict[str, Any]:
        data = copy.deepcopy(request.data or {})
        meta = data.setdefault("metadata", {})
        meta.update(resourceVersion=str(next(_REVISIONS)), generation=1)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if request.resource is not None and request.resource.plural in STATUS_SUBRESOURCE:
            data.pop("status", None)
        return data

    @staticmethod
    def _on_patch(request: kmock.Request, current: dict[str, Any]) -> dict[str, Any] | None:
        """The object after the patch, or None when nothing changes."""
        if isinstance(request.data, list):
            try:
                patched = jsonpatch.apply_patch(current, request.data)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc
        else:
            patched = merge(current, request.data or {})
        if request.subresource == "status":
            patched = {**current, "status": patched.get("status")}
        elif request.resource is not None and request.resource.plural in STATUS_SUBRESOURCE:
            patched = {**patched, "status": current.get("status")}
        patched = {key: value for key, value in patched.items() if value is not None}
        if patched == current:
            return None
        meta = patched["metadata"] = dict(patched.get("metadata") or {})
        if patched.get("spec") != current.get("spec"):
            meta["generation"] = int(meta.get("generation") or 1) + 1
        meta["resourceVersion"] = str(next(_REVISIONS))
        return patched


def ours(obj: dict[str, Any]) -> bool:
    """Whether the operator made `obj` (by its managed-by label)."""
    return bool(obj["metadata"].get("labels", {}).get(names.LABEL_MANAGED_BY) == names.MANAGED_BY)


class ApiError(Exception):
    """A non-2xx answer of the emulator."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:300]}")
        self.status = status


@dataclass
class KmockCluster:
    """The emulator, its URL, and an HTTP client for the test's own requests."""

    emulator: ApiServerLikeEmulator
    url: str
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: object = None) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as response:
            if response.status >= 300:
                raise ApiError(response.status, await response.text())
            return await response.json(content_type=None)

    async def add_node(self, name: str, labels: dict[str, str], *, ready: bool = True) -> None:
        """Register a node, then report its Ready condition through /status, as the kubelet does."""
        await self.call("POST", "/api/v1/nodes", {"metadata": {"name": name, "labels": labels}, "spec": {}})
        await self.set_node_ready(name, ready=ready)

    async def set_node_ready(self, name: str, *, ready: bool) -> None:
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        await self.call("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"conditions": [condition]}})

    async def apply_model(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """``kubectl apply``: create the VibrationModel, or merge-patch its spec."""
        meta = manifest["metadata"]
        path = f"{VM_PATH}/namespaces/{meta['namespace']}/{vm_spec.PLURAL}"
        try:
            await self.call("GET", f"{path}/{meta['name']}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            created: dict[str, Any] = await self.call("POST", path, manifest)
            return created
        patched: dict[str, Any] = await self.call(
            "PATCH", f"{path}/{meta['name']}", {"spec": manifest["spec"]}
        )
        return patched

    async def model(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.call(
            "GET", f"{VM_PATH}/namespaces/{namespace}/{vm_spec.PLURAL}/{name}"
        )
        return found

    async def items(self, path: str) -> list[dict[str, Any]]:
        found = await self.call("GET", path)
        return list(found.get("items") or [])

    async def pods(self, namespace: str) -> list[dict[str, Any]]:
        """Our serving pods (filtered here: kmock ignores labelSelector)."""
        pods = await self.items(f"/api/v1/namespaces/{namespace}/pods")
        return [pod for pod in pods if ours(pod)]

    async def configmaps(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Our target ConfigMaps by node."""
        cms = await self.items(f"/api/v1/namespaces/{namespace}/configmaps")
        return {cm["metadata"]["annotations"][names.ANNOTATION_NODE]: cm for cm in cms if ours(cm)}

    async def events(self, namespace: str) -> list[dict[str, Any]]:
        return await self.items(f"/api/v1/namespaces/{namespace}/events")

    def writes(self) -> list[Write]:
        """Every write request, as sent."""
        return list(self.emulator.writes)


@contextlib.asynccontextmanager
async def kmock_cluster() -> AsyncIterator[KmockCluster]:
    """kmock's Kubernetes emulator on a free loopback port, with our resources registered."""
    emulator = ApiServerLikeEmulator()
    for key, info in _resources().items():
        emulator.resources[key] = info
    async with emulator, kmock.Server(emulator) as server, aiohttp.ClientSession() as session:
        yield KmockCluster(emulator, str(server.url).rstrip("/"), session)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 90.0, what: str = "") -> None:
    """Poll `check` every 100 ms until it holds; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or check}")
        await asyncio.sleep(0.1)


def free_port(hosts: list[str]) -> int:
    """A TCP port free on every one of `hosts`."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


@dataclass
class FakeNode:
    """One node's serving pod as the operator sees it through /status, and its model cache."""

    name: str
    ip: str
    last_good: ModelTarget | None = None
    """The node-local cache: survives pod restarts, like the hostPath cache."""
    status: ModelStatus | None = None
    runner: aiohttp.web.AppRunner | None = None


@dataclass
class FakeKubelet:
    """Starts our pods on their nodes and answers their /status; see the module docstring."""

    cluster: KmockCluster
    namespace: str
    nodes: dict[str, FakeNode]
    port: int
    failing: set[tuple[str, str]] = field(default_factory=set)
    """(node, version) pairs whose validation fails."""
    drift: dict[str, dict[str, float]] = field(default_factory=dict)
    """Drift figures each node's pod reports; drifted when one is ``flagged.<test>`` (raiseAfter 1)."""
    paused: bool = False
    """Hold every pod where it is (a kubelet that does nothing)."""
    _task: asyncio.Task[None] | None = None

    @classmethod
    def for_nodes(cls, cluster: KmockCluster, namespace: str, node_names: list[str]) -> FakeKubelet:
        ips = {name: f"127.0.0.{10 + i}" for i, name in enumerate(node_names)}
        port = free_port(list(ips.values()))
        nodes = {name: FakeNode(name, ip) for name, ip in ips.items()}
        return cls(cluster, namespace, nodes, port)

    def _report(self, node: str, target: ModelTarget) -> CompactReport:
        if (node, target.version) in self.failing:
            return CompactReport(
                outcome="failed", code=int(ExitCode.BELOW_THRESHOLD), reason="accuracy 0.41 < 0.93",
                version=target.version, sha256=target.sha256, node=node, samples=400, accuracy=0.41,
            )  # fmt: skip
        return CompactReport(
            outcome="passed", code=0, version=target.version, sha256=target.sha256, node=node,
            samples=400, accuracy=0.962, macro_f1=0.95, p50_ms=0.1, p99_ms=0.4,
        )  # fmt: skip

    def _model_status(self, node: FakeNode, **candidate: Any) -> ModelStatus:
        good = node.last_good
        return ModelStatus(
            node=node.name, model_id="spindle-classifier" if good else None,
            version=good.version if good else None, sha256=good.sha256 if good else None,
            state="serving" if good else "no_model", ready=good is not None, windows_total=0, errors_total=0,
            updated_ns=time.time_ns(), **candidate,
        )  # fmt: skip

    async def _serve(self, node: FakeNode) -> None:
        async def status(_: aiohttp.web.Request) -> aiohttp.web.Response:
            if node.status is None:
                return aiohttp.web.Response(status=503)
            figures = self.drift.get(node.name, {})
            drifted = any(name.startswith("flagged.") and value == 1.0 for name, value in figures.items())
            fresh = node.status.model_copy(update={"drift": figures, "drifted": drifted})
            return aiohttp.web.Response(body=fresh.encode(), content_type="application/json")

        app = aiohttp.web.Application()
        app.router.add_get("/status", status)
        node.runner = aiohttp.web.AppRunner(app, access_log=None)
        await node.runner.setup()
        await aiohttp.web.TCPSite(node.runner, node.ip, self.port).start()

    async def _stop(self, node: FakeNode) -> None:
        if node.runner is not None:
            await node.runner.cleanup()
        node.runner, node.status = None, None

    async def _boot(self, node: FakeNode, pod: dict[str, Any], target: ModelTarget) -> None:
        """The init container validates the target; the pod serves it or the cached last good."""
        report = self._report(node.name, target)
        if report.outcome == "passed":
            node.last_good = target
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod['metadata']['name']}/status"
        terminated = {"exitCode": 0, "reason": "Completed", "message": report.encode().decode()}
        if node.last_good is None:  # nothing to fall back to: the init container fails and restarts
            terminated |= {"exitCode": report.code, "reason": "Error"}
            waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
            init = {"name": "validate", "state": waiting, "lastState": {"terminated": terminated}}
            status = {"phase": "Pending", "initContainerStatuses": [init]}
            await self.cluster.call("PATCH", path, {"status": status})
            return
        node.status = self._model_status(node)
        await self._serve(node)
        init = {"name": "validate", "state": {"terminated": terminated}}
        ready = [{"type": "Ready", "status": "True"}]
        status = {"phase": "Running", "podIP": node.ip, "initContainerStatuses": [init], "conditions": ready}
        await self.cluster.call("PATCH", path, {"status": status})

    def _swap(self, node: FakeNode, target: ModelTarget) -> None:
        """The serve container validates a new target in place and swaps, or keeps the old model."""
        report = self._report(node.name, target)
        if report.outcome == "passed":
            node.last_good = target
        state = "passed" if report.outcome == "passed" else "failed"
        node.status = self._model_status(
            node, candidate_version=target.version, candidate_sha256=target.sha256,
            candidate_state=state, candidate_report=report,
        )  # fmt: skip

    async def step(self) -> None:
        """One pass of the kubelet over our pods."""
        pods = await self.cluster.pods(self.namespace)
        by_node = {pod["metadata"]["annotations"][names.ANNOTATION_NODE]: pod for pod in pods}
        configmaps = await self.cluster.configmaps(self.namespace)
        for name, node in self.nodes.items():
            pod = by_node.get(name)
            # A pod without init container statuses is new (maybe with an old one's name): boot it.
            booted = pod is not None and bool((pod.get("status") or {}).get("initContainerStatuses"))
            if not booted:
                await self._stop(node)
            if pod is None:
                continue
            target, _ = read_target_configmap(configmaps.get(name))
            if target is None:
                continue  # a pod whose ConfigMap is missing cannot start (its volume cannot mount)
            if not booted:
                await self._boot(node, pod, target)
            elif node.status is not None and node.status.sha256 != target.sha256:
                tried = node.status.candidate_sha256
                if tried != target.sha256:
                    self._swap(node, target)

    async def _loop(self) -> None:
        while True:
            if not self.paused:
                try:
                    await self.step()
                except (ApiError, aiohttp.ClientError, OSError) as exc:  # a kubelet retries, and so do we
                    logger.warning("fake_kubelet_step_failed: %r", exc)
            await asyncio.sleep(0.2)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for node in self.nodes.values():
            await self._stop(node)


@contextlib.asynccontextmanager
async def running_operator(cluster: KmockCluster, settings: OperatorSettings) -> AsyncIterator[None]:
    """The real operator (kopf and our handlers), logged in to the emulator, in a thread of its own.

    Its own thread and event loop, as if it were its own process: kopf installs no signal handlers
    outside the main thread, and neither side's loop can stall the other's.
    """
    stop, ready = threading.Event(), threading.Event()
    login = kopf.ConnectionInfo(server=cluster.url)
    failures: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(run_operator(settings, stop_flag=stop, ready_flag=ready, credentials=login))
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            failures.append(exc)

    thread = threading.Thread(target=main, name="operator", daemon=True)
    thread.start()
    started = await asyncio.to_thread(ready.wait, 60)
    try:
        if not started or failures:
            raise AssertionError(f"the operator did not start: {failures}")
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 60)
    if thread.is_alive():
        raise AssertionError("the operator did not stop within 60 s")
    if failures:
        raise failures[0]


def verbs_used(cluster: KmockCluster) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of every API call the operator and kopf made.

    Discovery (/api, /apis/...) is left out: every authenticated user may read it.
    The test's own requests and the fake kubelet's are told apart by their User-Agent.
    """
    return {
        (group, resource, verb)
        for agent, group, resource, verb in cluster.emulator.calls
        if agent.startswith(("vibration-operator", "kopf/"))
    }


def uncovered(
    used: set[tuple[str, str, str]], rules: tuple[dict[str, list[str]], ...]
) -> set[tuple[str, str, str]]:
    """The calls in `used` that no rule allows."""
    return {
        (group, resource, verb)
        for group, resource, verb in used
        if not any(
            group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
            for rule in rules
        )
    }
