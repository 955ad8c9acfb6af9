"""The manifest builders: golden files, the pod-security policy, and agreement with the inference settings.

The golden manifests in ``golden/`` are compared byte for byte; after an
intended change, regenerate them with ``UPDATE_GOLDEN=1 pytest
tests/operator/test_builders.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vibration_core.drift_monitor import DriftPolicy
from vibration_core.messages import ModelStatus
from vibration_core.spec import AlertSpec, DriftSpec, ServingSpec, VibrationModelSpec
from vibration_core.target import ModelTarget, load_target
from vibration_core.validation import CompactReport
from vibration_infer.cli import parse_validate_args
from vibration_infer.serve.alerts import AlertPolicy
from vibration_infer.serve.settings import ServeSettings
from vibration_infer.settings import ValidateSettings
from vibration_operator import names
from vibration_operator.apply import adoption_patch
from vibration_operator.builders import (
    TARGET_FILE,
    build_event,
    build_serving_pod,
    build_target_configmap,
    owner_reference,
    target_document,
)
from vibration_operator.conditions import Event
from vibration_operator.node_state import NodeObservation
from vibration_operator.readers import observe_node, read_target_configmap, with_outdated_pods
from vibration_operator.settings import OperatorSettings

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)
UID = "6f1c2a9e-4b1d-4c38-9a57-1f0e2d3c4b5a"
if TYPE_CHECKING:
    from collections.abc import Callable

SETTINGS = OperatorSettings(registry_endpoint="http://minio.minio:9000")

CPU = VibrationModelSpec.model_validate(
    {
        "version": "v3",
        "artifact": {
            "uri": "s3://models/spindle-classifier/v3/model.onnx",
            "sha256": "9f2c4b1e3d5a6f7081928374655647382910abcdef0123456789abcdef012345",
            "credentialsSecret": "minio-credentials",
        },
        "nodeSelector": {"edge.vibration.io/hall": "hall-a"},
        "mqtt": {
            "broker": "mqtt://mosquitto.hall-a:1883",
            "topicPrefix": "factory/hall-a",
            "credentialsSecret": "mqtt-serving",
        },
        "validation": {"minAccuracy": 0.93, "minClassRecall": {"bearing_fault": 0.95}},
    }
)
CORAL = VibrationModelSpec.model_validate(
    {
        "version": "v3",
        "artifact": {
            "uri": "s3://models/spindle-classifier-tpu/v3/model_edgetpu.tflite",
            "sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "endpoint": "https://minio.hall-b:9000",
        },
        "format": "edgetpu",
        "accelerator": "coral",
        "mqtt": {
            "broker": "mqtts://mosquitto.hall-b:8883",
            "topicPrefix": "factory/hall-b",
            "caSecret": "hall-b-ca",
        },
        "validation": {"minAccuracy": 0.92, "maxP99LatencyMs": 5},
        "alerts": {"minConfidence": 0.85, "consecutive": 5},
    }
)
ACTIVE = ModelTarget(
    name="spindle-classifier",
    version="v2",
    sha256="ab" * 32,
    model_uri="s3://models/spindle-classifier/v2/model.onnx",
)


def cpu_pod() -> dict[str, Any]:
    return build_serving_pod("spindle-classifier", "hall-a", UID, CPU, "edge-1", SETTINGS)


def coral_pod() -> dict[str, Any]:
    return build_serving_pod("spindle-classifier-tpu", "hall-b", UID, CORAL, "coral-gw-2.hall-b", SETTINGS)


MANIFESTS: dict[str, Callable[[], dict[str, Any]]] = {
    "pod-cpu": cpu_pod,
    "pod-coral": coral_pod,
    "configmap-target": lambda: build_target_configmap(
        "spindle-classifier",
        "hall-a",
        UID,
        "edge-1",
        ModelTarget.from_spec("spindle-classifier", CPU),
        ACTIVE,
    ),
    "event": lambda: build_event(
        "spindle-classifier",
        "hall-a",
        UID,
        Event("Warning", "ValidationFailed", "validation failed on node edge-2: accuracy 0.81 < min 0.93"),
        NOW,
    ),
}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_golden_manifest(name: str) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(MANIFESTS[name](), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path.name} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path.name} differs: review, then regenerate with UPDATE_GOLDEN=1"


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]


@pytest.mark.parametrize("build", [cpu_pod, coral_pod], ids=["cpu", "coral"])
def test_every_container_is_restricted_and_bounded(build: Any) -> None:
    pod = build()
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert "hostNetwork" not in spec
    assert "hostPID" not in spec
    assert "tolerations" not in spec
    init_mounts = {m["name"] for m in spec["initContainers"][0]["volumeMounts"]}
    assert not {"mqtt-credentials", "mqtt-ca"} & init_mounts, "the validator never talks to the broker"
    for container in containers(pod):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 65532
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
        assert container["terminationMessagePath"] == "/dev/termination-log"
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        for env in container["env"]:
            secretish = any(word in env["name"] for word in ("KEY", "PASSWORD", "USERNAME", "TOKEN"))
            assert not secretish or env["name"].endswith("_FILE"), f"{env['name']} must be a file path"


def test_coral_pod_asks_for_one_tpu_and_the_edgetpu_image() -> None:
    pod = coral_pod()
    for container in containers(pod):
        assert container["image"] == SETTINGS.edgetpu_image
        assert container["resources"]["limits"]["squat.ai/coral"] == "1"
    assert all("squat.ai/coral" not in c["resources"]["limits"] for c in containers(cpu_pod()))
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["coral-gw-2.hall-b"]
    other = OperatorSettings(coral_resource_name="coral.ai/tpu")
    limits = build_serving_pod("m", "ns", UID, CORAL, "n", other)["spec"]["containers"][0]["resources"][
        "limits"
    ]
    assert limits["coral.ai/tpu"] == "1"


def test_a_private_broker_ca_reaches_the_serve_container_as_a_file() -> None:
    pod = coral_pod()
    serve = pod["spec"]["containers"][0]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["mqtt-ca"]["secret"]["secretName"] == "hall-b-ca"
    assert volumes["mqtt-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    mount = next(m for m in serve["volumeMounts"] if m["name"] == "mqtt-ca")
    assert env_of(serve, "n")["VIBRATION_MQTT_CA_FILE"] == f"{mount['mountPath']}/ca.crt"
    assert "mqtt-ca" not in {v["name"] for v in cpu_pod()["spec"]["volumes"]}


@pytest.mark.parametrize("client", ["wire", "paho"])
def test_the_mqtt_client_of_the_spec_is_the_one_serve_runs(
    client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = CPU.model_copy(update={"mqtt": CPU.mqtt.model_copy(update={"client": client})})
    assert serve_settings_of(spec, monkeypatch).mqtt_client == client
    assert CPU.mqtt.client == "wire", "the default"


def serve_settings_of(spec: VibrationModelSpec, monkeypatch: pytest.MonkeyPatch) -> ServeSettings:
    """The settings the serving container of `spec`'s pod on edge-1 reads from its environment."""
    serve = build_serving_pod("spindle-classifier", "hall-a", UID, spec, "edge-1", SETTINGS)["spec"][
        "containers"
    ][0]
    for key in list(os.environ):
        if key.startswith("VIBRATION_"):
            monkeypatch.delenv(key)
    for key, value in env_of(serve, "edge-1").items():
        monkeypatch.setenv(key, value)
    return ServeSettings()


