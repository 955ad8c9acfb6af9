"""The generated CRD: its shape, its samples, and the refusals the invalid samples must get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from vibration_core.spec import VibrationModel
from vibration_operator.crd import build_crd, crd_yaml
from vibration_testkit.apiserver_like import validate

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "crds" / "samples").glob("*.yaml"))
INVALID = sorted((ROOT / "crds" / "samples" / "invalid").glob("*.yaml"))
CRD = build_crd()


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def expectation(path: Path) -> tuple[str, str]:
    first = path.read_text().splitlines()[0]
    where, message = first.removeprefix("# expect: ").split(" | ", 1)
    return where, message


def test_committed_crd_is_the_generated_one() -> None:
    assert (ROOT / "crds" / "vibrationmodels.edge.vibration.io.yaml").read_text() == crd_yaml()


def test_crd_names_and_columns() -> None:
    crd = build_crd()
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "VibrationModel",
        "vibrationmodels",
        ["vibm"],
        ["vibration"],
    )
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["Version", "Active", "Accel", "Ready", "Nodes", "Accuracy", "Drift", "Age"]


def _walk(schema: dict[str, Any], where: str) -> list[str]:
    """Paths of schema properties that have no description."""
    missing = []
    for name, prop in schema.get("properties", {}).items():
        here = f"{where}.{name}"
        if "description" not in prop:
            missing.append(here)
        missing += _walk(prop, here)
        if isinstance(prop.get("items"), dict):
            missing += _walk(prop["items"], here + "[]")
    return missing


def test_every_spec_and_status_field_is_described_for_kubectl_explain() -> None:
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(root["properties"]["spec"], "spec") == []
    assert _walk(root["properties"]["status"], "status") == []


def test_schema_is_structural() -> None:
    text = crd_yaml()
    for forbidden in ("$ref", "anyOf", "title:", "additionalProperties: false", "const:"):
        assert forbidden not in text


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_samples_are_valid(path: Path) -> None:
    obj = load(path)
    assert validate(CRD, obj) == []
    VibrationModel.model_validate(obj)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_samples_get_their_message(path: Path) -> None:
    where, message = expectation(path)
    errors = validate(CRD, load(path))
    assert any(error_path == where and message in error for error_path, error in errors), errors


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_the_python_model_refuses_the_invalid_samples_too(path: Path) -> None:
    with pytest.raises(ValidationError):
        VibrationModel.model_validate(load(path))


def test_the_removed_psi_threshold_is_refused_by_name() -> None:
    # The API server drops a field its schema does not know (kubectl apply --validate=strict refuses it);
    # the Python model, which the training job builds manifests with, says which one.
    obj = load(SAMPLES[0])
    obj["spec"]["drift"] = {"psiThreshold": 0.2}
    with pytest.raises(ValidationError, match=r"drift\.psiThreshold\n  Extra inputs are not permitted"):
        VibrationModel.model_validate(obj)


@pytest.mark.parametrize(
    "key",
    ["factory hall", "edge.vibration.io/", "/hall", "Edge.Vibration.io/hall", "a/b/c", "x" * 64, "-hall"],
)
def test_a_node_selector_key_that_is_no_label_key_is_refused_by_name(key: str) -> None:
    # The API server checks the values and their count; a key it would only refuse when the
    # operator lists nodes with it (a 400 no status shows), so the Python model names it.
    obj = load(SAMPLES[0])
    obj["spec"]["nodeSelector"] = {key: "hall-a"}
    assert validate(CRD, obj) == []
    with pytest.raises(ValidationError, match="is not a label key"):
        VibrationModel.model_validate(obj)


def test_node_selectors_of_real_label_keys_and_values_pass() -> None:
    obj = load(SAMPLES[0])
    obj["spec"]["nodeSelector"] = {
        "edge.vibration.io/hall": "hall-a",
        "kubernetes.io/hostname": "gw-1.plant",
        "zone": "",
        "node-role.kubernetes.io/edge": "true",
    }
    assert validate(CRD, obj) == []
    VibrationModel.model_validate(obj)
