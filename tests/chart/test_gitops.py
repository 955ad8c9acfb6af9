"""The Argo CD example: one Application per hall folder, each hall renders, its models fit the hall."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import yaml

from vibration_core.spec import VibrationModel
from vibration_operator.crd import build_crd
from vibration_testkit.apiserver_like import validate
from vibration_testkit.helm import ROOT, component, of_kind, render

if TYPE_CHECKING:
    from pathlib import Path

GITOPS = ROOT / "examples" / "gitops"
HALLS = sorted(path.parent for path in (GITOPS / "halls").glob("*/values.yaml"))


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _models(hall: Path) -> list[dict[str, Any]]:
    return [doc for path in sorted((hall / "models").glob("*.yaml")) for doc in _documents(path)]


def test_applicationset_makes_one_application_per_hall_folder() -> None:
    appset, crds = _documents(GITOPS / "applicationset.yaml")
    assert appset["kind"] == "ApplicationSet"
    (generator,) = appset["spec"]["generators"]
    (directory,) = generator["git"]["directories"]
    assert sorted(ROOT.glob(directory["path"])) == HALLS
    assert len(HALLS) >= 2
    spec = appset["spec"]["template"]["spec"]
    chart, values, models = spec["sources"]
    assert (ROOT / chart["path"] / "Chart.yaml").is_file()
    assert chart["helm"]["skipCrds"] is True  # the CRD has one owner: the Application below
    assert chart["helm"]["valueFiles"] == ["$hall/{{ .path.path }}/values.yaml"]
    assert values["ref"] == "hall"
    assert models["path"] == "{{ .path.path }}/models"
    assert spec["destination"]["namespace"] == "{{ .path.basename }}"
    assert crds["kind"] == "Application"
    assert (ROOT / crds["spec"]["source"]["path"] / crds["spec"]["source"]["directory"]["include"]).is_file()
    assert crds["spec"]["syncPolicy"]["automated"]["prune"] is False


@pytest.mark.parametrize("hall", HALLS, ids=lambda p: p.name)
def test_hall_models_are_valid_vibrationmodels(hall: Path) -> None:
    models = _models(hall)
    assert models
    crd = build_crd()
    for obj in models:
        VibrationModel.model_validate(obj)
        assert validate(crd, obj) == []
        assert "namespace" not in obj["metadata"], "the Application's destination sets it"


@pytest.mark.integration
@pytest.mark.parametrize("hall", HALLS, ids=lambda p: p.name)
def test_hall_renders_and_its_models_fit_it(hall: Path) -> None:
    values = yaml.safe_load((hall / "values.yaml").read_text())
    objects = render((hall / "values.yaml",), (), hall.name, hall.name)
    services = {
        f"{s['metadata']['name']}.{hall.name}"
        for s in of_kind(objects, "Service")
        if component(s) == "broker"
    }
    for obj in _models(hall):
        spec = obj["spec"]
        assert urlsplit(spec["mqtt"]["broker"]).hostname in services, "the model talks to the hall's broker"
        assert spec["artifact"]["credentialsSecret"] == values["registry"]["credentialsSecret"]
        if spec["accelerator"] == "coral":
            assert values["coral"]["devicePlugin"]["enabled"] is True
