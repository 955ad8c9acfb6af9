"""The kubelet and the serving pods of a `KmockCluster`, and the real operator beside them.

`FakeKubelet` plays the kubelet and the serving pods of the selected nodes:
it "starts" each serving pod (its init container validates the node's target
and writes a `CompactReport` termination message; the pod gets an IP and is
Ready) and serves each pod's ``GET /status`` from a real HTTP server on its
own loopback address (127.0.0.10, .11, ...) and the port of the pod spec, so
the operator's observer runs unchanged. A running pod swaps to a new target
from its ConfigMap the way the real serve container does: validate, then
serve it, or keep the last good version and report the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import aiohttp.web
import kopf

from vibration_core.messages import ModelStatus
from vibration_core.validation import CompactReport, ExitCode
from vibration_operator import names
from vibration_operator.handlers import run_operator
from vibration_operator.readers import read_target_configmap
from vibration_testkit.kmock_cluster import ApiError, KmockCluster

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from vibration_core.target import ModelTarget
    from vibration_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


def free_port(hosts: list[str]) -> int:
    """A TCP port free on every one of `hosts`."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


@dataclass
class FakeNode:
    """One node's serving pod as the operator sees it through /status, and its model cache."""

    name: str
    ip: str
    last_good: ModelTarget | None = None
    """The node-local cache: survives pod restarts, like the hostPath cache."""
    status: ModelStatus | None = None
    runner: aiohttp.web.AppRunner | None = None


@dataclass
class FakeKubelet:
    """Starts our pods on their nodes and answers their /status; see the module docstring."""

    cluster: KmockCluster
    namespace: str
    nodes: dict[str, FakeNode]
    port: int
    failing: set[tuple[str, str]] = field(default_factory=set)
    """(node, version) pairs whose validation fails."""
    drift: dict[str, dict[str, float]] = field(default_factory=dict)
    """Drift figures each node's pod reports; drifted when one is ``flagged.<test>`` (raiseAfter 1)."""
    paused: bool = False
    """Hold every pod where it is (a kubelet that does nothing)."""
    _task: asyncio.Task[None] | None = None

    @classmethod
    def for_nodes(cls, cluster: KmockCluster, namespace: str, node_names: list[str]) -> FakeKubelet:
        """A kubelet for `node_names`, each on its own loopback address (127.0.0.10, .11, ...)."""
        ips = {name: f"127.0.0.{10 + i}" for i, name in enumerate(node_names)}
        port = free_port(list(ips.values()))
        nodes = {name: FakeNode(name, ip) for name, ip in ips.items()}
        return cls(cluster, namespace, nodes, port)

    def _report(self, node: str, target: ModelTarget) -> CompactReport:
        if (node, target.version) in self.failing:
            return CompactReport(
                outcome="failed", code=int(ExitCode.BELOW_THRESHOLD), reason="accuracy 0.41 < 0.93",
                version=target.version, sha256=target.sha256, node=node, samples=400, accuracy=0.41,
            )  # fmt: skip
        return CompactReport(
            outcome="passed", code=0, version=target.version, sha256=target.sha256, node=node,
            samples=400, accuracy=0.962, macro_f1=0.95, p50_ms=0.1, p99_ms=0.4,
        )  # fmt: skip

    def _model_status(self, node: FakeNode, **candidate: Any) -> ModelStatus:
        good = node.last_good
        return ModelStatus(
            node=node.name, model_id="spindle-classifier" if good else None,
            version=good.version if good else None, sha256=good.sha256 if good else None,
            state="serving" if good else "no_model", ready=good is not None, windows_total=0, errors_total=0,
            updated_ns=time.time_ns(), **candidate,
        )  # fmt: skip

    async def _serve(self, node: FakeNode) -> None:
        async def status(_: aiohttp.web.Request) -> aiohttp.web.Response:
            if node.status is None:
                return aiohttp.web.Response(status=503)
            figures = self.drift.get(node.name, {})
            drifted = any(name.startswith("flagged.") and value == 1.0 for name, value in figures.items())
            fresh = node.status.model_copy(update={"drift": figures, "drifted": drifted})
            return aiohttp.web.Response(body=fresh.encode(), content_type="application/json")

        app = aiohttp.web.Application()
        app.router.add_get("/status", status)
        node.runner = aiohttp.web.AppRunner(app, access_log=None)
        await node.runner.setup()
        await aiohttp.web.TCPSite(node.runner, node.ip, self.port).start()

    async def _stop(self, node: FakeNode) -> None:
        if node.runner is not None:
            await node.runner.cleanup()
        node.runner, node.status = None, None

    async def _boot(self, node: FakeNode, pod: dict[str, Any], target: ModelTarget) -> None:
        """The init container validates the target; the pod serves it or the cached last good."""
        report = self._report(node.name, target)
        if report.outcome == "passed":
            node.last_good = target
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod['metadata']['name']}/status"
        terminated = {"exitCode": 0, "reason": "Completed", "message": report.encode().decode()}
        if node.last_good is None:  # nothing to fall back to: the init container fails and restarts
            terminated |= {"exitCode": report.code, "reason": "Error"}
            waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
            init = {"name": "validate", "state": waiting, "lastState": {"terminated": terminated}}
            status = {"phase": "Pending", "initContainerStatuses": [init]}
            await self.cluster.call("PATCH", path, {"status": status})
            return
        node.status = self._model_status(node)
        await self._serve(node)
        init = {"name": "validate", "state": {"terminated": terminated}}
        ready = [{"type": "Ready", "status": "True"}]
        status = {"phase": "Running", "podIP": node.ip, "initContainerStatuses": [init], "conditions": ready}
        await self.cluster.call("PATCH", path, {"status": status})

    def _swap(self, node: FakeNode, target: ModelTarget) -> None:
        """The serve container validates a new target in place and swaps, or keeps the old model."""
        report = self._report(node.name, target)
        if report.outcome == "passed":
            node.last_good = target
        state = "passed" if report.outcome == "passed" else "failed"
        node.status = self._model_status(
            node, candidate_version=target.version, candidate_sha256=target.sha256,
            candidate_state=state, candidate_report=report,
        )  # fmt: skip

    async def step(self) -> None:
        """One pass of the kubelet over our pods."""
        pods = await self.cluster.pods(self.namespace)
        by_node = {pod["metadata"]["annotations"][names.ANNOTATION_NODE]: pod for pod in pods}
        configmaps = await self.cluster.configmaps(self.namespace)
        for name, node in self.nodes.items():
            pod = by_node.get(name)
            # A pod without init container statuses is new (maybe with an old one's name): boot it.
            booted = pod is not None and bool((pod.get("status") or {}).get("initContainerStatuses"))
            if not booted:
                await self._stop(node)
            if pod is None:
                continue
            target, _ = read_target_configmap(configmaps.get(name))
            if target is None:
                continue  # a pod whose ConfigMap is missing cannot start (its volume cannot mount)
            if not booted:
                await self._boot(node, pod, target)
            elif node.status is not None and node.status.sha256 != target.sha256:
                tried = node.status.candidate_sha256
                if tried != target.sha256:
                    self._swap(node, target)

    async def _loop(self) -> None:
        while True:
            if not self.paused:
                try:
                    await self.step()
                except (ApiError, aiohttp.ClientError, OSError) as exc:  # a kubelet retries, and so do we
                    logger.warning("fake_kubelet_step_failed: %r", exc)
            await asyncio.sleep(0.2)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for node in self.nodes.values():
            await self._stop(node)


