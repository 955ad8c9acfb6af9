"""Check an object against the generated CRD the way the API server does, as far as it can here.

Structural defaulting, then the OpenAPI schema (jsonschema), then every CEL
rule (cel-python, a real CEL implementation) at the node that carries it.
Messages are rendered in the API server's words so that the invalid samples'
expectations hold both here and in the e2e tests against a real cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel

Error = tuple[str, str]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` with the `default`s of `schema` filled in where absent, as the API server stores an object."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    out = dict(value)
    for name, prop in schema.get("properties", {}).items():
        if name not in out and "default" in prop:
            out[name] = copy.deepcopy(prop["default"])
        if name in out:
            out[name] = apply_defaults(prop, out[name])
    return out


def _path(parts: list[Any]) -> str:
    return ".".join(str(part) for part in parts)


def _render(error: jsonschema.ValidationError) -> Error:
    where = list(error.absolute_path)
    kind, limit = error.validator, error.validator_value
    if kind == "required":
        missing = error.message.split("'")[1]
        return _path([*where, missing]), "Required value"
    messages = {
        "maximum": f"should be less than or equal to {limit}",
        "exclusiveMaximum": f"should be less than {limit}",
        "minimum": f"should be greater than or equal to {limit}",
        "exclusiveMinimum": f"should be greater than {limit}",
        "pattern": f"should match '{limit}'",
        "maxLength": f"may not be more than {limit} bytes",
        "minLength": f"should be at least {limit} chars long",
        "type": f"must be of type {limit}",
        "maxItems": f"must have at most {limit} items",
    }
    # Draft 4 (the CRD's dialect) marks an exclusive bound with a boolean beside minimum/maximum.
    if kind in {"minimum", "maximum"} and error.schema.get(f"exclusive{str(kind).capitalize()}") is True:
        kind = f"exclusive{str(kind).capitalize()}"
    if kind == "enum":
        supported = ", ".join(f'"{v}"' for v in limit)
        messages["enum"] = f'Unsupported value: "{error.instance}": supported values: {supported}'
    return _path(where), messages.get(str(kind), error.message)


def _cel_errors(
    schema: dict[str, Any],
    value: Any,
    where: list[str],
    env: celpy.Environment,
) -> list[Error]:
    errors: list[Error] = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]))
        if not bool(program.evaluate({"self": json_to_cel(value)})):
            errors.append((_path(where), rule["message"]))
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name in value:
                errors += _cel_errors(prop, value[name], [*where, name], env)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                errors += _cel_errors(extra, item, [*where, name], env)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, [*where, str(i)], env)
    return errors


def validate(crd: dict[str, Any], obj: dict[str, Any]) -> list[Error]:
    """Every refusal the API server would give for `obj`, as (path, message)."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    defaulted = apply_defaults(schema, obj)
    validator = jsonschema.Draft4Validator(schema)
    errors = [_render(error) for error in validator.iter_errors(defaulted)]
    if errors:
        return errors  # the API server runs CEL only on schema-valid objects
    return _cel_errors(schema, defaulted, [], celpy.Environment())
