"""A hall on a real cluster, set up as a hall operator would, and what the e2e tests read from it.

Set-up is the demo's (`tools/demo_k8s*.py`): the namespace and its Secrets,
MinIO as the registry, one Job per gateway writing that node's own labelled
test set into its test-data hostPath, the chart installed by helm (the
operator runs in its pod, under the chart's RBAC), models trained here and
published through a port-forward. The first gateway (the canary, in name
order) has a test set without bearing faults, the others have all four
classes: a model that never learnt bearing faults passes the canary and is
refused on the rest.

Reads go through kubectl, as a person would (``kubectl get vibm`` included).
This module lives with the demo's tools because it drives their `Cluster`;
the e2e tests import it as they import the tools (pytest's ``pythonpath``).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from demo_k8s_cluster import Cluster, DemoError
from demo_k8s_models import port_forward, settled
from vibration_operator import names
from vibration_testkit.argocd_health import run_health
from vibration_testkit.hall_mqtt import Dashboard, Sensor

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

MODEL = "spindle-classifier"
SENSOR = "m1"
"""The machine whose sensor publishes (a broker user of that name)."""
CANARY_CLASSES = ("normal", "imbalance", "misalignment")
"""The canary's test set: its machines never showed a bearing fault."""
POLL_S = 1.0
T = TypeVar("T")


class StoryError(AssertionError):
    """The cluster did not reach what a step expected in time (with what it showed last)."""


