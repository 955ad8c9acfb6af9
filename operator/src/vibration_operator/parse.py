"""A VibrationModel's body read into its spec and status models.

The spec is the CRD's, so one that does not parse is a `kopf.PermanentError`; the status is
ours, so one that does not parse is rebuilt (None), after fields another operator release wrote
are left out.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import kopf
from pydantic import ValidationError

from vibration_core.spec import VibrationModelSpec
from vibration_core.status import VibrationModelStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger("vibration_operator.handlers")  # its events kept their logger when they moved


def parse_spec(body: Mapping[str, Any]) -> VibrationModelSpec:
    """The spec, or `kopf.PermanentError` with pydantic's message (the CRD should have refused it)."""
    try:
        return VibrationModelSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc


def parse_status(body: Mapping[str, Any]) -> VibrationModelStatus | None:
    """The status as last written; None when absent or unreadable (it is then rebuilt).

    Fields this build does not know are left out, not a reason to rebuild: another operator
    release (a `helm rollback`, with the CRD of the newer one) writes some. A rebuilt status
    takes the hall's active version from the nodes' ConfigMaps (`rollout.decide`).
    """
    raw = body.get("status")
    if not raw:
        return None
    try:
        return VibrationModelStatus.model_validate(raw)
    except ValidationError as exc:
        unknown = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
        problem = exc
    document = copy.deepcopy(dict(raw))  # copied only to drop fields: kopf's body is read-only
    if unknown and all(_drop(document, loc) for loc in unknown):
        try:
            status = VibrationModelStatus.model_validate(document)
        except ValidationError as exc:
            problem = exc
        else:
            fields = ", ".join(".".join(map(str, loc)) for loc in unknown)
            logger.info("status_fields_ignored", extra={"fields": fields})
            return status
    logger.warning("status_unreadable", extra={"error": str(problem).splitlines()[0]})
    return None


def _drop(document: dict[str, Any], loc: tuple[int | str, ...]) -> bool:
    """Remove the item at `loc` from the nested dicts and lists of `document`; whether it was there."""
    *path, last = loc
    node: object = document
    for key in path:
        node = _child(node, key)
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    return False


def _child(node: object, key: int | str) -> object:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None
