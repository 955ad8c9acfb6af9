"""Build the VibrationModel CRD from the pydantic spec and status models.

The CRD in ``crds/`` (and the chart's copy) is this function's output and
nothing else; `make generate` writes it and `make check` fails on drift.
pydantic's JSON Schema is turned into a structural OpenAPI v3 schema: every
``$ref`` inlined, ``Optional`` unwrapped, titles dropped, and the CEL rules the
models carry kept as ``x-kubernetes-validations``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import yaml

from vibration_core import api, spec
from vibration_core.status import VibrationModelStatus

if TYPE_CHECKING:
    from vibration_core.schema import Schema

CRD_NAME = f"{api.PLURAL}.{api.GROUP}"
_DROP = frozenset({"title", "$defs"})

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Version", "type": "string", "jsonPath": ".spec.version", "description": "Target version"},
    {
        "name": "Active",
        "type": "string",
        "jsonPath": ".status.active.version",
        "description": "Promoted version",
    },
    {"name": "Accel", "type": "string", "jsonPath": ".spec.accelerator", "description": "cpu or coral"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Every selected node serves the target",
    },
    {
        "name": "Nodes",
        "type": "string",
        "jsonPath": ".status.readyNodes",
        "description": "Nodes on the target",
    },
    {
        "name": "Accuracy",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.validation.accuracy",
        "description": "Lowest node-local accuracy of the target",
    },
    {
        "name": "Drift",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Drifted")].status',
        "description": "Drift beyond the policy",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _inline(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace a $ref by its definition and Optional[X] by X; the node's own keys win."""
    if "$ref" in node:
        node = dict(node)
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        node = {**target, **node}
    if "anyOf" in node:
        node = dict(node)
        options = [option for option in node.pop("anyOf") if option.get("type") != "null"]
        if len(options) != 1:
            msg = f"only Optional[X] unions are supported in the CRD, got {options}"
            raise ValueError(msg)
        node = {**options[0], **node}
        if node.get("default", ...) is None:
            del node["default"]
        node = _inline(node, defs)
    return node


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A structural schema node: refs inlined, titles and closed-object markers dropped."""
    node = _inline(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "additionalProperties" and value is False):
            continue  # properties and additionalProperties exclude each other in a CRD
        if key == "properties":
            out[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        elif key in {"items", "additionalProperties"}:
            out[key] = _resolve(value, defs)
        elif key == "default" and isinstance(value, dict):
            out[key] = {}  # an object default: the nested defaults fill it in
        elif key in {"exclusiveMinimum", "exclusiveMaximum"}:
            # OpenAPI v3.0, which CRDs speak, has the boolean form of JSON Schema draft 4.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    return out


def openapi_schema(model: type[Schema]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    resolved: dict[str, Any] = _resolve(schema, schema.get("$defs", {}))
    return resolved


def _list_maps(schema: dict[str, Any]) -> dict[str, Any]:
    status = schema["properties"]
    status["conditions"] |= {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    status["nodes"] |= {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
    return schema


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of VibrationModel."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/part-of": "vibration-edge"}},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": list(api.CATEGORIES),
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": spec.VibrationModel.__doc__,
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {"rule": api.NAME_RULE, "message": api.NAME_MESSAGE}
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(spec.VibrationModelSpec),
                                "status": _list_maps(openapi_schema(VibrationModelStatus)),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML committed in crds/."""
    header = "# Generated by `make generate` from vibration_core.spec; do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)