def test_the_alert_classes_of_the_spec_reach_the_serving_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    default = AlertPolicy.from_settings(serve_settings_of(CPU, monkeypatch))
    assert (default.normal_labels, default.alert_labels) == (frozenset({"normal"}), None)
    assert default.severity_of("bearing_fault") == "critical"
    assert default.severity_of("imbalance") == "warning"
    alerts = AlertSpec(
        normal_labels=["healthy", "idle"], alert_labels=["bearing"], critical_labels=["bearing"]
    )
    policy = AlertPolicy.from_settings(
        serve_settings_of(CPU.model_copy(update={"alerts": alerts}), monkeypatch)
    )
    assert policy.normal_labels == frozenset({"healthy", "idle"})
    assert policy.alert_labels == frozenset({"bearing"})
    assert policy.severity_of("bearing") == "critical"
    assert policy.severity_of("bearing_fault") == "warning", "the default critical class is replaced"
    # The defaults leave the environment (and so the pod spec's hash) as it was.
    serve = build_serving_pod("spindle-classifier", "hall-a", UID, CPU, "edge-1", SETTINGS)["spec"][
        "containers"
    ][0]
    assert not {"VIBRATION_NORMAL_LABELS", "VIBRATION_ALERT_LABELS", "VIBRATION_ALERT_SEVERITY"} & set(
        env_of(serve, "edge-1")
    )


