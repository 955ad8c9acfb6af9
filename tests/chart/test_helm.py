"""The chart with the real helm: lint and render every scenario, validate the output, refuse bad values."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from vibration_operator import names
from vibration_operator.settings import OperatorSettings
from vibration_testkit.helm import (
    CHART,
    NAMESPACE,
    ROOT,
    SCENARIOS,
    component,
    of_kind,
    render,
    render_scenario,
    run_helm,
    scenario_file,
)

pytestmark = pytest.mark.integration

KUBERNETES_VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]
# Kinds of CRDs that are not part of Kubernetes: kubernetes-validate has no schema for them.
FOREIGN_KINDS = {"PodMonitor"}


def test_every_issue_scenario_exists() -> None:
    assert {"cpu-only", "coral", "broker-off", "monitoring", "bridge"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(scenario: str) -> None:
    result = run_helm(
        "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--values", str(scenario_file(scenario))
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_lint_defaults() -> None:
    result = run_helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@functools.cache
def _problem(version: str, manifest: str) -> str | None:
    """Why kubernetes-validate refuses one object (None: valid); cached, the CRD recurs in every scenario."""
    obj = json.loads(manifest)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except SchemaNotFoundError:
        return None if obj["kind"] in FOREIGN_KINDS else f"no schema for {obj['kind']}"
    except kubernetes_validate.ValidationError as exc:
        return f"{exc.message} at {list(exc.path)}"
    return None


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_objects_validate(scenario: str, version: str) -> None:
    objects = render_scenario(scenario)
    assert of_kind(objects, "CustomResourceDefinition"), "the CRD comes with the chart"
    problems = {
        f"{obj['kind']}/{obj['metadata']['name']}": _problem(version, json.dumps(obj, sort_keys=True))
        for obj in objects
    }
    assert {name: problem for name, problem in problems.items() if problem} == {}, version


def test_crd_copy_is_identical() -> None:
    name = "vibrationmodels.edge.vibration.io.yaml"
    assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes()
    assert [p.name for p in (CHART / "crds").iterdir()] == [name]


def test_scenarios_render_what_they_enable() -> None:
    def components(scenario: str) -> set[str]:
        return {
            component(obj) for obj in render_scenario(scenario) if obj["kind"] != "CustomResourceDefinition"
        }

    assert components("cpu-only") == {"operator", "broker"}
    assert components("broker-off") == {"operator"}
    assert "coral-device-plugin" in components("coral")
    assert "monitoring" in components("monitoring")
    bridge = next(o for o in of_kind(render_scenario("bridge"), "ConfigMap") if component(o) == "broker")
    assert "connection central" in bridge["data"]["bridge.conf"]


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (("operator.unknown=1",), "additional properties 'unknown' not allowed"),
        (("broker.bridge.enabled=true",), "/broker/bridge/address"),
        (("broker.tls.enabled=true",), "/broker/tls/secretName"),
        (("registry.credentialsSecret=AKIAIOSFODNN7/EXAMPLEKEY",), "/registry/credentialsSecret"),
        (("broker.auth.password=hunter2",), "additional properties 'password' not allowed"),
        (("coral.devicePlugin.usbIds={1a6e-089a}",), "/coral/devicePlugin/usbIds"),
        (("serving.resources.limits.cpu=lots",), "/serving/resources/limits/cpu"),
        # Without a domain the plugin would announce squat.ai/coral and the pods ask for "coral".
        (("coral.resourceName=coral",), "/coral/resourceName"),
        # A VibrationModel's spec.artifact.credentialsSecret is a DNS label: NOTES would name a
        # Secret the CRD refuses.
        (("registry.credentialsSecret=minio.creds",), "/registry/credentialsSecret"),
    ],
)
def test_schema_refuses(sets: tuple[str, ...], complaint: str) -> None:
    args = ["template", "x", str(CHART)]
    for item in sets:
        args += ["--set", item]
    result = run_helm(*args)
    assert result.returncode != 0
    assert complaint in result.stderr


def _operator_env(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    deployment = next(o for o in of_kind(objects, "Deployment") if component(o) == "operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {}
    for item in container["env"]:
        if "valueFrom" in item:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
            env[item["name"]] = NAMESPACE
        else:
            env[item["name"]] = item["value"]
    return env


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_env_builds_the_settings(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _operator_env(render_scenario(scenario))
    prefix = OperatorSettings.model_config.get("env_prefix", "")
    fields = {f"{prefix}{name}".upper() for name in OperatorSettings.model_fields if name != "pod_namespace"}
    optional = {f"{prefix}REGISTRY_ENDPOINT"}
    assert set(env) - {"POD_NAMESPACE"} <= fields, "every variable is a settings field"
    assert fields - optional <= set(env), "the chart sets every setting"
    for name in fields | {"POD_NAMESPACE"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    watched = settings.watched_namespaces()
    if scenario == "cluster-wide":
        assert watched is None
    elif scenario == "broker-off":
        assert watched == ["hall-c", "hall-c-staging"]
    else:
        assert watched == [NAMESPACE]
    assert settings.coral_resource_name == "squat.ai/coral"


def test_numeric_serving_resources_reach_the_operator_as_quantities(monkeypatch: pytest.MonkeyPatch) -> None:
    # `cpu: 2` in values.yaml is a number in the rendered JSON: the operator must start on it.
    objects = render(
        (scenario_file("cpu-only"),), ("serving.resources.limits.cpu=2", "serving.resources.requests.cpu=0.5")
    )
    for name, value in _operator_env(objects).items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.serving_limits["cpu"] == "2"
    assert settings.serving_requests["cpu"] == "0.5"


def test_a_new_auth_revision_restarts_the_broker() -> None:
    # Mosquitto reads its users and ACLs at start only: the revision is what changes its pod template.
    def template(*sets: str) -> dict[str, Any]:
        objects = render((scenario_file("cpu-only"),), sets)
        broker = next(o for o in of_kind(objects, "Deployment") if component(o) == "broker")
        pod: dict[str, Any] = broker["spec"]["template"]
        return pod

    before, after = template("broker.auth.revision=1"), template("broker.auth.revision=2026-12-06")
    assert before != after
    assert after["metadata"]["annotations"]["edge.vibration.io/auth-revision"] == "2026-12-06"
    assert "edge.vibration.io/auth-revision" not in template()["metadata"]["annotations"]


def test_coral_resource_name_reaches_operator_and_plugin() -> None:
    objects = render((scenario_file("coral"),), ("coral.resourceName=example.com/edgetpu",))
    assert _operator_env(objects)["VIBRATION_OPERATOR_CORAL_RESOURCE_NAME"] == "example.com/edgetpu"
    (plugin,) = of_kind(objects, "DaemonSet")
    args = plugin["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--domain") + 1] == "example.com"
    device = yaml.safe_load(args[args.index("--device") + 1])
    assert device["name"] == "edgetpu"
    usb = [(g["usb"][0]["vendor"], g["usb"][0]["product"]) for g in device["groups"] if "usb" in g]
    assert usb == [("1a6e", "089a"), ("18d1", "9302")]
    assert {"paths": [{"path": "/dev/apex_*"}]} in device["groups"]
    assert plugin["spec"]["template"]["spec"]["nodeSelector"]["edge.vibration.io/coral"] == "true"


def test_generated_docs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "chart_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_podmonitor_selects_the_serving_pods_the_operator_builds() -> None:
    (monitor,) = of_kind(render_scenario("monitoring"), "PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= names.serving_labels("spindle-classifier", "gw-1").items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http"  # the serve container's port name in vibration_operator.builders
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


class _NoDuplicateKeys(yaml.SafeLoader):
    """A loader that refuses a key twice in one mapping, as the API server's strict decoding does."""


def _mapping_once(loader: _NoDuplicateKeys, node: yaml.MappingNode, *, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
    if twice := sorted({str(key) for key in keys if keys.count(key) > 1}):
        raise yaml.constructor.ConstructorError(None, None, f"keys given twice: {twice}", node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_NoDuplicateKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_once)


def test_common_labels_may_name_the_suite_but_never_a_label_twice_or_the_selector_labels() -> None:
    sets = {
        "app\\.kubernetes\\.io/part-of": "factory-monitoring",  # the suite this install belongs to
        "app\\.kubernetes\\.io/name": "other",  # would break every selector: the chart's stays
        "team": "maintenance",
    }
    args = ["template", "t", str(CHART), "--namespace", NAMESPACE]
    for key, value in sets.items():
        args += ["--set", f"commonLabels.{key}={value}"]
    result = run_helm(*args)
    assert result.returncode == 0, result.stderr
    objects = [obj for obj in yaml.load_all(result.stdout, Loader=_NoDuplicateKeys) if obj]
    assert objects
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "factory-monitoring", obj["metadata"]["name"]
        assert labels["app.kubernetes.io/name"] == "vibration-edge"
        assert labels["team"] == "maintenance"
