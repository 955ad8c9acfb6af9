"""The VibrationModel builder, and the training Job and image that produce models."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vibration_core.modelcard import ModelCard
from vibration_core.spec import VibrationModel
from vibration_operator.crd import build_crd
from vibration_testkit.apiserver_like import validate
from vibration_testkit.cards import card_dict
from vibration_train.manifest import API_VERSION, KIND, build_manifest, to_yaml

TRAINING_JOB = Path(__file__).resolve().parents[2] / "training-job"
URI = "s3://models/spindle-classifier/v3/model.onnx"


def card(**changes: Any) -> ModelCard:
    digest = hashlib.sha256(b"model").hexdigest()
    return ModelCard.model_validate(card_dict(digest, 5, **changes))


def test_manifest_points_at_the_artifact_with_the_cards_digest_and_version() -> None:
    model = card()

    manifest = build_manifest(model, URI)

    assert manifest == {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "spindle-classifier"},
        "spec": {
            "version": "v3",
            "artifact": {"uri": URI, "sha256": model.artifact.sha256},
            "format": "onnx",
            "accelerator": "cpu",
            "mqtt": {"broker": "mqtt://mosquitto:1883", "topicPrefix": "factory/hall-a"},
        },
    }
    assert API_VERSION == "edge.vibration.io/v1alpha1"
    assert KIND == "VibrationModel"


def test_optional_fields_appear_only_when_given() -> None:
    manifest = build_manifest(
        card(),
        URI,
        name="line-3",
        namespace="hall-a",
        credentials_secret="minio-credentials",  # noqa: S106 (a Secret's name, not a password)
        endpoint="http://minio.minio:9000",
    )

    assert manifest["metadata"] == {"name": "line-3", "namespace": "hall-a"}
    assert manifest["spec"]["artifact"]["credentialsSecret"] == "minio-credentials"
    assert manifest["spec"]["artifact"]["endpoint"] == "http://minio.minio:9000"


@pytest.mark.parametrize(("fmt", "accelerator"), [("onnx", "cpu"), ("tflite", "coral"), ("edgetpu", "coral")])
def test_accelerator_follows_the_format(fmt: str, accelerator: str) -> None:
    spec = build_manifest(card(format=fmt), URI)["spec"]
    assert (spec["format"], spec["accelerator"]) == (fmt, accelerator)


def test_no_floor_comes_from_the_models_own_figures() -> None:
    # A model trained on shuffled labels reports about 0.25 on its own held-out split; a floor
    # derived from that would let it through. The default gate applies instead (no validation block).
    shuffled = card()
    spec = build_manifest(shuffled, URI)["spec"]
    assert "validation" not in spec
    parsed = VibrationModel.model_validate(
        {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "x"}, "spec": spec}
    )
    assert (parsed.spec.validation.min_accuracy, parsed.spec.validation.min_macro_f1) == (None, None)


def test_yaml_keeps_the_builders_order_and_round_trips() -> None:
    manifest = build_manifest(card(), URI, namespace="hall-a")

    text = to_yaml(manifest)

    assert yaml.safe_load(text) == manifest
    assert [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")] == [
        "apiVersion",
        "kind",
        "metadata",
        "spec",
    ]
    assert "{" not in text


# --- the training Job and its image ------------------------------------------------------------------


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((TRAINING_JOB / "job.yaml").read_text()))
    assert len(documents) == 1
    document: dict[str, Any] = documents[0]
    return document


def test_job_is_a_batch_v1_job_that_retries_once_and_cleans_up(job: dict[str, Any]) -> None:
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    failing = spec["podFailurePolicy"]["rules"][0]
    assert failing["action"] == "FailJob"
    assert set(failing["onExitCodes"]["values"]) == {2, 3, 4}


def test_job_runs_under_the_restricted_pod_security_profile(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts_by_volume = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert "privileged" not in context
        assert {"requests", "limits"} <= set(container["resources"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert {"/tmp", "/work"} <= set(mounts)  # noqa: S108 (checking the Job mounts an emptyDir there)
        assert all("emptyDir" in mounts_by_volume[mounts[path]] for path in ("/tmp", "/work"))  # noqa: S108


def test_job_trains_then_publishes_with_credentials_from_the_secret(job: dict[str, Any]) -> None:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    script = " ".join(container["command"] + container["args"])
    steps = [m.group(1) for m in re.finditer(r"vibration-train (\w+)", script)]
    assert steps == ["simulate", "fit", "publish"]
    env = {e["name"]: e for e in container["env"]}
    assert env["REGISTRY"]["value"] == "s3://models"
    assert env["S3_ENDPOINT"]["value"] == "http://minio.minio:9000"
    for name in ("VIBRATION_S3_ACCESS_KEY", "VIBRATION_S3_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "minio-credentials"
        assert "value" not in env[name]


def test_image_is_multi_stage_non_root_and_installs_only_the_training_package() -> None:
    dockerfile = (TRAINING_JOB / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert sum(line.startswith("FROM ") for line in instructions) == 2
    assert "COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv" in instructions
    assert "--package vibration-train" in dockerfile
    assert "--extra" not in " ".join(instructions)
    assert "--no-dev" in dockerfile
    assert instructions[-3:] == ["USER 65532:65532", 'ENTRYPOINT ["vibration-train"]', 'CMD ["--help"]']


def test_job_validates_against_the_kubernetes_schema(job: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (the chart checks add it)"
    )
    kubernetes_validate.validate(job, desired_version="1.28", strict=True)


def test_manifest_is_accepted_by_the_generated_crd() -> None:
    assert validate(build_crd(), build_manifest(card(), URI, namespace="hall-a")) == []
