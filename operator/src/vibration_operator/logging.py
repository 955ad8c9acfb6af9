"""Log records as events: one JSON object per line in a cluster, ``key=value`` pairs locally.

Call sites log a snake_case event name and the facts as ``extra``
(``logger.info("pod_created", extra={"node": node})``), never an f-string,
so both formats carry the same fields and a log pipeline can index them.
kopf's own records come through the same formatter; the object they concern
(kopf's ``k8s_ref``) becomes ``object=namespace/name``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]

# Attributes every LogRecord has; anything else on a record came in through `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# kopf's private extras: the object reference is rendered as `object`, the rest is dropped.
_KOPF_PRIVATE = frozenset({"k8s_skip", "k8s_ref", "settings"})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name"):
        where = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else str(ref["name"])
        fields["object"] = where
    fields |= {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and key not in _KOPF_PRIVATE and not key.startswith("_")
    }
    if record.exc_info and record.exc_info[1] is not None:
        fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        return json.dumps(_fields(record), default=str, ensure_ascii=False)


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or any(c in text for c in ' "=\n') else text


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=info event=pod_created node=edge-1``: readable, still greppable."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as key=value pairs."""
        return " ".join(f"{key}={_text_value(value)}" for key, value in _fields(record).items())


def setup_logging(log_format: LogFormat, *, verbose: bool = False) -> None:
    """Route every logger (kopf's too) to stderr in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # aiohttp's access log and asyncio's debug chatter are noise for an operator.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
