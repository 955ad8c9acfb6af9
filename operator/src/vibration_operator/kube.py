"""A thin async adapter over the few Kubernetes API calls the operator makes.

Why aiohttp straight against the API server, with the credentials of kopf's
login: kopf's own API client is internal (``kopf._cogs``), and the official
``kubernetes`` client is synchronous, so under asyncio every call would hold
one of a handful of executor threads while 200 VibrationModels reconcile at
once; it also picks patch content types by its own rules. aiohttp is what
kopf already runs on, and `kopf.ConnectionInfo` (what ``@kopf.on.login``
returns: server, TLS context, Authorization header) is public, so the
operator and kopf authenticate the same way, in a cluster with the service
account or locally with a kubeconfig, against kmock and a real API server
alike. Patches are JSON merge patches (RFC 7386), the one kind every API
server, custom resources and status subresources included, understands.

`RBAC_RULES` is every verb this module and kopf use, and nothing more; the
chart's RBAC is compared against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from vibration_core import api

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    import kopf

Rule = dict[str, list[str]]
"""One RBAC PolicyRule: apiGroups, resources, verbs."""


def _rule(group: str, resources: list[str], verbs: list[str]) -> Rule:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


CLUSTER_RULES: tuple[Rule, ...] = (
    # The nodes a VibrationModel selects: listed by label on every reconcile.
    _rule("", ["nodes"], ["list"]),
)
"""Rules on cluster-scoped resources: a ClusterRole in every mode."""

NAMESPACED_RULES: tuple[Rule, ...] = (
    # kopf lists and watches them, patches its finalizer and annotations; we get the fresh object.
    _rule(api.GROUP, [api.PLURAL], ["get", "list", "watch", "patch"]),
    _rule(api.GROUP, [f"{api.PLURAL}/status"], ["patch"]),
    # Serving pods: kopf watches them (a pod event wakes its VibrationModel), we create and delete
    # them, and patch an annotation when their target changes (the kubelet then refreshes the mount).
    _rule("", ["pods"], ["list", "watch", "create", "patch", "delete"]),
    # Per-node target ConfigMaps (get: re-read one that a create found existing).
    _rule("", ["configmaps"], ["get", "list", "create", "patch", "delete"]),
    # Transition events (ours) and handler events (kopf's), both core v1; the Warning events of a
    # serving pod that does not start are read to say why (a missing Secret, a missing hostPath).
    _rule("", ["events"], ["list", "create"]),
)
"""Rules in the watched namespaces: a Role per namespace, or a ClusterRole when cluster-wide."""

RBAC_RULES: tuple[Rule, ...] = CLUSTER_RULES + NAMESPACED_RULES
"""Every rule the operator needs. kopf runs standalone (no peering objects) with scanning
disabled (no CRD or namespace watches), so it needs nothing beyond these."""

_MERGE_PATCH = "application/merge-patch+json"
_SERVER_ERROR = 500


@dataclass(frozen=True)
class Resource:
    """A resource kind as the URL of the API server names it."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        """``/api/v1/namespaces/ns/pods/name/status`` and its shorter forms."""
        parts = ["/api", self.version] if not self.group else ["/apis", self.group, self.version]
        if self.namespaced and namespace is not None:
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        if sub is not None:
            parts.append(sub)
        return "/".join(parts)


NODES = Resource("", "v1", "nodes", namespaced=False)
PODS = Resource("", "v1", "pods")
CONFIGMAPS = Resource("", "v1", "configmaps")
EVENTS = Resource("", "v1", "events")
VIBRATIONMODELS = Resource(api.GROUP, api.VERSION, api.PLURAL)


class KubeError(Exception):
    """An API call that failed; `status` is the HTTP status (0: no answer at all)."""

    def __init__(self, method: str, path: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later without anyone changing anything."""
        return self.status in {0, 401, 408, 409, 429} or self.status >= _SERVER_ERROR


