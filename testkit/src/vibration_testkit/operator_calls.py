"""Every Kubernetes API call of the operator: the one list the chart's RBAC is checked against.

Two callers: the operator's own code (`vibration_operator.kube.KubeApi` calls, found in its
source by `calls_in_source`), and kopf, which lists and watches the resources it has handlers
for and patches its bookkeeping onto the objects it handles.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vibration_operator import kube

if TYPE_CHECKING:
    from pathlib import Path

GROUP = "edge.vibration.io"


@dataclass(frozen=True, order=True)
class ApiCall:
    """One verb on one resource; `cluster` for cluster-scoped resources."""

    group: str
    resource: str
    verb: str
    cluster: bool = False
    by: str = "operator"


OPERATOR_API_CALLS: frozenset[ApiCall] = frozenset(
    {
        # observe.py: the nodes a VibrationModel selects.
        ApiCall("", "nodes", "list", cluster=True),
        # handlers.py: the fresh object; apply.py: the status subresource.
        ApiCall(GROUP, "vibrationmodels", "get"),
        ApiCall(GROUP, "vibrationmodels/status", "patch"),
        # observe.py lists, apply.py creates, annotates (a new target) and deletes serving pods.
        ApiCall("", "pods", "list"),
        ApiCall("", "pods", "create"),
        ApiCall("", "pods", "patch"),
        ApiCall("", "pods", "delete"),
        # apply.py: the per-node target ConfigMaps.
        ApiCall("", "configmaps", "get"),
        ApiCall("", "configmaps", "list"),
        ApiCall("", "configmaps", "create"),
        ApiCall("", "configmaps", "patch"),
        ApiCall("", "configmaps", "delete"),
        # apply.py: transition events; observe.py: the Warning events of a pod that does not start.
        ApiCall("", "events", "create"),
        ApiCall("", "events", "list"),
        # kopf: the resources it has handlers for (on.resume/create/update, timers; on.event pods).
        ApiCall(GROUP, "vibrationmodels", "list", by="kopf"),
        ApiCall(GROUP, "vibrationmodels", "watch", by="kopf"),
        # kopf: its finalizer (timers) and its progress and diff-base annotations.
        ApiCall(GROUP, "vibrationmodels", "patch", by="kopf"),
        ApiCall("", "pods", "list", by="kopf"),
        ApiCall("", "pods", "watch", by="kopf"),
        # kopf: events about handler failures.
        ApiCall("", "events", "create", by="kopf"),
    }
)
"""Who calls what. The chart's RBAC must grant exactly these (group, resource, verb), nothing else."""

_VERBS = {"get", "list", "create", "patch", "delete"}


def granted(calls: frozenset[ApiCall], *, cluster: bool) -> set[tuple[str, str, str]]:
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
