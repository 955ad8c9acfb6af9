"""The base of the VibrationModel models: how a pydantic field becomes a CRD property.

`vibration_core.spec` and `vibration_core.status` both build on it, so the
spec and the status read and write the same way: camelCase aliases (the
Kubernetes API conventions), unknown fields refused, values frozen, and each
field's docstring its description in the generated CRD.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def cel_rules(*rules: tuple[str, str]) -> dict[str, Any]:
    """CEL rules, each with its message, as a model's ``x-kubernetes-validations``."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class Schema(BaseModel):
    """A part of the VibrationModel resource, as the API server stores it."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )
