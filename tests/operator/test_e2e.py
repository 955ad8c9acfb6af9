"""End to end against a real cluster (``KUBECONFIG``): the CRD, its refusals, and the operator under its RBAC.

Skipped with a reason when ``KUBECONFIG`` is unset. What runs:

- the generated CRD is applied (server-side apply) and becomes Established;
- every sample is accepted (server-side dry run) and every invalid sample is
  refused with the path and message of its ``# expect:`` line: this is
  where the CEL rules meet the real API server;
- the operator runs in this process, logged in as a ServiceAccount that has
  exactly `RBAC_RULES` (a token from the TokenRequest API), so a verb
  missing from the rules fails here; it creates the canary's target
  ConfigMap and serving pod on a node labelled for a throwaway hall and
  writes the status with its conditions. The pod need not start (the
  cluster may not have the image or the node-local test data).

Everything is created under a random name and removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from vibration_core import api as vm_api
from vibration_operator import names
from vibration_operator.crd import CRD_NAME, build_crd
from vibration_operator.kube import CLUSTER_RULES, NAMESPACED_RULES

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set: no cluster to test"),
]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "crds" / "samples").glob("*.yaml"))
INVALID = sorted((ROOT / "crds" / "samples" / "invalid").glob("*.yaml"))
MANAGER = "vibration-e2e"


@pytest.fixture(scope="module")
def k8s() -> Any:
    import kubernetes  # noqa: PLC0415 - only when there is a cluster

    kubernetes.config.load_kube_config(config_file=os.environ["KUBECONFIG"])  # type: ignore[no-untyped-call] # untyped library
    return kubernetes


@pytest.fixture(scope="module")
def crd(k8s: Any) -> None:
    api = k8s.client.ApiextensionsV1Api()
    api.patch_custom_resource_definition(
        CRD_NAME, build_crd(), field_manager=MANAGER, force=True, _content_type="application/apply-patch+yaml"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conditions = api.read_custom_resource_definition(CRD_NAME).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(1)
    pytest.fail("the CRD did not become Established within 60 s")


@pytest.fixture(scope="module")
def namespace(k8s: Any, crd: None) -> Iterator[str]:  # noqa: ARG001 - crd: ordering
    name = f"vibration-e2e-{secrets.token_hex(3)}"
    core = k8s.client.CoreV1Api()
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def _load(path: Path, namespace: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(path.read_text())
    obj["metadata"]["namespace"] = namespace
    return obj


def _create(k8s: Any, obj: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    api = k8s.client.CustomObjectsApi()
    created: dict[str, Any] = api.create_namespaced_custom_object(
        vm_api.GROUP, vm_api.VERSION, obj["metadata"]["namespace"], vm_api.PLURAL, obj,
        dry_run="All" if dry_run else None,
    )  # fmt: skip
    return created


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_is_accepted(k8s: Any, namespace: str, path: Path) -> None:
    created = _create(k8s, _load(path, namespace), dry_run=True)
    assert created["spec"]["version"]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_sample_is_refused_with_its_message(k8s: Any, namespace: str, path: Path) -> None:
    where, message = path.read_text().splitlines()[0].removeprefix("# expect: ").split(" | ", 1)
    with pytest.raises(k8s.client.ApiException) as refused:
        _create(k8s, _load(path, namespace), dry_run=True)
    assert refused.value.status == 422
    said = json.loads(refused.value.body)["message"]
    assert where in said, said
    assert message in said, said


def _rbac(k8s: Any, namespace: str, account: str) -> None:
    """A ServiceAccount with exactly the operator's rules: a Role here, a ClusterRole for nodes."""
    core, rbac = k8s.client.CoreV1Api(), k8s.client.RbacAuthorizationV1Api()
    core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    subject = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": account}, "rules": list(NAMESPACED_RULES)})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": account}, "subjects": subject,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
    })  # fmt: skip
    rbac.create_cluster_role({"metadata": {"name": account}, "rules": list(CLUSTER_RULES)})
    rbac.create_cluster_role_binding({
        "metadata": {"name": account}, "subjects": subject,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account},
    })  # fmt: skip


