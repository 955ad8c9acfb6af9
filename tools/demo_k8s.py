"""make demo-k8s: the demo's story on a real cluster (K3s or any Kubernetes 1.28+ given by KUBECONFIG).

Every step prints the command it runs. With ``--dry-run`` nothing touches a
cluster: the commands are printed and every manifest is written under
``demo-output/k8s/`` (the tests validate them). The steps:

1. preflight: KUBECONFIG, kubectl, helm, mosquitto_passwd; the gateways are the
   nodes labelled ``edge.vibration.io/hall=<hall>`` (with none, every node is labelled);
2. the namespace and its Secrets: registry keys, the broker's users and ACLs
   (``examples/broker/aclfile`` for this hall), the serving pods' MQTT user;
3. MinIO in the namespace, the demo's registry;
4. per gateway, a Job that writes a labelled test set into the test-data
   hostPath and hands the cache hostPath to the serving pods' uid;
5. ``helm upgrade --install`` of the chart for the hall;
6. v1, v2 and a v3 trained on shuffled labels, each published to MinIO through
   ``kubectl port-forward``, with manifests that hold the hall's bar (minimum accuracy);
7. v1 applied, Ready; v2 applied, Ready with v2 active; v3 applied, Degraded
   while v2 stays active; v2 applied again (the roll back), Ready.

The images must be pullable by the nodes (``--image-registry``, ``--image-tag``):
build and push them with the commands in the Dockerfiles' headers. Exits 0 only
when every step behaved as expected; ``--delete`` removes the namespace afterwards.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

import demo_k8s_objects as objects
from demo_k8s_cluster import REGISTRY_SECRET, ROOT, SERVING_SECRET, WAIT, Cluster, DemoError
from demo_k8s_models import publish, roll_out, train

HALL_LABEL = objects.HALL_LABEL
DASHBOARD_SECRET = "mqtt-dashboard"  # noqa: S105 - the name of a Secret, not its content


def gateways(cluster: Cluster) -> list[str]:
    """The hall's gateways; with none labelled yet, every schedulable node that belongs to no hall."""
    hall = cluster.hall
    if cluster.dry_run:
        cluster.run("kubectl", "get", "nodes", "-l", f"{HALL_LABEL}={hall.name}")
        return ["gw-1"]
    labelled = cluster.kubectl_json("get", "nodes", "-l", f"{HALL_LABEL}={hall.name}").get("items", [])
    if not labelled:
        free = [node["metadata"]["name"] for node in cluster.kubectl_json("get", "nodes").get("items", [])
                if free_gateway(node)]  # fmt: skip
        if not free:
            raise DemoError(f"no node to make a gateway: label some with {HALL_LABEL}={hall.name}")
        print(f"no node is labelled {HALL_LABEL}={hall.name}; these become its gateways: {', '.join(free)}")
        cluster.run("kubectl", "label", "nodes", *free, f"{HALL_LABEL}={hall.name}")
        labelled = cluster.kubectl_json("get", "nodes", "-l", f"{HALL_LABEL}={hall.name}").get("items", [])
    return sorted(node["metadata"]["name"] for node in labelled)


def free_gateway(node: dict[str, Any]) -> bool:
    """A node that belongs to no hall and takes ordinary pods (no NoSchedule or NoExecute taint)."""
    if HALL_LABEL in (node["metadata"].get("labels") or {}) or node.get("spec", {}).get("unschedulable"):
        return False
    taints = node.get("spec", {}).get("taints") or []
    return not any(taint.get("effect") in {"NoSchedule", "NoExecute"} for taint in taints)


