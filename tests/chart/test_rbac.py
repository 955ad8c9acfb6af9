"""The chart's RBAC grants exactly the operator's API calls: no more, no less, no wildcards.

The calls are derived from the operator itself (`tests.chart.operator_calls`): its `KubeApi` calls
in the source, and what kopf does for the handlers it registers under the settings its startup
handler sets. So a handler, a watch or a kopf setting that changes changes what must be granted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import kopf
import pytest

from vibration_operator import kube
from vibration_testkit.helm import NAMESPACE, SCENARIOS, of_kind, render_scenario
from vibration_testkit.operator_calls import (
    ApiCall,
    granted,
    kopf_calls,
    operator_api_calls,
    operator_kopf_settings,
    operator_registry,
)

Triple = tuple[str, str, str]


def _triples(rules: list[dict[str, Any]]) -> set[Triple]:
    out = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def _bare(calls: set[ApiCall]) -> set[ApiCall]:
    """The calls without who makes them: RBAC grants a verb, whoever uses it."""
    return {ApiCall(c.group, c.resource, c.verb, cluster=c.cluster) for c in calls}


def test_kopf_lists_watches_and_patches_what_the_registry_handles() -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.event("v1", "configmaps", registry=registry)
    async def seen(**_: object) -> None: ...

    @kopf.timer("v1", "pods", interval=1, registry=registry)
    async def tick(**_: object) -> None: ...

    quiet = kopf.OperatorSettings()
    quiet.peering.standalone = quiet.scanning.disabled = True
    quiet.posting.enabled = False
    quiet.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    assert {(c.resource, c.verb) for c in kopf_calls(registry, quiet)} == {
        ("configmaps", "list"), ("configmaps", "watch"),  # an event handler only watches
        ("pods", "list"), ("pods", "watch"), ("pods", "patch"),  # a timer's finalizer is a patch
    }  # fmt: skip

    defaults = {(c.group, c.resource, c.verb) for c in kopf_calls(registry, kopf.OperatorSettings())}
    assert ("", "pods/status", "patch") in defaults  # kopf's default progress storage writes status
    assert ("", "events", "create") in defaults
    assert ("", "namespaces", "watch") in defaults
    assert ("kopf.dev", "kopfpeerings", "watch") in defaults


def test_the_operators_startup_handler_sets_what_its_calls_assume() -> None:
    settings = operator_kopf_settings(operator_registry())
    assert settings.peering.standalone, "no peering objects: no RBAC for them"
    assert settings.scanning.disabled, "no CRD or namespace watches"
    assert settings.posting.level == logging.WARNING


def test_operator_declares_the_same_rules() -> None:
    declared = {
        ApiCall(g, r, v, cluster=rule in kube.CLUSTER_RULES)
        for rule in kube.RBAC_RULES
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert declared == _bare(operator_api_calls())


def _bound_rules(objects: tuple[dict[str, Any], ...], service_account: str) -> dict[str, set[Triple]]:
    """Rules bound to the service account: key ``cluster`` or the Role's namespace."""
    roles: dict[tuple[str, ...], dict[str, Any]] = {
        ("ClusterRole", r["metadata"]["name"]): r for r in of_kind(objects, "ClusterRole")
    }
    roles |= {
        ("Role", r["metadata"]["name"], r["metadata"]["namespace"]): r for r in of_kind(objects, "Role")
    }
    bound: dict[str, set[Triple]] = defaultdict(set)
    used = set()
    for binding in of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding"):
        subjects = binding["subjects"]
        assert subjects == [{"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}]
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")
        key = (
            (ref["kind"], ref["name"])
            if ref["kind"] == "ClusterRole"
            else (ref["kind"], ref["name"], namespace)
        )
        assert key in roles, f"{binding['metadata']['name']} binds a role the chart does not render"
        used.add(key)
        scope = "cluster" if binding["kind"] == "ClusterRoleBinding" else str(namespace)
        bound[scope] |= _triples(roles[key]["rules"])
    assert used == set(roles), "every role is bound"
    return bound


@pytest.mark.integration
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_exactly_the_operator_calls(scenario: str) -> None:
    objects = render_scenario(scenario)
    (account,) = of_kind(objects, "ServiceAccount")
    bound = _bound_rules(objects, account["metadata"]["name"])
    calls = operator_api_calls()
    cluster, namespaced = granted(calls, cluster=True), granted(calls, cluster=False)
    if scenario == "cluster-wide":
        assert bound == {"cluster": cluster | namespaced}
        return
    watched = ["hall-c", "hall-c-staging"] if scenario == "broker-off" else [NAMESPACE]
    assert bound == {"cluster": cluster} | dict.fromkeys(watched, namespaced)
