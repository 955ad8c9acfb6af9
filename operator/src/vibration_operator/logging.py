"""The operator's logging: the core's event convention, with kopf's own records folded in.

Call sites log like every deployable (`vibration_core.logs`). kopf's records
come through the same handler; what kopf adds to them as ``extra`` is
private to kopf except the object a record concerns, which becomes
``object=namespace/name``.
"""

from __future__ import annotations

import logging
from typing import Any

from vibration_core.logs import LogFormat
from vibration_core.logs import setup_logging as setup_event_logging

# kopf's private extras: the object reference is rendered as `object`, the rest is dropped.
_KOPF_PRIVATE = ("k8s_skip", "k8s_ref", "settings")


def kopf_object(record: logging.LogRecord, fields: dict[str, Any]) -> None:
    """Drop kopf's private extras from `fields`; its object reference becomes ``object``."""
    for key in _KOPF_PRIVATE:
        fields.pop(key, None)
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name"):
        fields["object"] = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else str(ref["name"])


def quiet_successes(record: logging.LogRecord) -> bool:
    """Keep a kopf record unless it says, at INFO, that a handler or timer succeeded.

    kopf says so after every call: with 200 models ticking, 27 lines a second of nothing.
    Failures, retries and DEBUG (``--verbose``) stay.
    """
    return not (record.levelno == logging.INFO and record.getMessage().endswith(" succeeded."))


def setup_logging(log_format: LogFormat, *, verbose: bool = False) -> None:
    """Route every logger (kopf's too) to stderr in `log_format`."""
    setup_event_logging(logging.DEBUG if verbose else logging.INFO, log_format, hook=kopf_object)
    logging.getLogger("kopf.objects").addFilter(quiet_successes)
    # aiohttp's access log and asyncio's debug chatter are noise for an operator.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
