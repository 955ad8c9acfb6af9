"""Manifests of the serving workload (pod, target ConfigMap, event), as plain dicts.

Pure functions: the same VibrationModel, node and settings give the same
manifest, byte for byte (the golden tests pin them). Nothing version-specific
goes into the pod: which model to serve, and the bar it must pass, are in the
node's target ConfigMap (see `vibration_operator.rollout`), so a rollout
never changes a pod spec. Credentials reach the pod only as mounted Secret
files named by ``*_FILE`` variables, never as values. The environment names
are those of ``vibration_infer.settings.ValidateSettings`` and
``vibration_infer.serve.settings.ServeSettings`` (prefix ``VIBRATION_``).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from vibration_core.api import API_VERSION, KIND
from vibration_core.spec import AlertSpec
from vibration_operator import names

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from vibration_core.spec import VibrationModelSpec
    from vibration_core.target import ModelTarget
    from vibration_operator.conditions import Event
    from vibration_operator.settings import OperatorSettings

TARGET_DIR = "/etc/vibration-edge/target"
TARGET_KEY = "target.json"
TARGET_FILE = f"{TARGET_DIR}/{TARGET_KEY}"
CACHE_DIR = "/var/cache/vibration-edge"
TEST_DATA_DIR = "/var/lib/vibration-edge/testdata"
SECRETS_DIR = "/var/run/secrets/vibration-edge"
TERMINATION_LOG = "/dev/termination-log"
VALIDATE = "validate"
SERVE = "serve"
RUN_AS = 65532
"""The distroless "nonroot" user and group of the inference image."""
_EVENT_MESSAGE_LIMIT = 1024
SERVING_TOLERATIONS: tuple[Mapping[str, Any], ...] = ()
"""The taints a serving pod tolerates: none. A node under disk pressure or tainted for maintenance
would leave its pod Pending, so `vibration_operator.observe` picks no such node for a new pod."""


def owner_reference(vm_name: str, uid: str) -> dict[str, Any]:
    """The VibrationModel as controlling owner: children are garbage-collected with it.

    No ``blockOwnerDeletion``: where the OwnerReferencesPermissionEnforcement admission
    plugin runs (OpenShift, hardened clusters), setting it takes ``update`` on
    ``vibrationmodels/finalizers``, a verb the operator would hold only for that. It only
    matters to a foreground deletion of the VibrationModel, which then need not wait for
    its pods.
    """
    return {"apiVersion": API_VERSION, "kind": KIND, "name": vm_name, "uid": uid, "controller": True}


def _metadata(name: str, namespace: str, vm_name: str, uid: str, node: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": names.serving_labels(vm_name, node),
        "annotations": {names.ANNOTATION_NODE: node},
        "ownerReferences": [owner_reference(vm_name, uid)],
    }


def target_document(target: ModelTarget) -> str:
    """``target.json``: the shared `ModelTarget`, the very model the serving pod parses it with."""
    return json.dumps(
        target.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":")
    )


def _record(target: ModelTarget) -> str:
    return target.model_dump_json(exclude_none=True)


def build_target_configmap(  # noqa: PLR0917 - identity (name, namespace, uid), then content, as every builder
    vm_name: str, namespace: str, uid: str, node: str, target: ModelTarget, active: ModelTarget | None
) -> dict[str, Any]:
    """The node's target ConfigMap: ``target.json`` for the pod, the operator's records as annotations."""
    metadata = _metadata(names.target_configmap_name(vm_name, node), namespace, vm_name, uid, node)
    metadata["annotations"][names.ANNOTATION_TARGET] = _record(target)
    if active is not None:
        metadata["annotations"][names.ANNOTATION_ACTIVE] = _record(active)
    data = {TARGET_KEY: target_document(target)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def restricted_security_context(uid: int = RUN_AS) -> dict[str, Any]:
    """A container security context of the restricted Pod Security profile, as `uid`."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(spec: VibrationModelSpec, settings: OperatorSettings) -> dict[str, str | dict[str, Any]]:
    """The environment both containers share: node, namespace, cache, test data, accelerator, registry."""
    env: dict[str, str | dict[str, Any]] = {
        "NODE_NAME": {"fieldRef": {"fieldPath": "spec.nodeName"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "VIBRATION_CACHE_DIR": CACHE_DIR,
        "VIBRATION_TEST_DATA": TEST_DATA_DIR,
        "VIBRATION_ACCELERATOR": spec.accelerator,
    }
    if endpoint := spec.artifact.endpoint or settings.registry_endpoint:
        env["VIBRATION_S3_ENDPOINT"] = endpoint
    if spec.artifact.credentials_secret:
        env["VIBRATION_S3_ACCESS_KEY_FILE"] = f"{SECRETS_DIR}/s3/accessKey"
        env["VIBRATION_S3_SECRET_KEY_FILE"] = f"{SECRETS_DIR}/s3/secretKey"
    return env


def _serve_env(
    vm_name: str, spec: VibrationModelSpec, node: str, settings: OperatorSettings
) -> dict[str, Any]:
    env: dict[str, str | dict[str, Any]] = {
        "VIBRATION_TARGET_FILE": TARGET_FILE,
        "VIBRATION_MQTT_URL": spec.mqtt.broker,
        "VIBRATION_MQTT_CLIENT": spec.mqtt.client,
        # Every pod of this VibrationModel in one MQTT share group: the broker hands each window to one.
        "VIBRATION_MQTT_SHARE_GROUP": names.share_group(vm_name),
        "VIBRATION_TOPIC_PREFIX": spec.mqtt.topic_prefix,
        # Two models on one node must not share an MQTT session: the pod name is unique and stable.
        "VIBRATION_CLIENT_ID": names.serving_pod_name(vm_name, node),
        "VIBRATION_ALERT_CONFIDENCE": str(spec.alerts.min_confidence),
        "VIBRATION_ALERT_CONSECUTIVE": str(spec.alerts.consecutive),
        # The pod tests drift itself, with the spec's policy; the operator reads its verdict.
        "VIBRATION_DRIFT_WINDOW": str(spec.drift.window),
        "VIBRATION_DRIFT_FEATURE_PSI": str(spec.drift.feature_psi),
        "VIBRATION_DRIFT_CLASS_PSI": str(spec.drift.class_psi),
        "VIBRATION_DRIFT_P_VALUE": str(spec.drift.p_value),
        "VIBRATION_DRIFT_BASELINE_WINDOWS": str(spec.drift.baseline_windows),
        "VIBRATION_DRIFT_RAISE_AFTER": str(spec.drift.raise_after),
        "VIBRATION_DRIFT_CLEAR_AFTER": str(spec.drift.clear_after),
        "VIBRATION_HTTP_PORT": str(settings.http_port),
    }
    env |= _alert_label_env(spec.alerts)
    if spec.serving.batch_deadline_ms:
        # Only when set: a pod spec that did not change keeps its hash, so an operator
        # upgrade replaces no serving pod.
        env["VIBRATION_BATCH_DEADLINE_MS"] = f"{spec.serving.batch_deadline_ms:g}"
    if spec.mqtt.credentials_secret:
        env["VIBRATION_MQTT_USERNAME_FILE"] = f"{SECRETS_DIR}/mqtt/username"
        env["VIBRATION_MQTT_PASSWORD_FILE"] = f"{SECRETS_DIR}/mqtt/password"
    if spec.mqtt.ca_secret:
        env["VIBRATION_MQTT_CA_FILE"] = f"{SECRETS_DIR}/mqtt-ca/ca.crt"
    return env


def _alert_label_env(alerts: AlertSpec) -> dict[str, str]:
    """Which classes alert and how severely, as JSON, each only when it differs from the default.

    Unset, a pod spec keeps its hash, so an operator upgrade replaces no serving pod.
    """
    default = AlertSpec()
    env: dict[str, str] = {}
    if alerts.normal_labels != default.normal_labels:
        env["VIBRATION_NORMAL_LABELS"] = json.dumps(alerts.normal_labels)
    if alerts.alert_labels is not None:
        env["VIBRATION_ALERT_LABELS"] = json.dumps(alerts.alert_labels)
    if alerts.critical_labels != default.critical_labels:
        env["VIBRATION_ALERT_SEVERITY"] = json.dumps(dict.fromkeys(alerts.critical_labels, "critical"))
    return env


def _env_list(env: Mapping[str, str | dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"name": key, "valueFrom": value} if isinstance(value, dict) else {"name": key, "value": value}
        for key, value in env.items()
    ]


def _volumes(
    vm_name: str, spec: VibrationModelSpec, node: str, settings: OperatorSettings
) -> list[dict[str, Any]]:
    configmap = {"name": names.target_configmap_name(vm_name, node), "defaultMode": 0o444}
    volumes: list[dict[str, Any]] = [
        {"name": "target", "configMap": configmap},
        {"name": "testdata", "hostPath": {"path": spec.validation.test_data_path, "type": "Directory"}},
        {"name": "cache", "hostPath": {"path": settings.cache_host_path, "type": "DirectoryOrCreate"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    secrets = (
        ("s3-credentials", spec.artifact.credentials_secret, ("accessKey", "secretKey")),
        ("mqtt-credentials", spec.mqtt.credentials_secret, ("username", "password")),
        ("mqtt-ca", spec.mqtt.ca_secret, ("ca.crt",)),
    )
    for volume, secret, keys in secrets:
        if secret:
            items = [{"key": key, "path": key} for key in keys]
            # 0440 and fsGroup: readable by the pod's group only, never world-readable.
            source = {"secretName": secret, "items": items, "defaultMode": 0o440}
            volumes.append({"name": volume, "secret": source})
    return volumes


def _mounts(spec: VibrationModelSpec, *, mqtt: bool) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "target", "mountPath": TARGET_DIR, "readOnly": True},
        {"name": "testdata", "mountPath": TEST_DATA_DIR, "readOnly": True},
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, private to the pod
    ]
    if spec.artifact.credentials_secret:
        mounts.append({"name": "s3-credentials", "mountPath": f"{SECRETS_DIR}/s3", "readOnly": True})
    if mqtt and spec.mqtt.credentials_secret:  # only the serve container talks to the broker
        mounts.append({"name": "mqtt-credentials", "mountPath": f"{SECRETS_DIR}/mqtt", "readOnly": True})
    if mqtt and spec.mqtt.ca_secret:
        mounts.append({"name": "mqtt-ca", "mountPath": f"{SECRETS_DIR}/mqtt-ca", "readOnly": True})
    return mounts


def _container(
    name: str, args: list[str], spec: VibrationModelSpec, settings: OperatorSettings
) -> dict[str, Any]:
    requests, limits = dict(settings.serving_requests), dict(settings.serving_limits)
    if spec.accelerator == "coral":
        # Both containers ask for the TPU: kubelet hands the init container's device on to the app
        # container of the same pod, so the pod holds exactly one.
        requests[settings.coral_resource_name] = limits[settings.coral_resource_name] = "1"
    return {
        "name": name,
        "image": settings.edgetpu_image if spec.accelerator == "coral" else settings.inference_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["vibration-infer"],
        "args": [*args, "--log-format", settings.log_format],
        "env": _env_list(_env(spec, settings)),
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": _mounts(spec, mqtt=name == SERVE),
        "securityContext": restricted_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def build_serving_pod(  # noqa: PLR0917 - identity (name, namespace, uid), then content, as every builder
    vm_name: str, namespace: str, uid: str, spec: VibrationModelSpec, node: str, settings: OperatorSettings
) -> dict[str, Any]:
    """The serving pod of `vm_name` on `node`: the init container validates, the serve container serves."""
    validate = _container(
        VALIDATE, [VALIDATE, "--target", TARGET_FILE, "--fallback-last-good"], spec, settings
    )
    serve = _container(SERVE, [SERVE], spec, settings)
    serve["env"] += _env_list(_serve_env(vm_name, spec, node, settings))
    serve["ports"] = [{"name": "http", "containerPort": settings.http_port, "protocol": "TCP"}]
    probe = {"port": "http", "scheme": "HTTP"}
    serve["readinessProbe"] = {
        "httpGet": {"path": "/readyz", **probe},
        "periodSeconds": 5,
        "timeoutSeconds": 2,
    }
    serve["livenessProbe"] = {
        "httpGet": {"path": "/healthz", **probe},
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    pod_spec = {
        # metadata.name, not the hostname label: exact even where the two differ, as DaemonSets do.
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                    ]
                }
            }
        },
        "automountServiceAccountToken": False,  # the pods never talk to the API server
        "enableServiceLinks": False,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [validate],
        "containers": [serve],
        "volumes": _volumes(vm_name, spec, node, settings),
    }
    if SERVING_TOLERATIONS:  # absent when none: an empty list would change every pod's hash
        pod_spec["tolerations"] = [dict(t) for t in SERVING_TOLERATIONS]
    metadata = _metadata(names.serving_pod_name(vm_name, node), namespace, vm_name, uid, node)
    metadata["annotations"][names.ANNOTATION_POD_SPEC_HASH] = spec_hash(pod_spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def spec_hash(pod_spec: Mapping[str, Any]) -> str:
    """A short hash of a pod spec, to notice a pod built from an older VibrationModel spec."""
    return hashlib.sha256(json.dumps(pod_spec, sort_keys=True).encode()).hexdigest()[:16]


def build_event(vm_name: str, namespace: str, uid: str, event: Event, now: datetime) -> dict[str, Any]:
    """A core/v1 Event on the VibrationModel; its name is derived from its content, so a retry is a no-op."""
    stamp = now.isoformat().replace("+00:00", "Z")
    key = f"{uid}\0{event.reason}\0{event.message}\0{stamp}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    involved = {"apiVersion": API_VERSION, "kind": KIND, "name": vm_name, "namespace": namespace, "uid": uid}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{vm_name}.{digest}", "namespace": namespace},
        "involvedObject": involved,
        "reason": event.reason,
        "message": event.message[:_EVENT_MESSAGE_LIMIT],
        "type": event.type,
        "source": {"component": names.MANAGED_BY},
        "reportingComponent": names.MANAGED_BY,
        "reportingInstance": names.MANAGED_BY,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