def teardown(cluster: Cluster) -> None:
    """Remove a demo hall: models first (their finalizers need the operator), the release, the namespace.

    Its gateways leave the hall too (the label goes), so the nodes are free for another hall.
    """
    ns = cluster.hall.namespace
    cluster.run(
        "kubectl", "-n", ns, "delete", "vibrationmodels", "--all", "--wait", f"--timeout={WAIT}", check=False
    )
    cluster.run("helm", "uninstall", cluster.hall.name, "--namespace", ns, "--wait", check=False)
    cluster.run("kubectl", "delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
    cluster.run("kubectl", "label", "nodes", "-l", f"{HALL_LABEL}={cluster.hall.name}", f"{HALL_LABEL}-",
                check=False)  # fmt: skip


def preflight(cluster: Cluster, *, reset: bool) -> None:
    """Everything the demo needs before it changes anything (with `reset`, an earlier run is removed)."""
    missing = [tool for tool in ("kubectl", "mosquitto_passwd") if shutil.which(tool) is None]
    if not Path(cluster.helm).is_file() and shutil.which("helm") is None:
        missing.append("helm (tools/ensure-helm.sh installs it)")
    if cluster.dry_run:
        return
    if not os.environ.get("KUBECONFIG"):
        raise DemoError("KUBECONFIG is not set: point it at the K3s cluster (e.g. /etc/rancher/k3s/k3s.yaml)")
    if missing:
        raise DemoError(f"missing on this machine: {', '.join(missing)}")
    cluster.run("kubectl", "version")
    if reset:
        teardown(cluster)
        wait_gone(cluster)
    found = cluster.run(
        "kubectl", "get", "namespace", cluster.hall.namespace, "--ignore-not-found", quiet=True
    )
    if found.strip():
        # Its MinIO and broker hold the old run's credentials; new Secrets would lock the demo out.
        raise DemoError(
            f"namespace {cluster.hall.namespace} exists (an earlier run?): add --reset to remove it first, "
            "or choose another --hall"
        )


def secrets_and_registry(
    cluster: Cluster, work: Path, sensors: tuple[str, ...] = ()
) -> tuple[dict[str, str], dict[str, str]]:
    """The namespace, its Secrets and MinIO; returns the publisher's registry keys and the MQTT users.

    Each of `sensors` (machine ids) gets a broker user of that name, which the hall's ACL lets
    write that machine's raw topic only.
    """
    hall = cluster.hall
    keys = {"accessKey": "demo-" + secrets.token_hex(4), "secretKey": secrets.token_urlsafe(24)}
    users = {"serving": secrets.token_urlsafe(18), "dashboard": secrets.token_urlsafe(18)}
    users |= {sensor: secrets.token_urlsafe(18) for sensor in sensors}
    passwords = work / "passwordfile"
    passwords.write_text("")
    for user, password in users.items():
        if not cluster.dry_run:
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
    acl = objects.acl_for((ROOT / "examples" / "broker" / "aclfile").read_text(), hall.topic_prefix)
    shown = {"accessKey": keys["accessKey"], "secretKey": "(hidden)"}
    cluster.apply("namespace", [objects.namespace(hall)])
    cluster.apply(
        "secrets",
        [
            objects.secret(hall, REGISTRY_SECRET, keys),
            objects.secret(
                hall, f"{hall.name}-mqtt-users", {"passwordfile": passwords.read_text(), "aclfile": acl}
            ),
            objects.secret(hall, SERVING_SECRET, {"username": "serving", "password": users["serving"]}),
            objects.secret(hall, DASHBOARD_SECRET, {"username": "dashboard", "password": users["dashboard"]}),
        ],
        private=work,  # a temporary directory: the passwords are not left in demo-output
    )
    print(f"registry keys: {shown}; MQTT users in the Secrets {SERVING_SECRET} and {DASHBOARD_SECRET}")
    cluster.apply("minio", objects.minio(hall, REGISTRY_SECRET))
    cluster.run("kubectl", "-n", hall.namespace, "rollout", "status", "deployment/minio", f"--timeout={WAIT}")
    return keys, users


def seed_nodes(cluster: Cluster, nodes: list[str], classes: dict[str, tuple[str, ...]] | None = None) -> None:
    """A test set on every gateway and its cache made ready, by one Job per node.

    `classes` limits a node's test set to some classes (every class for a node it leaves out).
    """
    hall, classes = cluster.hall, classes or {}
    jobs = [
        objects.seed_job(hall, node, seed=100 + i, classes=classes.get(node, ()))
        for i, node in enumerate(nodes)
    ]
    cluster.apply("seed-jobs", jobs)
    for job in jobs:
        wait_job(cluster, job["metadata"]["name"])


def wait_job(cluster: Cluster, name: str, timeout_s: float = 600) -> None:
    """Until the Job completes; a failed Job fails at once, with the end of its pod's log."""
    ns = cluster.hall.namespace
    cluster.run("kubectl", "-n", ns, "get", f"job/{name}")
    deadline = time.monotonic() + timeout_s
    while not cluster.dry_run:
        conditions = (
            cluster.kubectl_json("-n", ns, "get", f"job/{name}").get("status", {}).get("conditions", [])
        )
        done = {c["type"] for c in conditions if c.get("status") == "True"}
        if "Complete" in done:
            return
        if "Failed" in done or time.monotonic() > deadline:
            said = cluster.run(
                "kubectl", "-n", ns, "logs", f"job/{name}", "--tail=20", check=False, quiet=True
            )
            why = "failed" if "Failed" in done else f"did not complete within {timeout_s:.0f} s"
            raise DemoError(f"job {name} {why}; its log ends:\n{said.strip() or '(empty)'}")
        time.sleep(2)


def install_chart(cluster: Cluster) -> None:
    """The chart for the hall: CRD, operator, broker."""
    hall = cluster.hall
    values = objects.chart_values(
        hall, users_secret=f"{hall.name}-mqtt-users", registry_secret=REGISTRY_SECRET
    )
    path = cluster.out / "values.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    cluster.run(
        "helm",
        "upgrade",
        "--install",
        hall.name,
        str(ROOT / "charts" / "vibration-edge"),
        "--namespace",
        hall.namespace,
        "--values",
        str(path),
        "--wait",
        f"--timeout={WAIT}",
        # Helm 4 applies the chart's CRD server-side; a CRD that another field manager applied
        # before (kubectl apply --server-side, Argo CD, the operator's e2e test) would otherwise
        # refuse the chart's newer schema with a conflict on .spec.versions.
        "--force-conflicts",
    )


