"""Every Kubernetes API call of the operator, derived from its code: what the chart's RBAC must grant.

Two callers, both read from what the operator really runs, not from a list kept by hand:

- the operator's own code: the `vibration_operator.kube.KubeApi` calls in its source
  (`calls_in_source`, from the syntax tree);
- kopf: what kopf's reactor does for the handlers `build_registry` registers, under the settings
  the operator's own startup handler gives it (`kopf_calls`, `operator_kopf_calls`).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import kopf

import vibration_operator
from vibration_operator import kube
from vibration_operator.handlers import build_registry
from vibration_operator.settings import OperatorSettings
from vibration_operator.steps import Runtime

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable

PACKAGE = Path(inspect.getfile(vibration_operator)).parent


@dataclass(frozen=True, order=True)
class ApiCall:
    """One verb on one resource; `cluster` for cluster-scoped resources."""

    group: str
    resource: str
    verb: str
    cluster: bool = False
    by: str = "operator"


_VERBS = {"get", "list", "create", "patch", "delete"}
_RESOURCES = {(r.group, r.plural): r for r in vars(kube).values() if isinstance(r, kube.Resource)}
"""The operator's resource constants: whether a resource kopf handles is namespaced."""


def granted(calls: Iterable[ApiCall], *, cluster: bool) -> set[tuple[str, str, str]]:
    """The (group, resource, verb) triples of `calls` on cluster-scoped (or namespaced) resources."""
    return {(c.group, c.resource, c.verb) for c in calls if c.cluster == cluster}


def calls_in_source(package: Path) -> set[ApiCall]:
    """The `KubeApi` calls in the operator's modules: ``kube.<verb>(<RESOURCE>, ..., subresource=...)``."""
    resources = {name: value for name, value in vars(kube).items() if isinstance(value, kube.Resource)}
    found: set[ApiCall] = set()
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            target = node.func.value
            on_kube = (isinstance(target, ast.Name) and target.id == "kube") or (
                isinstance(target, ast.Attribute) and target.attr == "kube"
            )
            if not on_kube or node.func.attr not in _VERBS:
                continue
            first = node.args[0] if node.args else None
            if not (isinstance(first, ast.Name) and first.id in resources):
                msg = (
                    f"{module.name}:{node.lineno}: kube.{node.func.attr} on a resource that is not a constant"
                )
                raise AssertionError(msg)
            resource = resources[first.id]
            plural = resource.plural
            for keyword in node.keywords:
                if keyword.arg != "subresource":
                    continue
                sub = keyword.value.value if isinstance(keyword.value, ast.Constant) else None
                if not isinstance(sub, str):
                    msg = f"{module.name}:{node.lineno}: a subresource that is not a string constant"
                    raise AssertionError(msg)  # noqa: TRY004 - the test's own failure, not a type check
                plural = f"{plural}/{sub}"
            found.add(ApiCall(resource.group, plural, node.func.attr, cluster=not resource.namespaced))
    return found


def _by_kopf(selector: Any, verb: str, sub: str = "") -> ApiCall:
    """The call `verb` on the resource of one of kopf's selectors (kopf's Selector type is private)."""
    plural = selector.plural or selector.any_name
    resource = _RESOURCES.get((selector.group, plural))
    if resource is None:
        msg = f"kopf handles {selector}, which vibration_operator.kube does not name"
        raise AssertionError(msg)
    return ApiCall(
        resource.group, f"{plural}/{sub}" if sub else plural, verb, cluster=not resource.namespaced, by="kopf"
    )


def _writes_status(storage: object) -> bool:
    if isinstance(storage, kopf.MultiProgressStorage | kopf.MultiDiffBaseStorage):
        return any(_writes_status(inner) for inner in storage.storages)
    return isinstance(storage, kopf.StatusProgressStorage | kopf.StatusDiffBaseStorage)


def kopf_calls(registry: kopf.OperatorRegistry, settings: kopf.OperatorSettings) -> set[ApiCall]:
    """The calls kopf makes for `registry`'s handlers under `settings`.

    As kopf's reactor draws the lines (``kopf._core.reactor.observation.revise_resources``): it
    lists and watches every resource with indexing, watching (``on.event``), spawning (timers,
    daemons) or changing (create, update, resume, delete) handlers, and patches those with
    spawning or changing handlers (finalizers; progress and diff-base records, into ``/status``
    for a status storage). It posts events unless posting is off, lists and watches CRDs and
    namespaces unless scanning is off, and keeps peering objects unless standalone. kopf's
    registries have no public accessors, hence the private attributes (kopf is pinned by uv.lock).
    """
    spawning, changing = registry._spawning.get_all_selectors(), registry._changing.get_all_selectors()
    watched = registry._indexing.get_all_selectors() | registry._watching.get_all_selectors()
    calls = {_by_kopf(s, verb) for s in watched | spawning | changing for verb in ("list", "watch")}
    calls |= {_by_kopf(s, "patch") for s in spawning | changing}
    storages = (settings.persistence.progress_storage, settings.persistence.diffbase_storage)
    if any(_writes_status(storage) for storage in storages):
        calls |= {_by_kopf(s, "patch", "status") for s in spawning | changing}
    if settings.posting.enabled:
        calls.add(ApiCall("", "events", "create", by="kopf"))
    if not settings.scanning.disabled:
        crds = ("apiextensions.k8s.io", "customresourcedefinitions")
        calls |= {ApiCall(*crds, verb, cluster=True, by="kopf") for verb in ("list", "watch")}
        calls |= {ApiCall("", "namespaces", verb, cluster=True, by="kopf") for verb in ("list", "watch")}
    if not settings.peering.standalone:
        calls |= {ApiCall("kopf.dev", "kopfpeerings", verb, by="kopf") for verb in ("list", "watch", "patch")}
    return calls


def operator_kopf_settings(registry: kopf.OperatorRegistry) -> kopf.OperatorSettings:
    """Kopf settings as the operator runs it: fresh ones, through the registry's startup handlers."""
    settings = kopf.OperatorSettings()
    for handler in registry._activities.get_all_handlers():
        if handler.activity == "startup":
            # kopf passes a dozen keywords; the operator's startup handlers take settings and **_.
            startup = cast("Callable[..., Coroutine[Any, Any, object]]", handler.fn)
            asyncio.run(startup(settings=settings))
    return settings


def operator_registry() -> kopf.OperatorRegistry:
    """The operator's own registry, as `run_operator` builds it (the namespaces do not matter here)."""
    return build_registry(Runtime(settings=OperatorSettings(cluster_wide=True), kube=kube.KubeApi()))


def operator_kopf_calls() -> set[ApiCall]:
    """What kopf calls for the operator's real registry and startup settings."""
    registry = operator_registry()
    return kopf_calls(registry, operator_kopf_settings(registry))


def operator_api_calls() -> set[ApiCall]:
    """Every call of the running operator: its own and kopf's."""
    return calls_in_source(PACKAGE) | operator_kopf_calls()
