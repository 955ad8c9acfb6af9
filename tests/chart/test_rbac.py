"""The chart's RBAC grants exactly the operator's API calls: no more, no less, no wildcards."""

from __future__ import annotations

import inspect
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import vibration_operator
from vibration_operator import handlers, kube
from vibration_testkit.helm import NAMESPACE, SCENARIOS, of_kind, render_scenario
from vibration_testkit.operator_calls import OPERATOR_API_CALLS, ApiCall, calls_in_source, granted

PACKAGE = Path(inspect.getfile(vibration_operator)).parent

Triple = tuple[str, str, str]


def _triples(rules: list[dict[str, Any]]) -> set[Triple]:
    out = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def test_source_calls_are_the_operator_entries() -> None:
    ours = {c for c in OPERATOR_API_CALLS if c.by == "operator"}
    assert calls_in_source(PACKAGE) == ours


def test_kopf_entries_match_its_handlers() -> None:
    source = inspect.getsource(handlers)
    assert 'kopf.on.event("v1", "pods"' in source  # list + watch pods
    assert "kopf.timer(*resource" in source  # finalizer patch on VibrationModels
    assert "posting.level" in source  # kopf posts events
    assert "peering.standalone = True" in source  # no peering objects: no RBAC for them
    assert "scanning.disabled = True" in source  # no CRD or namespace watches


def test_operator_declares_the_same_rules() -> None:
    declared = {
        ApiCall(g, r, v, cluster=rule in kube.CLUSTER_RULES)
        for rule in kube.RBAC_RULES
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    expected = {ApiCall(c.group, c.resource, c.verb, cluster=c.cluster) for c in OPERATOR_API_CALLS}
    assert declared == expected


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
    cluster, namespaced = (
        granted(OPERATOR_API_CALLS, cluster=True),
        granted(OPERATOR_API_CALLS, cluster=False),
    )
    if scenario == "cluster-wide":
        assert bound == {"cluster": cluster | namespaced}
        return
    watched = ["hall-c", "hall-c-staging"] if scenario == "broker-off" else [NAMESPACE]
    assert bound == {"cluster": cluster} | dict.fromkeys(watched, namespaced)