def _token(k8s: Any, namespace: str, account: str) -> Any:
    import kopf  # noqa: PLC0415

    request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
    token = k8s.client.CoreV1Api().create_namespaced_service_account_token(account, namespace, request)
    config = k8s.client.Configuration.get_default_copy()
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        token=token.status.token,
    )


@contextlib.contextmanager
def _labelled_node(k8s: Any, hall: str) -> Iterator[str]:
    core = k8s.client.CoreV1Api()
    node = core.list_node().items[0].metadata.name
    core.patch_node(node, {"metadata": {"labels": {"edge.vibration.io/hall": hall}}})
    try:
        yield node
    finally:
        core.patch_node(node, {"metadata": {"labels": {"edge.vibration.io/hall": None}}})


async def test_operator_creates_the_workload_and_reports_status(k8s: Any, namespace: str) -> None:
    from vibration_operator.handlers import run_operator  # noqa: PLC0415
    from vibration_operator.settings import OperatorSettings  # noqa: PLC0415

    account, hall = f"vibration-operator-{namespace}", f"e2e-{namespace}"
    _rbac(k8s, namespace, account)
    credentials = _token(k8s, namespace, account)
    manifest = _load(ROOT / "crds" / "samples" / "cpu-model.yaml", namespace)
    manifest["spec"]["nodeSelector"] = {"edge.vibration.io/hall": hall}
    manifest["spec"]["rollout"].pop("updateWindow", None)
    custom, core = k8s.client.CustomObjectsApi(), k8s.client.CoreV1Api()
    settings = OperatorSettings(namespaces=[namespace], status_poll_interval_s=2, log_format="text")
    stop = asyncio.Event()
    operator: asyncio.Task[None] | None = None
    try:
        with _labelled_node(k8s, hall) as node:
            operator = asyncio.create_task(run_operator(settings, stop_flag=stop, credentials=credentials))
            await asyncio.to_thread(_create, k8s, manifest, dry_run=False)
            name = manifest["metadata"]["name"]

            def status() -> dict[str, Any]:
                vm = custom.get_namespaced_custom_object(
                    vm_api.GROUP, vm_api.VERSION, namespace, vm_api.PLURAL, name
                )
                return dict(vm.get("status") or {})

            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (status().get("conditions") and _pods(core, namespace)):
                assert not operator.done(), operator
                await asyncio.sleep(1)
            found = status()
            pods = _pods(core, namespace)
            assert [p.spec.affinity.node_affinity is not None for p in pods] == [True]
            assert pods[0].metadata.annotations[names.ANNOTATION_NODE] == node
            assert found["observedGeneration"] == 1
            assert {c["type"] for c in found["conditions"]} == {
                "Ready", "Validated", "Progressing", "Degraded", "Drifted"
            }  # fmt: skip
            assert found["target"]["version"] == manifest["spec"]["version"]
            configmaps = core.list_namespaced_config_map(namespace, label_selector=_selector()).items
            assert [cm.metadata.annotations[names.ANNOTATION_NODE] for cm in configmaps] == [node]
    finally:
        stop.set()
        if operator is not None:
            await asyncio.wait_for(operator, timeout=30)
        # The operator's finalizer would keep the model, and so its namespace, Terminating for
        # ever once the operator is gone: take it off, so the namespace's deletion can finish.
        with contextlib.suppress(k8s.client.ApiException):
            custom.patch_namespaced_custom_object(
                vm_api.GROUP, vm_api.VERSION, namespace, vm_api.PLURAL, manifest["metadata"]["name"],
                {"metadata": {"finalizers": None}},
            )  # fmt: skip
        rbac = k8s.client.RbacAuthorizationV1Api()
        with contextlib.suppress(k8s.client.ApiException):
            rbac.delete_cluster_role_binding(account)
        with contextlib.suppress(k8s.client.ApiException):
            rbac.delete_cluster_role(account)


def _selector() -> str:
    return f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"


def _pods(core: Any, namespace: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=_selector()).items)
