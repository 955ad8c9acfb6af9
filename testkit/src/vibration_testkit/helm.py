"""Run the real helm binary on the chart: find it, lint and render scenarios, cache the output.

helm comes from PATH or from ``.tools/bin/helm`` (``tools/ensure-helm.sh`` installs it there);
without either, the tests that need it skip with the command that installs it.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
"""The checkout: the kit is installed editable from it (``uv sync``), never as a wheel."""
CHART = ROOT / "charts" / "vibration-edge"
SCENARIOS = sorted(path.name.removesuffix("-values.yaml") for path in (CHART / "ci").glob("*-values.yaml"))
RELEASE = "hall-a"
NAMESPACE = "hall-a"
_TIMEOUT_S = 120


def helm_binary() -> str | None:
    """The helm to run: the private copy first (pinned by ensure-helm.sh), else PATH."""
    private = ROOT / ".tools" / "bin" / "helm"
    if private.is_file():
        return str(private)
    return shutil.which("helm")


def require_helm() -> str:
    """helm, or skip the test with the reason."""
    helm = helm_binary()
    if helm is None:
        pytest.skip("helm is not installed: run tools/ensure-helm.sh (make test does)")
    return helm


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm with `args`; the result, whatever its exit code."""
    return subprocess.run(  # noqa: PLW1510 - callers check the return code with its output
        [require_helm(), *args], capture_output=True, text=True, timeout=_TIMEOUT_S
    )


def scenario_file(scenario: str) -> Path:
    """The values file of a ci/ scenario."""
    return CHART / "ci" / f"{scenario}-values.yaml"


@functools.cache
def render(
    values: tuple[Path, ...] = (),
    sets: tuple[str, ...] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> tuple[dict[str, Any], ...]:
    """``helm template --include-crds`` of the chart, as parsed objects (cached per arguments)."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    result = run_helm(*args)
    if result.returncode != 0:
        pytest.fail(f"helm template failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render_scenario(scenario: str) -> tuple[dict[str, Any], ...]:
    """The rendered objects of a ci/ scenario."""
    return render((scenario_file(scenario),))


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [obj for obj in objects if obj.get("kind") == kind]


def component(obj: dict[str, Any]) -> str:
    """The app.kubernetes.io/component label of an object."""
    return str(obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def pod_specs(objects: tuple[dict[str, Any], ...]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) of every workload that runs pods."""
    kinds = {"Deployment", "DaemonSet", "StatefulSet", "Job", "ReplicaSet"}
    found = [(obj, obj["spec"]["template"]["spec"]) for obj in objects if obj.get("kind") in kinds]
    found += [(obj, obj["spec"]) for obj in objects if obj.get("kind") == "Pod"]
    found += [
        (obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]) for obj in of_kind(objects, "CronJob")
    ]
    return found