@contextlib.asynccontextmanager
async def running_operator(cluster: KmockCluster, settings: OperatorSettings) -> AsyncIterator[None]:
    """The real operator (kopf and our handlers), logged in to the emulator, in a thread of its own.

    Its own thread and event loop, as if it were its own process: kopf installs no signal handlers
    outside the main thread, and neither side's loop can stall the other's.
    """
    stop, ready = threading.Event(), threading.Event()
    login = kopf.ConnectionInfo(server=cluster.url)
    failures: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(run_operator(settings, stop_flag=stop, ready_flag=ready, credentials=login))
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            failures.append(exc)

    thread = threading.Thread(target=main, name="operator", daemon=True)
    thread.start()
    started = await asyncio.to_thread(ready.wait, 60)
    try:
        if not started or failures:
            raise AssertionError(f"the operator did not start: {failures}")
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 60)
    if thread.is_alive():
        raise AssertionError("the operator did not stop within 60 s")
    if failures:
        raise failures[0]


def verbs_used(cluster: KmockCluster) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of every API call the operator and kopf made.

    Discovery (/api, /apis/...) is left out: every authenticated user may read it.
    The test's own requests and the fake kubelet's are told apart by their User-Agent.
    """
    return {
        (group, resource, verb)
        for agent, group, resource, verb in cluster.emulator.calls
        if agent.startswith(("vibration-operator", "kopf/"))
    }


def uncovered(
    used: set[tuple[str, str, str]], rules: tuple[dict[str, list[str]], ...]
) -> set[tuple[str, str, str]]:
    """The calls in `used` that no rule allows."""
    return {
        (group, resource, verb)
        for group, resource, verb in used
        if not any(
            group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
            for rule in rules
        )
    }