def test_every_pod_of_a_vibrationmodel_is_in_its_one_mqtt_share_group() -> None:
    def group(vm_name: str, spec: VibrationModelSpec, node: str) -> str:
        serve = build_serving_pod(vm_name, "hall-a", UID, spec, node, SETTINGS)["spec"]["containers"][0]
        return env_of(serve, node)["VIBRATION_MQTT_SHARE_GROUP"]

    assert {group("spindle-classifier", CPU, node) for node in ("edge-1", "edge-2")} == {"spindle-classifier"}
    assert group("spindle-classifier-tpu", CORAL, "coral-gw-2.hall-b") == "spindle-classifier-tpu"
    # A Kubernetes name may run to 253 characters; serve takes a group of 128 at most.
    longest = "m" * 253
    assert names.share_group(longest) != names.share_group(longest[:-1])
    for vm_name in (longest, "a.b-c"):
        shortened = names.share_group(vm_name)
        assert ServeSettings(model_id="x", mqtt_share_group=shortened).mqtt_share_group == shortened


def test_a_pod_from_another_pod_spec_is_marked_outdated_and_a_new_version_is_not() -> None:
    built = cpu_pod()
    hall_b_broker = CPU.model_copy(
        update={"mqtt": CPU.mqtt.model_copy(update={"broker": "mqtt://other:1883"})}
    )
    newer_version = CPU.model_copy(update={"version": "v4"})
    unannotated = json.loads(json.dumps(built))
    del unannotated["metadata"]["annotations"][names.ANNOTATION_POD_SPEC_HASH]
    cases = [
        (CPU, built, False),
        (newer_version, built, False),
        (hall_b_broker, built, True),
        (CPU, unannotated, True),
    ]
    for spec, pod, outdated in cases:
        observed = [NodeObservation("edge-1", pod_exists=True)]
        (marked,) = with_outdated_pods(
            observed, {"edge-1": pod}, "spindle-classifier", "hall-a", UID, spec, SETTINGS
        )
        assert marked.pod_outdated is outdated, (spec.mqtt.broker, spec.version)
    (gone,) = with_outdated_pods(
        [NodeObservation("edge-1")], {}, "spindle-classifier", "hall-a", UID, CPU, SETTINGS
    )
    assert not gone.pod_outdated, "no pod, nothing to replace"
    leaving = [NodeObservation("edge-1", selected=False, pod_exists=True)]
    (left,) = with_outdated_pods(
        leaving, {"edge-1": built}, "spindle-classifier", "hall-a", UID, hall_b_broker, SETTINGS
    )
    assert not left.pod_outdated, "a node leaving the hall loses its pod anyway"


def test_a_pod_being_deleted_is_observed_as_terminating() -> None:
    pod = cpu_pod()
    assert not observe_node("edge-1", selected=True, pod=pod, configmap=None, pod_status=None).pod_terminating
    pod["metadata"]["deletionTimestamp"] = "2026-12-05T18:00:00Z"
    assert observe_node("edge-1", selected=True, pod=pod, configmap=None, pod_status=None).pod_terminating