class NotFoundError(KubeError):
    """404: the object (or the resource kind) does not exist."""


class ConflictError(KubeError):
    """409: the object exists already, or changed under us."""


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _has_labels(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    own = obj.get("metadata", {}).get("labels") or {}
    return all(own.get(key) == value for key, value in labels.items())


class KubeApi:
    """The API calls of the operator, over one aiohttp session built from kopf's credentials.

    `use` installs (or replaces) the credentials; the login handler calls it.
    On a 401 the client asks `relogin` once for fresh credentials (a rotated
    service-account token) and retries.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        relogin: Callable[[], Awaitable[kopf.ConnectionInfo | None]] | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._relogin = relogin
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def ready(self) -> bool:
        """Whether credentials are installed."""
        return self._session is not None

    async def use(self, info: kopf.ConnectionInfo) -> None:
        """Talk to `info.server` with its credentials from now on."""
        if info == self._info and self._session is not None:
            return
        old, self._info = self._session, info
        self._session = aiohttp.ClientSession(
            base_url=info.server.rstrip("/") + "/",
            connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
            headers={**info.as_http_headers(), "User-Agent": "vibration-operator"},
            proxy=info.proxy_url,
            trust_env=info.trust_env,
            timeout=self._timeout,
        )
        if old is not None:
            await old.close()

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, *, body: object = None, params: Mapping[str, str] | None = None
    ) -> Any:  # noqa: ANN401 - the API server answers JSON of any shape
        for attempt in (1, 2):
            if self._session is None:
                raise KubeError(method, path, 0, "NotLoggedIn", "no credentials yet")
            headers = {"Content-Type": _MERGE_PATCH} if method == "PATCH" else {}
            try:
                async with self._session.request(
                    method, path.lstrip("/"), json=body, params=params, headers=headers
                ) as response:
                    text = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeError(method, path, 0, type(exc).__name__, str(exc)) from exc
            if status == 401 and attempt == 1 and self._relogin is not None:  # noqa: PLR2004
                info = await self._relogin()
                if info is not None:
                    self._info = None  # force a new session even if the token did not change
                    await self.use(info)
                    continue
            if status < 300:  # noqa: PLR2004
                return json.loads(text) if text else {}
            raise _error(method, path, status, text)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        """One object."""
        found: dict[str, Any] = await self._call("GET", resource.path(namespace, name))
        return found

    async def list(
        self,
        resource: Resource,
        namespace: str | None,
        labels: Mapping[str, str] | None = None,
        *,
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The objects with all of `labels` (all objects when None), and `fields` (a field selector).

        The label selector also filters here: an API server already did, so this costs
        nothing, and an emulator that ignores ``labelSelector`` stays correct. Callers
        filter on `fields` themselves where an emulator may ignore ``fieldSelector``.
        """
        params = {"labelSelector": _selector(labels)} if labels else {}
        if fields:
            params["fieldSelector"] = _selector(fields)
        found = await self._call("GET", resource.path(namespace), params=params or None)
        items: list[dict[str, Any]] = found.get("items") or []
        return [item for item in items if _has_labels(item, labels or {})]

    async def create(self, resource: Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object; `ConflictError` when it exists."""
        created: dict[str, Any] = await self._call("POST", resource.path(namespace), body=body)
        return created

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch an object, or its `subresource` (``status``)."""
        path = resource.path(namespace, name, subresource)
        patched: dict[str, Any] = await self._call("PATCH", path, body=dict(patch))
        return patched

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        """Delete an object; False when it was gone already."""
        try:
            await self._call("DELETE", resource.path(namespace, name))
        except NotFoundError:
            return False
        return True


def _error(method: str, path: str, status: int, text: str) -> KubeError:
    reason, message = "", text[:500]
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        reason = str(payload.get("reason") or "")
        message = str(payload.get("message") or message)[:500]
    kind = {404: NotFoundError, 409: ConflictError}.get(status, KubeError)
    return kind(method, path, status, reason, message)
