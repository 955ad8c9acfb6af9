"""`make demo-k8s`: valid manifests, chart values that render, and the story on a real cluster.

Without a cluster, ``--dry-run`` prints every command and writes the
manifests; these are validated against the Kubernetes schemas and the chart
is rendered by the real helm with the demo's values. With ``KUBECONFIG``
the whole story runs (marker ``e2e``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import demo_k8s_cluster
import demo_k8s_objects as objects
from demo_k8s import free_gateway
from demo_k8s_cluster import MIN_ACCURACY, Cluster, DemoError
from demo_k8s_models import hold_to_the_halls_bar, publish_args
from vibration_core.spec import ValidationSpec, VibrationModel
from vibration_testkit.helm import CHART, of_kind, run_helm
from vibration_testkit.s3 import ACCESS_KEY, SECRET_KEY, make_model_dir, running_moto

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "demo_k8s.py"
STEPS = [
    "kubectl get nodes -l edge.vibration.io/hall=hall-test",
    "rollout status deployment/minio",
    "get job/seed-testdata-",
    "helm upgrade --install hall-test",
    "vibration-train fit",
    "kubectl port-forward -n hall-test svc/minio",
    "--node-endpoint http://minio.hall-test:9000",
    "--mqtt-broker mqtt://hall-test-vibration-edge-mosquitto.hall-test:1883",
    "--for=condition=Degraded=True",
    "get events",
]


def run_demo(out: Path, *flags: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--hall", "hall-test", "--out", str(out), *flags],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo-k8s")
    return run_demo(out, "--dry-run", "--image-registry", "registry.example:5000/ve"), out


def manifests(out: Path) -> list[dict[str, Any]]:
    return [doc for path in sorted(out.glob("*.yaml")) if path.name != "values.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]  # fmt: skip


def test_the_dry_run_prints_every_step_in_order(
    dry_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, _ = dry_run
    assert done.returncode == 0, done.stderr
    positions = [done.stdout.find(step) for step in STEPS]
    assert -1 not in positions, [s for s, p in zip(STEPS, positions, strict=True) if p == -1]
    assert positions == sorted(positions)
    assert "dry run: nothing was applied" in done.stdout


def test_the_manifests_are_valid_kubernetes(dry_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = dry_run
    written = manifests(out)
    assert {o["kind"] for o in written} == {"Namespace", "Deployment", "Service", "Job"}
    for obj in written:
        kubernetes_validate.validate(obj, "1.28.0", strict=True)


def test_no_secret_is_left_in_the_output(dry_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = dry_run
    assert not [o for o in manifests(out) if o["kind"] == "Secret"]


def test_the_seed_job_prepares_the_paths_the_serving_pods_use(
    dry_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = dry_run
    (job,) = [o for o in manifests(out) if o["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    values = yaml.safe_load((out / "values.yaml").read_text())
    assert paths["cache"] == values["serving"]["cacheHostPath"]
    assert paths["testdata"] == ValidationSpec().test_data_path  # where the validator looks by default
    script = pod["containers"][0]["command"][-1]
    assert (
        f"chown {objects.SERVING_UID}:{objects.SERVING_UID} /cache" in script
    )  # its own dir, not what is in it
    assert pod["containers"][0]["image"] == "registry.example:5000/ve/vibration-train:0.1.0"


def test_the_chart_renders_with_the_demo_values(
    dry_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = dry_run
    result = run_helm(
        "template", "hall-test", str(CHART), "--namespace", "hall-test", "--values", str(out / "values.yaml")
    )
    assert result.returncode == 0, result.stderr
    rendered = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    images = {
        c["image"]
        for d in of_kind(rendered, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert "registry.example:5000/ve/vibration-operator:0.1.0" in images
    env = {
        e["name"]: e.get("value")
        for d in of_kind(rendered, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    }
    assert "http://minio.hall-test:9000" in env.values()
    assert "registry.example:5000/ve/vibration-infer" in str(env.values())


def test_the_acl_follows_the_halls_topic_tree() -> None:
    acl = objects.acl_for((ROOT / "examples" / "broker" / "aclfile").read_text(), "factory/hall-test")
    assert "factory/hall-a" not in acl
    assert "pattern write factory/hall-test/machines/%u/raw" in acl


@pytest.mark.e2e
@pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set: no cluster to run the demo on"
)
def test_the_demo_runs_on_the_cluster(tmp_path: Path) -> None:
    registry = os.environ.get("VIBRATION_DEMO_IMAGE_REGISTRY", objects.Hall.image_registry)
    done = run_demo(tmp_path, "--image-registry", registry, "--delete", timeout_s=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "v3 applied: Degraded, v2 active" in done.stdout


@pytest.mark.integration
def test_the_published_manifests_select_the_halls_gateways_and_hold_its_bar(tmp_path: Path) -> None:
    # The demo's own publish command line, against a real S3 endpoint (moto) as MinIO's stand-in.
    hall = objects.Hall(name="hall-test", namespace="hall-test")
    make_model_dir(tmp_path / "v1")
    out = tmp_path / "v1.yaml"
    env = {**os.environ, "VIBRATION_S3_ACCESS_KEY": ACCESS_KEY, "VIBRATION_S3_SECRET_KEY": SECRET_KEY}
    with running_moto() as s3:
        command, *args = publish_args(hall, tmp_path / "v1", s3.endpoint, out)
        done = subprocess.run([str(Path(sys.executable).parent / command), *args], env=env,
                              capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr

    manifest = hold_to_the_halls_bar(yaml.safe_load(out.read_text()))

    model = VibrationModel.model_validate(manifest)
    assert model.spec.node_selector == {objects.HALL_LABEL: "hall-test"}
    assert model.spec.validation.min_accuracy == MIN_ACCURACY
    assert model.spec.artifact.endpoint == hall.minio_url
    assert model.spec.mqtt.broker == hall.broker_url
    assert model.metadata["namespace"] == "hall-test"


@pytest.mark.parametrize(
    ("node", "free"),
    [
        ({"metadata": {"name": "gw"}}, True),
        ({"metadata": {"name": "gw", "labels": {objects.HALL_LABEL: "hall-b"}}}, False),
        ({"metadata": {"name": "cp"}, "spec": {"taints": [{"key": "cp", "effect": "NoSchedule"}]}}, False),
        (
            {"metadata": {"name": "gw"}, "spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}},
            True,
        ),
        ({"metadata": {"name": "gw"}, "spec": {"unschedulable": True}}, False),
    ],
)
def test_only_free_schedulable_nodes_become_gateways(node: dict[str, Any], free: bool) -> None:  # noqa: FBT001
    assert free_gateway(node) is free


def test_a_command_that_hangs_is_killed_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A training run in the e2e hall's thread, or any kubectl, must not hang the run for good.
    monkeypatch.setattr(demo_k8s_cluster, "COMMAND_TIMEOUT_S", 0.5)
    cluster = Cluster(objects.Hall(name="hall-test", namespace="hall-test"), tmp_path, dry_run=False)
    cluster.kubectl = "/bin/sleep"
    started = time.monotonic()
    with pytest.raises(DemoError, match=r"^kubectl 30 did not end within 0.5 s$"):
        cluster.run("kubectl", "30")
    assert time.monotonic() - started < 10