def test_pod_is_version_agnostic() -> None:
    text = json.dumps(cpu_pod())
    for version_specific in ("v3", CPU.artifact.uri, str(CPU.artifact.sha256), "0.93"):
        assert version_specific not in text
    newer = CPU.model_copy(
        update={"version": "v4", "validation": CPU.validation.model_copy(update={"min_accuracy": 0.5})}
    )
    assert build_serving_pod("spindle-classifier", "hall-a", UID, newer, "edge-1", SETTINGS) == cpu_pod()


def env_of(container: dict[str, Any], node: str, namespace: str = "hall-a") -> dict[str, str]:
    """The container's environment as the kubelet sets it on `node`, the downward API's fields filled in."""
    fields = {"spec.nodeName": node, "metadata.namespace": namespace}
    out = {}
    for env in container["env"]:
        out[env["name"]] = (
            fields[env["valueFrom"]["fieldRef"]["fieldPath"]] if "valueFrom" in env else env["value"]
        )
    return out


@pytest.mark.parametrize("build", [cpu_pod, coral_pod], ids=["cpu", "coral"])
def test_environment_is_what_the_inference_settings_read(build: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pod = build()
    init, serve = pod["spec"]["initContainers"][0], pod["spec"]["containers"][0]
    for container, settings_class in ((init, ValidateSettings), (serve, ServeSettings)):
        env = env_of(container, "edge-1", pod["metadata"]["namespace"])
        fields = {f"VIBRATION_{name.upper()}" for name in settings_class.model_fields}
        assert set(env) - {"NODE_NAME", "POD_NAMESPACE"} <= fields, set(env) - fields
        for key in list(os.environ):
            if key.startswith("VIBRATION_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # The model comes from the target file: --target for validate, target_file for serve.
        parsed = (
            ValidateSettings(target=Path(TARGET_FILE))  # type: ignore[call-arg]  # test_data: from the env
            if settings_class is ValidateSettings
            else ServeSettings()
        )
        assert parsed.node_name == "edge-1"
        assert parsed.namespace == pod["metadata"]["namespace"]  # with the model's name, its cache slot
        assert str(parsed.cache_dir) == "/var/cache/vibration-edge"
    served = ServeSettings()
    assert served.client_id == pod["metadata"]["name"]
    assert served.mqtt_share_group == pod["metadata"]["labels"][names.LABEL_MODEL]
    assert str(served.target_file) == "/etc/vibration-edge/target/target.json"


def test_the_pod_tests_drift_with_the_specs_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    drift = {"window": 800, "featurePsi": 0.07, "classPsi": 0.2, "pValue": 0.05, "baselineWindows": 5000,
             "raiseAfter": 4, "clearAfter": 6}  # fmt: skip
    spec = CPU.model_copy(update={"drift": DriftSpec.model_validate(drift)})
    assert serve_settings_of(spec, monkeypatch).drift_policy == DriftPolicy(
        window=800, feature_psi=0.07, class_psi=0.2, p_value=0.05, baseline_windows=5000, raise_after=4,
        clear_after=6,
    )  # fmt: skip


def test_the_pod_batches_with_the_specs_deadline_and_an_unset_one_changes_no_pod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = CPU.model_copy(update={"serving": ServingSpec(batch_deadline_ms=5)})
    assert serve_settings_of(held, monkeypatch).batch_deadline_ms == 5.0
    assert serve_settings_of(CPU, monkeypatch).batch_deadline_ms == 0.0
    # 0 (the default) adds nothing to the pod, so its spec hash, and the pods serving, stay.
    unset = CPU.model_copy(update={"serving": ServingSpec(batch_deadline_ms=0)})
    assert build_serving_pod("spindle-classifier", "hall-a", UID, unset, "edge-1", SETTINGS) == cpu_pod()
    changed = build_serving_pod("spindle-classifier", "hall-a", UID, held, "edge-1", SETTINGS)
    assert changed["metadata"]["annotations"] != cpu_pod()["metadata"]["annotations"]


def test_the_specs_drift_defaults_are_the_monitors() -> None:
    spec, policy = DriftSpec(), DriftPolicy()
    shared = (
        "window",
        "feature_psi",
        "class_psi",
        "p_value",
        "baseline_windows",
        "raise_after",
        "clear_after",
    )
    assert {name: getattr(spec, name) for name in shared} == {name: getattr(policy, name) for name in shared}


@pytest.mark.parametrize("build", [cpu_pod, coral_pod], ids=["cpu", "coral"])
def test_the_init_container_runs_the_validator_on_the_target(
    build: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    init = build()["spec"]["initContainers"][0]
    for key in list(os.environ):
        if key.startswith("VIBRATION_"):
            monkeypatch.delenv(key)
    for key, value in env_of(init, "edge-1").items():
        monkeypatch.setenv(key, value)
    assert init["command"] == ["vibration-infer"]
    settings = parse_validate_args(init["args"])  # the validator's own flag parser
    assert settings.target == Path(TARGET_FILE)
    assert settings.fallback_last_good
    assert settings.model_uri is None


def test_the_target_document_is_what_the_pod_parses_and_round_trips(tmp_path: Path) -> None:
    target = ModelTarget.from_spec("spindle-classifier", CPU)
    configmap = build_target_configmap("spindle-classifier", "hall-a", UID, "edge-1", target, ACTIVE)
    (tmp_path / "target.json").write_text(configmap["data"]["target.json"])
    parsed = load_target(tmp_path / "target.json")  # what `validate --target` and the hot swap read
    assert parsed == target
    assert (parsed.model_uri, parsed.sha256, parsed.min_accuracy) == (
        CPU.artifact.uri,
        CPU.artifact.sha256,
        0.93,
    )
    assert parsed.min_class_recall == {"bearing_fault": 0.95}
    assert configmap["data"]["target.json"] == target_document(target)
    assert read_target_configmap(configmap) == (target, ACTIVE)
    assert read_target_configmap(None) == (None, None)
    configmap["metadata"]["annotations"][names.ANNOTATION_TARGET] = "{not json"
    assert read_target_configmap(configmap) == (None, ACTIVE)


def test_names_are_dns_safe_deterministic_and_distinct() -> None:
    assert names.serving_pod_name("spindle", "edge-1") == "vibm-spindle-edge-1"
    long = names.serving_pod_name("a" * 60, "gateway-with-a-long-name.hall-a.factory.example")
    assert len(long) <= 63
    assert long == names.serving_pod_name("a" * 60, "gateway-with-a-long-name.hall-a.factory.example")
    assert names.serving_pod_name("m", "edge.1") != names.serving_pod_name("m", "edge-1")
    assert names.target_configmap_name("m", "edge-1") == "vibm-m-edge-1-target"
    for name in (long, names.serving_pod_name("m", "edge.1"), names.target_configmap_name("x" * 80, "y")):
        assert len(name) <= 63
        assert name[0].isalnum()
        assert name[-1].isalnum()
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert names.label_value("edge-1") == "edge-1"
    assert len(names.label_value("n" * 200)) <= 63
    assert names.label_value("-" * 5)[0].isalnum()
    labels = names.serving_labels("spindle", "edge-1")
    assert labels["app.kubernetes.io/managed-by"] == "vibration-operator"
    assert labels["edge.vibration.io/node"] == "edge-1"


def test_event_name_follows_its_content() -> None:
    event = Event("Normal", "Promoted", "x" * 5000)
    body = build_event("m", "ns", UID, event, NOW)
    assert body == build_event("m", "ns", UID, event, NOW)
    assert (
        body["metadata"]["name"]
        != build_event("m", "ns", UID, event, datetime(2027, 1, 1, tzinfo=UTC))["metadata"]["name"]
    )
    assert len(body["message"]) == 1024
    assert body["involvedObject"]["uid"] == UID


def test_observe_node_reads_the_pod_configmap_and_status() -> None:
    report = CompactReport(
        outcome="failed", code=14, reason="accuracy 0.81 < min 0.93", version="v3", sha256="cd" * 32
    )
    pod = {
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "initContainerStatuses": [
                {
                    "name": "validate",
                    "state": {"terminated": {"exitCode": 0, "message": report.encode().decode()}},
                }
            ],
            "containerStatuses": [
                {"name": "serve", "state": {"running": {"startedAt": "2026-12-06T10:00:00Z"}}}
            ],
        }
    }
    status = ModelStatus(
        node="edge-1",
        version="v2",
        sha256="ab" * 32,
        state="serving",
        ready=True,
        windows_total=1,
        errors_total=0,
        candidate_version="v3",
        candidate_sha256="cd" * 32,
        candidate_state="failed",
        candidate_report=report,
        updated_ns=1,
    )
    configmap = build_target_configmap(
        "m", "ns", UID, "edge-1", ModelTarget.from_spec("spindle-classifier", CPU), ACTIVE
    )
    obs = observe_node("edge-1", selected=True, pod=pod, configmap=configmap, pod_status=status)
    assert (obs.pod_exists, obs.ready, obs.init_exit_code, obs.init_report) == (True, True, 0, report)
    assert obs.serve_started
    assert obs.serving is not None
    assert obs.serving.version == "v2"
    assert obs.candidate is not None
    assert (obs.candidate.state, obs.candidate.report) == ("failed", report)
    assert obs.assigned == ModelTarget.from_spec("spindle-classifier", CPU)
    assert obs.recorded_active == ACTIVE

    crashed = {
        "status": {
            "initContainerStatuses": [
                {"name": "validate", "lastState": {"terminated": {"exitCode": 137, "message": "OOMKilled"}}}
            ]
        }
    }
    seen = observe_node("edge-1", selected=False, pod=crashed, configmap=None, pod_status=None)
    assert (seen.init_report, seen.init_exit_code, seen.ready, seen.serving) == (None, 137, False, None)
    assert not seen.serve_started
    assert (
        observe_node("edge-9", selected=True, pod=None, configmap=None, pod_status=None).pod_exists is False
    )


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBRATION_OPERATOR_NAMESPACES", "hall-a, hall-b")
    monkeypatch.setenv("VIBRATION_OPERATOR_CORAL_RESOURCE_NAME", "coral.ai/tpu")
    monkeypatch.setenv("VIBRATION_OPERATOR_SERVING_LIMITS", '{"cpu": "2", "memory": "1Gi"}')
    settings = OperatorSettings()
    assert settings.watched_namespaces() == ["hall-a", "hall-b"]
    assert settings.coral_resource_name == "coral.ai/tpu"
    assert settings.serving_limits == {"cpu": "2", "memory": "1Gi"}
    monkeypatch.delenv("VIBRATION_OPERATOR_NAMESPACES")
    monkeypatch.setenv("POD_NAMESPACE", "vibration-system")
    assert OperatorSettings().watched_namespaces() == ["vibration-system"]
    assert OperatorSettings(cluster_wide=True).watched_namespaces() is None
    monkeypatch.delenv("POD_NAMESPACE")
    with pytest.raises(ValueError, match="POD_NAMESPACE"):
        OperatorSettings().watched_namespaces()


def test_an_orphaned_pod_is_adopted_and_one_another_controller_owns_is_not() -> None:
    ours = owner_reference("spindle-classifier", "uid-new")
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "uid-x"}  # not a controller
    assert adoption_patch({"metadata": {}}, ours) == {"metadata": {"ownerReferences": [ours]}}
    kept = adoption_patch({"metadata": {"ownerReferences": [other]}}, ours)
    assert kept == {"metadata": {"ownerReferences": [other, ours]}}
    assert adoption_patch({"metadata": {"ownerReferences": [ours]}}, ours) == {}
    theirs = {**ours, "uid": "uid-old"}
    assert adoption_patch({"metadata": {"ownerReferences": [theirs]}}, ours) == {}