def wait_gone(cluster: Cluster, timeout_s: float = 300) -> None:
    """Until the namespace of an earlier run is gone."""
    deadline = time.monotonic() + timeout_s
    ns = cluster.hall.namespace
    while not cluster.dry_run and cluster.run(
        "kubectl", "get", "namespace", ns, "--ignore-not-found", quiet=True
    ):
        if time.monotonic() > deadline:
            raise DemoError(f"namespace {ns} is still terminating after {timeout_s:.0f} s")
        time.sleep(2)


def main() -> int:
    """Run the story on the cluster of KUBECONFIG (or print it with --dry-run)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands and write the manifests")
    parser.add_argument("--hall", default="hall-demo", help="the hall's name, also its namespace")
    parser.add_argument("--image-registry", default=objects.Hall.image_registry, help="where the images are")
    parser.add_argument("--image-tag", default=objects.Hall.image_tag, help="the images' tag")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output" / "k8s", help="manifests go here")
    parser.add_argument("--delete", action="store_true", help="remove the demo hall at the end")
    parser.add_argument("--reset", action="store_true", help="remove an earlier run's demo hall first")
    args = parser.parse_args()
    hall = objects.Hall(
        name=args.hall, namespace=args.hall, image_registry=args.image_registry, image_tag=args.image_tag
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for old in (*args.out.glob("*.yaml"), *args.out.glob("*.log")):  # an earlier run's, and only those
        old.unlink()
    cluster = Cluster(hall, args.out, dry_run=args.dry_run)
    try:
        with tempfile.TemporaryDirectory(prefix="vibration-demo-k8s-") as tmp:
            work = Path(tmp)
            preflight(cluster, reset=args.reset)
            nodes = gateways(cluster)
            print(f"gateways of {hall.name}: {', '.join(nodes)}")
            keys, _ = secrets_and_registry(cluster, work)
            seed_nodes(cluster, nodes)
            install_chart(cluster)
            train(cluster, work)
            shown = roll_out(cluster, publish(cluster, work, keys))
    except DemoError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.delete:
            teardown(cluster)
    print("\n=== Summary" + ("  (dry run: nothing was applied)" if args.dry_run else ""))
    for line in shown:
        print(f"  {line}")
    print(f"  manifests: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
