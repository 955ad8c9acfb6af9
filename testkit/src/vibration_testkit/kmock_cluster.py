"""A Kubernetes API for the wiring tests: kmock's emulator on loopback, closer to a real API server.

`kmock_cluster` starts kmock's `KubernetesEmulator` on 127.0.0.1 with the
resources the operator and kopf discover (the VibrationModel kind from
`vibration_core.api`, nodes, pods, ConfigMaps, events) and talks to it only
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

The kubelet and the operator in a thread are `vibration_testkit.fake_kubelet`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import aiohttp.web
import attrs
import jsonpatch
import kmock

from vibration_core import api as vm_api
from vibration_operator import names

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable


logger = logging.getLogger(__name__)
VM_PATH = f"/apis/{vm_api.GROUP}/{vm_api.VERSION}"
ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
OURS = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"


def _resources() -> dict[str, kmock.ResourceInfo]:
    def info(kind: str, *, namespaced: bool, status: bool = False) -> kmock.ResourceInfo:
        subresources = {"status"} if status else set()
        return kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=ALL_VERBS, subresources=subresources
        )

    vibm = info(vm_api.KIND, namespaced=True, status=True)
    vibm.singular, vibm.shortnames = vm_api.SINGULAR, set(vm_api.SHORT_NAMES)
    vibm.categories = set(vm_api.CATEGORIES)
    return {
        f"{vm_api.GROUP}/{vm_api.VERSION}/{vm_api.PLURAL}": vibm,
        "v1/nodes": info("Node", namespaced=False, status=True),
        "v1/pods": info("Pod", namespaced=True, status=True),
        "v1/configmaps": info("ConfigMap", namespaced=True),
        "v1/events": info("Event", namespaced=True),
        "v1/namespaces": info("Namespace", namespaced=False),
        "apiextensions.k8s.io/v1/customresourcedefinitions": info(
            "CustomResourceDefinition", namespaced=False
        ),
    }


STATUS_SUBRESOURCE = frozenset({vm_api.PLURAL, "pods", "nodes"})
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
        self.refusals: dict[tuple[str, str], tuple[int, str]] = {}
        """(method, plural) -> (status, message) the API server answers such requests with,
        as an admission controller (PodSecurity, a ResourceQuota) would."""

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
            refusal = self.refusals.get((request.method.upper(), request.resource.plural))
            if refusal is not None:
                code, message = refusal
                status = {"kind": "Status", "status": "Failure", "message": message, "code": code}
                return aiohttp.web.json_response(status, status=code)
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
        """One request as a client would send it (PATCH as a merge patch); the JSON answer, or `ApiError`."""
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
        """Report the node's Ready condition through /status, as its kubelet does."""
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        await self.call("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"conditions": [condition]}})

    async def apply_model(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """``kubectl apply``: create the VibrationModel, or merge-patch its spec."""
        meta = manifest["metadata"]
        path = f"{VM_PATH}/namespaces/{meta['namespace']}/{vm_api.PLURAL}"
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
        """The VibrationModel as the emulator has it."""
        found: dict[str, Any] = await self.call(
            "GET", f"{VM_PATH}/namespaces/{namespace}/{vm_api.PLURAL}/{name}"
        )
        return found

    async def items(self, path: str) -> list[dict[str, Any]]:
        """The items of a list request."""
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
        """The Events of `namespace`."""
        return await self.items(f"/api/v1/namespaces/{namespace}/events")

    def writes(self) -> list[Write]:
        """Every write request, as sent."""
        return list(self.emulator.writes)


@contextlib.asynccontextmanager
async def kmock_cluster() -> AsyncIterator[KmockCluster]:
    """Kmock's Kubernetes emulator on a free loopback port, with our resources registered."""
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
