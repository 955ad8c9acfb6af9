"""The demo-k8s story proper: three versions trained, published, rolled out, one refused, one rolled back."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any

import yaml

import demo_k8s_objects as objects
from demo import write_shuffled
from demo_k8s_cluster import MIN_ACCURACY, MODEL, REGISTRY_SECRET, SERVING_SECRET, WAIT, Cluster, DemoError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@contextlib.contextmanager
def port_forward(
    cluster: Cluster, service: str = "minio", remote: int = objects.MINIO_PORT, namespace: str | None = None
) -> Iterator[str]:
    """A Service (of the hall, MinIO by default) on a local port through ``kubectl port-forward``.

    Yields ``http://127.0.0.1:PORT``.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["port-forward", "-n", namespace or cluster.hall.namespace, f"svc/{service}", f"{port}:{remote}"]
    print(f"$ kubectl {' '.join(args)} &", flush=True)
    if cluster.dry_run:
        yield f"http://127.0.0.1:{port}"
        return
    log = cluster.out / f"port-forward-{service}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([cluster.kubectl, *args], stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                said = log.read_text(errors="replace").strip()[-500:]
                raise DemoError(f"kubectl port-forward to {service} did not come up: {said or 'no output'}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def train(cluster: Cluster, work: Path) -> None:
    """v1 and v2 on the hall's history, v3 on the same windows with shuffled labels."""
    history, shuffled = work / "history.parquet", work / "shuffled.parquet"
    cluster.run("vibration-train", "simulate", "--windows", "2400", "--seed", "7", "--out", str(history))
    if not cluster.dry_run:
        write_shuffled(history, shuffled)
    for version, source, seed in (("v1", history, "0"), ("v2", history, "1"), ("v3", shuffled, "2")):
        cluster.run(
            "vibration-train",
            "fit",
            "--data",
            str(source),
            "--out",
            str(work / version),
            "--version",
            version,
            "--random-state",
            seed,
            quiet=True,
        )


def publish_args(hall: objects.Hall, model_dir: Path, endpoint: str, out: Path) -> list[str]:
    """``vibration-train publish`` of one version to the hall's MinIO, reached at `endpoint`."""
    return [
        "vibration-train", "publish", str(model_dir), "--registry", "s3://models", "--endpoint", endpoint,
        "--create-bucket", "--node-endpoint", hall.minio_url, "--credentials-secret", REGISTRY_SECRET,
        "--namespace", hall.namespace, "--node-selector", f"{objects.HALL_LABEL}={hall.name}",
        "--mqtt-broker", hall.broker_url, "--topic-prefix", hall.topic_prefix,
        "--mqtt-credentials-secret", SERVING_SECRET, "--manifest-out", str(out),
    ]  # fmt: skip


def hold_to_the_halls_bar(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with the hall's minimum accuracy on top of the default gate (a hall's own bar)."""
    spec = {
        **manifest["spec"],
        "validation": {**manifest["spec"].get("validation", {}), "minAccuracy": MIN_ACCURACY},
    }
    return {**manifest, "spec": spec}


def publish(
    cluster: Cluster, work: Path, keys: dict[str, str], versions: tuple[str, ...] = ("v1", "v2", "v3")
) -> dict[str, Path]:
    """Each version (trained into WORK/VERSION) into MinIO; the manifests, with the hall's bar, in `out`."""
    manifests = {}
    os.environ["VIBRATION_S3_ACCESS_KEY"] = keys["accessKey"]
    os.environ["VIBRATION_S3_SECRET_KEY"] = keys["secretKey"]
    with port_forward(cluster) as endpoint:
        for version in versions:
            out = cluster.out / f"{MODEL}-{version}.yaml"
            cluster.run(*publish_args(cluster.hall, work / version, endpoint, out), quiet=True)
            if not cluster.dry_run:
                manifest = hold_to_the_halls_bar(yaml.safe_load(out.read_text()))
                out.write_text(yaml.safe_dump(manifest, sort_keys=False))
            manifests[version] = out
    return manifests


def wait_for(cluster: Cluster, kind: str, active: str, timeout_s: float = 600) -> dict[str, Any]:
    """Until the status describes the current spec: condition `kind` True and `active` serving."""
    ns = cluster.hall.namespace
    # What a person types; the loop below also checks that the status is about this generation.
    cluster.run("kubectl", "-n", ns, "wait", f"vibrationmodel/{MODEL}", f"--for=condition={kind}=True",
                f"--timeout={WAIT}", quiet=True)  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while not cluster.dry_run:
        obj = cluster.kubectl_json("-n", ns, "get", f"vibrationmodel/{MODEL}")
        status = obj.get("status") or {}
        if settled(obj, kind, active):
            return status
        if time.monotonic() > deadline:
            raise DemoError(
                f"{MODEL} did not reach {kind} with {active} active within {timeout_s:.0f} s: "
                f"phase {status.get('phase')}, active {(status.get('active') or {}).get('version')}, "
                f"{kind}: {condition(obj, kind).get('message', 'not set')}"
            )
        time.sleep(2)
    return {}


def settled(vm: dict[str, Any], kind: str, active: str) -> bool:
    """The status describes the current generation: condition `kind` True, `active` the active version."""
    generation, status = vm["metadata"].get("generation"), vm.get("status") or {}
    now = condition(vm, kind)
    return (
        status.get("observedGeneration") == generation
        and now.get("status") == "True"
        and now.get("observedGeneration") == generation
        and (status.get("active") or {}).get("version") == active
    )


def condition(vm: dict[str, Any], kind: str) -> dict[str, Any]:
    """One condition of the status ({} when absent)."""
    found: dict[str, Any] = next(
        (c for c in (vm.get("status") or {}).get("conditions", []) if c["type"] == kind), {}
    )
    return found


def roll_out(cluster: Cluster, manifests: dict[str, Path]) -> list[str]:
    """v1, v2, the bad v3, and the roll back to v2; what each step showed."""
    ns, shown = cluster.hall.namespace, []
    steps = (("v1", "Ready", "v1"), ("v2", "Ready", "v2"), ("v3", "Degraded", "v2"), ("v2", "Ready", "v2"))
    for version, condition, active in steps:
        cluster.run("kubectl", "apply", "-f", str(manifests[version]))
        status = wait_for(cluster, condition, active)
        cluster.run("kubectl", "-n", ns, "get", "vibrationmodels")
        said = "; ".join(c.get("message", "") for c in status.get("conditions", []) if c["type"] == condition)
        shown.append(
            f"{version} applied: {condition}, {active} active" + (f" ({said[:160]})" if said else "")
        )
    cluster.run("kubectl", "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={MODEL}")
    return shown
