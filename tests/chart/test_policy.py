"""Policy over every rendered scenario: restricted pod security, requests and limits, no secrets in values."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from vibration_core.spec import VibrationModelSpec
from vibration_operator.builders import build_serving_pod
from vibration_operator.settings import OperatorSettings
from vibration_testkit.helm import (
    CHART,
    NAMESPACE,
    ROOT,
    SCENARIOS,
    component,
    of_kind,
    pod_specs,
    render_scenario,
)

if TYPE_CHECKING:
    from pathlib import Path

PRIVILEGED_COMPONENTS = {"coral-device-plugin"}
"""Components allowed to be privileged, each with its reason next to it in the template."""
TOKEN_COMPONENTS = {"operator"}
"""Components whose pods mount a service-account token (the operator talks to the API server)."""
SECRET_KEY = re.compile(
    r"(password|passwd|token|secret|credential|apikey|accesskey|privatekey)", re.IGNORECASE
)
SECRET_NAME_KEY = re.compile(r"(Secret|secretName|existingSecret|imagePullSecrets)$")


def _effective(container: dict[str, Any], pod: dict[str, Any], field: str) -> Any:
    own = container.get("securityContext") or {}
    return own[field] if field in own else (pod.get("securityContext") or {}).get(field)


def restricted_problems(pod: dict[str, Any]) -> list[str]:
    """Where a pod spec breaks the restricted pod-security settings (hostPath aside), by container."""
    problems = [f"pod sets {key}" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    for container in pod.get("initContainers", []) + pod["containers"]:
        name = container["name"]
        context = container.get("securityContext") or {}
        checks = {
            "runAsNonRoot true": _effective(container, pod, "runAsNonRoot") is True,
            "readOnlyRootFilesystem true": context.get("readOnlyRootFilesystem") is True,
            "allowPrivilegeEscalation false": context.get("allowPrivilegeEscalation") is False,
            "capabilities drop ALL": (context.get("capabilities") or {}).get("drop") == ["ALL"],
            "no added capabilities": not (context.get("capabilities") or {}).get("add"),
            "seccomp RuntimeDefault": (_effective(container, pod, "seccompProfile") or {}).get("type")
            == "RuntimeDefault",
            "not privileged": context.get("privileged") is not True,
            "runAsUser not 0": _effective(container, pod, "runAsUser") != 0,
        }
        problems += [f"{name}: {check}" for check, ok in checks.items() if not ok]
    return problems


def resource_problems(pod: dict[str, Any]) -> list[str]:
    """Containers without cpu and memory requests and limits."""
    problems = []
    for container in pod.get("initContainers", []) + pod["containers"]:
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(kind) or {})
            if missing:
                problems.append(f"{container['name']}: no {kind} for {sorted(missing)}")
    return problems


@pytest.mark.integration
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_container_is_restricted_and_bounded(scenario: str) -> None:
    workloads = pod_specs(render_scenario(scenario))
    assert workloads
    for workload, pod in workloads:
        where = f"{scenario}: {workload['kind']}/{workload['metadata']['name']}"
        assert resource_problems(pod) == [], where
        token = pod.get("automountServiceAccountToken")
        assert token is (component(workload) in TOKEN_COMPONENTS), f"{where}: automountServiceAccountToken"
        if component(workload) in PRIVILEGED_COMPONENTS:
            continue
        assert restricted_problems(pod) == [], where
        host_paths = [v["name"] for v in pod.get("volumes", []) if "hostPath" in v]
        assert host_paths == [], f"{where}: hostPath volumes"


@pytest.mark.integration
def test_device_plugin_is_the_privileged_exception_and_says_why() -> None:
    (plugin,) = of_kind(render_scenario("coral"), "DaemonSet")
    pod = plugin["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    assert container["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["nodeSelector"] == {"edge.vibration.io/coral": "true", "kubernetes.io/arch": "arm64"}
    template = (CHART / "templates" / "coral" / "device-plugin.yaml").read_text()
    before = template[: template.index("privileged: true")]
    assert "The one exception to the restricted profile, and why" in before[-1200:]


@pytest.mark.integration
@pytest.mark.parametrize("accelerator", ["cpu", "coral"])
def test_serving_pods_built_with_the_chart_settings_are_restricted(
    accelerator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render_scenario("coral")
    deployment = next(o for o in of_kind(objects, "Deployment") if component(o) == "operator")
    for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        monkeypatch.setenv(item["name"], item.get("value", NAMESPACE))
    settings = OperatorSettings()
    sample = "coral-model.yaml" if accelerator == "coral" else "cpu-model.yaml"
    spec = VibrationModelSpec.model_validate(
        yaml.safe_load((ROOT / "crds" / "samples" / sample).read_text())["spec"]
    )
    pod = build_serving_pod("m", NAMESPACE, "uid", spec, "gw-1", settings)["spec"]
    assert restricted_problems(pod) == []
    assert resource_problems(pod) == []
    for container in pod["initContainers"] + pod["containers"]:
        has_tpu = "squat.ai/coral" in container["resources"]["limits"]
        assert has_tpu is (accelerator == "coral")


def _secret_like_values(data: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{path}.{key}" if path else str(key)
            if (
                SECRET_KEY.search(str(key))
                and not SECRET_NAME_KEY.search(str(key))
                and not isinstance(value, dict)
            ):
                found.append(here)
            found += _secret_like_values(value, here)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _secret_like_values(value, f"{path}[{index}]")
    return found


def _values_files() -> list[Path]:
    halls = sorted((ROOT / "examples" / "gitops" / "halls").glob("*/values.yaml"))
    return [CHART / "values.yaml", *sorted((CHART / "ci").glob("*.yaml")), *halls]


@pytest.mark.parametrize("path", _values_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_values_hold_secret_names_only(path: Path) -> None:
    assert _secret_like_values(yaml.safe_load(path.read_text())) == []


@pytest.mark.integration
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_renders_no_secret(scenario: str) -> None:
    assert of_kind(render_scenario(scenario), "Secret") == []