@dataclass
class Hall:
    """One hall of the e2e run: its cluster door, gateways, credentials and published manifests."""

    cluster: Cluster
    nodes: list[str]
    keys: dict[str, str]
    users: dict[str, str]
    manifests: dict[str, Path] = field(default_factory=dict)

    @property
    def ns(self) -> str:
        """The hall's namespace."""
        return self.cluster.hall.namespace

    def kubectl(self, *args: str, check: bool = True) -> str:
        """Run kubectl in the hall's namespace; its stdout."""
        return self.cluster.run("kubectl", "-n", self.ns, *args, check=check, quiet=True)

    def json(self, *args: str) -> Any:  # noqa: ANN401 - whatever the API server returns
        """``kubectl get ... -o json`` in the hall's namespace, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json") or "{}")

    def apply(self, version: str, **spec: Any) -> int:  # noqa: ANN401 - spec fields of any shape
        """Apply the published manifest of `version` (with `spec` merged in); the new generation."""
        manifest = yaml.safe_load(self.manifests[version].read_text())
        manifest["spec"] |= spec
        path = self.cluster.out / f"apply-{version}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        self.cluster.run("kubectl", "apply", "-f", str(path), quiet=True)
        return int(self.vm()["metadata"]["generation"])

    def vm(self, name: str = MODEL) -> dict[str, Any]:
        """The VibrationModel as the API server has it."""
        obj: dict[str, Any] = self.json(f"vibrationmodel/{name}")
        return obj

    def get_vibm(self) -> dict[str, str]:
        """``kubectl get vibm``: the printer columns of our model, by header."""
        lines = self.kubectl("get", "vibm").splitlines()
        header, row = lines[0].split(), next(line.split() for line in lines[1:] if line.startswith(MODEL))
        return dict(zip(header, row, strict=False))

    def wait(
        self,
        what: str,
        done: Callable[[dict[str, Any]], bool],
        *,
        timeout_s: float = 300,
        each: Callable[[dict[str, Any]], None] | None = None,
        name: str = MODEL,
    ) -> dict[str, Any]:
        """Poll the VibrationModel until `done`; `each` checks every observation on the way."""
        deadline = time.monotonic() + timeout_s
        while True:
            obj = self.vm(name)
            if each is not None:
                each(obj)
            if done(obj):
                return obj
            if time.monotonic() > deadline:
                shown = json.dumps(obj.get("status"), indent=1)[:3000]
                raise StoryError(f"not {what} within {timeout_s:.0f} s; status: {shown}")
            time.sleep(POLL_S)

    def settled(
        self,
        condition: str,
        active: str,
        *,
        timeout_s: float = 300,
        each: Callable[[dict[str, Any]], None] | None = None,
        name: str = MODEL,
    ) -> dict[str, Any]:
        """Until the status is about the current generation, `condition` True and `active` serving."""
        return self.wait(f"{condition} with {active} active", lambda vm: settled(vm, condition, active),
                         timeout_s=timeout_s, each=each, name=name)  # fmt: skip

    def targets(self) -> dict[str, str]:
        """Each node's target version, from the target ConfigMaps the operator writes."""
        found = {}
        for cm in self.json("configmaps", "-l", f"{names.LABEL_MODEL}={MODEL}").get("items", []):
            annotations = cm["metadata"].get("annotations") or {}
            record = json.loads(annotations.get(names.ANNOTATION_TARGET) or "{}")
            found[annotations.get(names.ANNOTATION_NODE, "?")] = record.get("version", "?")
        return found

    def pods(self, name: str = MODEL) -> dict[str, dict[str, Any]]:
        """The serving pods, by node."""
        items = self.json("pods", "-l", f"{names.LABEL_MODEL}={name}").get("items", [])
        return {pod["metadata"]["annotations"][names.ANNOTATION_NODE]: pod for pod in items}

    def wait_gone(self, name: str = MODEL, timeout_s: float = 120) -> None:
        """Until the VibrationModel's pods are gone (garbage collection by ownerReference takes a moment)."""
        deadline = time.monotonic() + timeout_s
        while self.pods(name):
            if time.monotonic() > deadline:
                raise StoryError(
                    f"pods of {name} still there after {timeout_s:.0f} s: {sorted(self.pods(name))}"
                )
            time.sleep(POLL_S)

    def events(self, reason: str | None = None, name: str = MODEL) -> list[dict[str, Any]]:
        """Events about the VibrationModel, oldest first; only `reason` when given."""
        items = self.json("events", "--field-selector", f"involvedObject.name={name}").get("items", [])
        found = [e for e in items if reason is None or e.get("reason") == reason]
        return sorted(found, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    @contextlib.contextmanager
    def mqtt(self) -> Iterator[tuple[Sensor, Dashboard]]:
        """The hall's broker through a port-forward: sensor `m1` and a dashboard, connected."""
        broker = f"{self.cluster.hall.name}-vibration-edge-mosquitto"
        prefix = self.cluster.hall.topic_prefix
        with port_forward(self.cluster, broker, 1883) as url:
            dashboard = Dashboard(url, prefix, self.users["dashboard"])
            sensor = Sensor(url, prefix, SENSOR, self.users[SENSOR])
            try:
                yield sensor, dashboard
            finally:
                sensor.close()
                dashboard.close()

    def pod_metric(self, pod: str, metric: str) -> float:
        """Sum of a serving pod's Prometheus metric, read through the API server's pod proxy."""
        ports = "jsonpath={.spec.containers[0].ports[0].containerPort}"
        port = self.cluster.run("kubectl", "-n", self.ns, "get", "pod", pod, "-o", ports, quiet=True)
        text = self.cluster.run(
            "kubectl",
            "get",
            "--raw",
            f"/api/v1/namespaces/{self.ns}/pods/{pod}:{port}/proxy/metrics",
            quiet=True,
        )
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((f"{metric} ", f"{metric}{{"))
        )


def node_status(vm: dict[str, Any], node: str) -> dict[str, Any]:
    """status.nodes[] of `node` ({} when absent)."""
    return next((n for n in (vm.get("status") or {}).get("nodes", []) if n["name"] == node), {})


def run_or_fail(step: Callable[[], T]) -> T:
    """A demo step; its DemoError becomes a test failure with the step's words."""
    try:
        return step()
    except DemoError as exc:
        raise StoryError(str(exc)) from exc


def health(vm: dict[str, Any]) -> str:
    """Argo CD's health of the object, by the Lua script Argo CD would run."""
    return run_health(vm)["status"]
