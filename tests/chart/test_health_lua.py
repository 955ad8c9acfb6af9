"""The Argo CD health check of VibrationModel, run by lupa's Lua 5.1 (Argo CD's gopher-lua is 5.1 too)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from vibration_core.status import VibrationModelStatus
from vibration_testkit.argocd_health import SCRIPT, UNSAFE, run_health
from vibration_testkit.helm import ROOT

lua51 = pytest.importorskip("lupa.lua51", reason="lupa without its Lua 5.1 runtime")

GITOPS = ROOT / "examples" / "gitops"
KEY = "resource.customizations.health.edge.vibration.io_VibrationModel"
T0 = "2025-11-20T22:00:00Z"


def cond(kind: str, status: str, reason: str, message: str = "", generation: int = 2) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": T0,
    }


def model(generation: int | None, status: dict[str, Any] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "spindle-classifier", "namespace": "hall-a"}
    if generation is not None:
        metadata["generation"] = generation
    obj: dict[str, Any] = {
        "apiVersion": "edge.vibration.io/v1alpha1",
        "kind": "VibrationModel",
        "metadata": metadata,
    }
    if status is not None:
        obj["status"] = status
    return obj


def status(phase: str, *conditions: dict[str, Any], observed: int = 2) -> dict[str, Any]:
    return {"observedGeneration": observed, "phase": phase, "conditions": list(conditions)}


READY = cond("Ready", "True", "AllNodesServing", "3/3 nodes serve v3")
NOT_DEGRADED = cond("Degraded", "False", "AsExpected")
FAILED = "node gw-2: accuracy 0.81 below 0.93 (exit 14)"
OFF = "3 nodes match spec.nodeSelector but none is Ready and schedulable"

CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "new, no status": (model(1, None), "Progressing", "Waiting for the operator"),
    "progressing": (
        model(
            2,
            status(
                "Progressing",
                cond("Ready", "False", "RolloutInProgress", "1/3 nodes serve v3"),
                cond("Progressing", "True", "CanaryRollout", "1/3 nodes serve v3"),
                NOT_DEGRADED,
            ),
        ),
        "Progressing",
        "1/3 nodes serve v3",
    ),
    "promoted": (model(2, status("Ready", READY, NOT_DEGRADED)), "Healthy", "3/3 nodes serve v3"),
    "failed validation": (
        model(
            2,
            status(
                "Degraded",
                cond("Ready", "False", "ValidationFailed", "1/3 nodes serve v3"),
                cond("Degraded", "True", "ValidationFailed", FAILED),
            ),
        ),
        "Degraded",
        FAILED,
    ),
    "a gateway powered off": (
        model(
            2,
            status(
                "Degraded",
                cond("Ready", "False", "NodeNotReady", "2/3 nodes serve v3"),
                cond("Progressing", "False", "NodeNotReady", "2/3 nodes serve v3; the rest wait"),
                cond("Degraded", "True", "NodeNotReady", "node gw-3 is not Ready, unschedulable or tainted"),
            ),
        ),
        "Degraded",
        "node gw-3 is not Ready, unschedulable or tainted",
    ),
    "no node matches the selector": (
        model(
            2,
            status(
                "Pending",
                cond("Ready", "False", "NoNodes", "no node matches spec.nodeSelector"),
                cond("Progressing", "False", "NoNodes", "no node matches spec.nodeSelector"),
                cond("Degraded", "False", "NoNodes", "no node matches spec.nodeSelector"),
            ),
        ),
        "Degraded",
        "no node matches spec.nodeSelector: label the hall's gateways",
    ),
    "the hall's gateways all off": (
        model(
            2,
            status(
                "Pending",
                cond("Ready", "False", "NoReadyNodes", OFF),
                cond("Progressing", "False", "NoReadyNodes", OFF),
                cond("Degraded", "True", "NoReadyNodes", OFF),
            ),
        ),
        "Degraded",
        OFF,
    ),
    "stale observedGeneration": (
        model(3, status("Ready", READY, NOT_DEGRADED)),
        "Progressing",
        "generation 3",
    ),
    "stale Ready condition": (
        model(3, status("Ready", READY, observed=3)),
        "Progressing",
        "3/3 nodes serve v3",
    ),
    "stale Degraded condition": (
        model(3, status("Progressing", cond("Degraded", "True", "ValidationFailed", FAILED), observed=3)),
        "Progressing",
        "Rollout in progress",
    ),
    "drifted": (
        model(
            2,
            status("Ready", READY, NOT_DEGRADED, cond("Drifted", "True", "DriftDetected", "psi 0.41 on rms")),
        ),
        "Healthy",
        "drifted: psi 0.41 on rms",
    ),
    "waiting for the update window": (
        model(
            2, status("Waiting", cond("Progressing", "False", "OutsideUpdateWindow", "next window 22:00 UTC"))
        ),
        "Suspended",
        "next window 22:00 UTC",
    ),
    "an update window that never opens": (
        model(
            2,
            status(
                "Degraded",
                READY,
                cond("Progressing", "False", "RolloutComplete", "3/3 nodes serve v3"),
                cond("Degraded", "True", "InvalidUpdateWindow", "update window '0 0 30 2 *' never opens"),
            ),
        ),
        "Degraded",
        "never opens",
    ),
    "an invalid update window, as older operators wrote it": (
        model(
            2,
            status(
                "Waiting",
                cond("Progressing", "False", "InvalidUpdateWindow", "invalid cron schedule '0 25 * * *'"),
                NOT_DEGRADED,
            ),
        ),
        "Degraded",
        "invalid cron schedule",
    ),
    "paused": (model(2, status("Paused", cond("Progressing", "False", "Paused", ""))), "Suspended", "Paused"),
    "no generation (as kmock)": (model(None, status("Ready", READY)), "Healthy", "3/3 nodes serve v3"),
}


@pytest.mark.parametrize("case", CASES)
def test_health(case: str) -> None:
    obj, expected, message = CASES[case]
    if "status" in obj:
        VibrationModelStatus.model_validate(obj["status"])  # shaped like what the operator writes
    health = run_health(obj)
    assert health["status"] == expected
    assert message in health["message"]


def test_stale_status_is_never_healthy() -> None:
    for case, (obj, _, _) in CASES.items():
        generation = obj["metadata"].get("generation")
        stale = (
            "status" in obj and generation is not None and obj["status"]["observedGeneration"] < generation
        )
        if stale:
            assert run_health(obj)["status"] != "Healthy", case


def test_script_uses_no_unsafe_global() -> None:
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    runtime.execute(" ".join(f"{name} = nil;" for name in UNSAFE))
    assert runtime.eval("os") is None
    run_health(CASES["promoted"][0])  # runs in that sandbox


def test_argocd_snippet_embeds_the_script() -> None:
    snippet = yaml.safe_load((GITOPS / "argocd-cm-health.yaml").read_text())
    assert snippet["metadata"]["name"] == "argocd-cm"
    assert snippet["data"][KEY] == SCRIPT
