"""The e2e hall, set up once for the package with the demo's own steps (``tools/demo_k8s*.py``)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

import demo_k8s_objects as objects
from demo_k8s import gateways, install_chart, preflight, secrets_and_registry, seed_nodes, teardown
from demo_k8s_cluster import Cluster
from demo_k8s_hall import CANARY_CLASSES, SENSOR, Hall, run_or_fail
from demo_k8s_models import publish, train

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

HALL = "hall-e2e"
VERSIONS = ("v1", "v2", "v3", "v4", "v5", "v7")


def _train_all(cluster: Cluster, work: Path) -> None:
    """The demo's v1-v3, then v4, v5 and v7: local work that needs nothing of the cluster."""
    train(cluster, work)
    _train_more(cluster, work)


def _train_more(cluster: Cluster, work: Path) -> None:
    """v4 on windows without bearing faults; v5 and v7 on the hall's history with other seeds."""
    three = work / "three-classes.parquet"
    cluster.run("vibration-train", "simulate", "--windows", "1800", "--seed", "8", "--classes",
                ",".join(CANARY_CLASSES), "--out", str(three), quiet=True)  # fmt: skip
    history = work / "history.parquet"
    for version, source, seed in (("v4", three, "4"), ("v5", history, "5"), ("v7", history, "7")):
        cluster.run("vibration-train", "fit", "--data", str(source), "--out", str(work / version),
                    "--version", version, "--random-state", seed, quiet=True)  # fmt: skip


@pytest.fixture(scope="package")
def hall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hall]:
    out = tmp_path_factory.mktemp("hall-e2e")
    registry = os.environ.get("VIBRATION_E2E_IMAGE_REGISTRY", objects.Hall.image_registry)
    cluster = Cluster(objects.Hall(name=HALL, namespace=HALL, image_registry=registry), out, dry_run=False)
    central = ("kubectl", "delete", "namespace", f"{HALL}-central", "--ignore-not-found")
    run_or_fail(lambda: preflight(cluster, reset=True))
    cluster.run(*central, "--timeout=300s", check=False)  # an earlier run's central broker
    try:
        nodes = run_or_fail(lambda: gateways(cluster))
        if len(nodes) < 2:
            pytest.skip(f"the story needs two gateways (a canary and the rest); the cluster offers {nodes}")
        # The six versions train on this machine while the hall's pods start (a minute or more of
        # each that the other no longer waits for); a failed step still waits for the training.
        with ThreadPoolExecutor(1, thread_name_prefix="e2e-train") as pool:
            trained = pool.submit(_train_all, cluster, out)
            keys, users = run_or_fail(lambda: secrets_and_registry(cluster, out, sensors=(SENSOR,)))
            run_or_fail(lambda: seed_nodes(cluster, nodes, classes={nodes[0]: CANARY_CLASSES}))
            run_or_fail(lambda: install_chart(cluster))
            run_or_fail(trained.result)
        manifests = run_or_fail(lambda: publish(cluster, out, keys, versions=VERSIONS))
        yield Hall(cluster, nodes, keys, users, manifests)
    finally:
        if not os.environ.get("VIBRATION_E2E_KEEP"):
            teardown(cluster)  # also when the set-up failed half-way: no node stays in the hall
            cluster.run(*central, "--wait=false", check=False)
