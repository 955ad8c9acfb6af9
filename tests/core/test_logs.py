"""The one log convention: an event and its fields, as JSON lines or key=value pairs, from one record."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vibration_core.logs import JsonFormatter, KeyValueFormatter, LogFormat, event_fields, setup_logging

if TYPE_CHECKING:
    from collections.abc import Iterator


def record(event: str, level: int = logging.INFO, **fields: Any) -> logging.LogRecord:
    """The record ``logger.log(level, event, extra=fields)`` makes (and checks the fields of)."""
    return logging.getLogger("vibration.test").makeRecord(
        "vibration.test", level, "f.py", 1, event, (), None, extra=fields
    )


def crashed() -> logging.LogRecord:
    """The record of ``logger.exception("swap_crashed", ...)`` in an `except` block."""
    try:
        raise ValueError("disk on fire")  # noqa: TRY301 - the exception a crash logs
    except ValueError:
        crash = record("swap_crashed", logging.ERROR, sha256="ab12")
        crash.exc_info = sys.exc_info()
    return crash


def test_a_record_says_its_event_and_its_fields() -> None:
    logged = record("pod_created", node="edge-1", windows=3)
    assert event_fields(logged) == {"event": "pod_created", "node": "edge-1", "windows": 3}
    assert vars(logged)["node"] == "edge-1"  # an attribute: what tests read through caplog


def test_json_is_one_object_per_line_with_the_fields_as_values() -> None:
    line = JsonFormatter().format(
        record("fetch_done", logging.WARNING, uri="s3://m/a", bytes=12, path=Path("/x"))
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed.pop("ts").endswith("+00:00")
    assert parsed == {
        "level": "warning",
        "logger": "vibration.test",
        "event": "fetch_done",
        "uri": "s3://m/a",
        "bytes": 12,
        "path": "/x",
    }


def test_text_is_key_value_pairs_quoted_only_where_needed() -> None:
    line = KeyValueFormatter().format(
        record(
            "split_chosen", kind="machine", reason="two words", held_out=["m1", "m2"], passed=True, left=None
        )
    )
    assert line.startswith("ts=")
    assert line.split(" ", 1)[1] == (
        'level=info logger=vibration.test event=split_chosen kind=machine reason="two words" '
        "held_out=m1,m2 passed=true left=null"
    )


def test_a_logged_exception_names_the_error_and_keeps_its_traceback() -> None:
    crash = crashed()
    parsed = json.loads(JsonFormatter().format(crash))
    assert (parsed["event"], parsed["sha256"], parsed["error"]) == (
        "swap_crashed",
        "ab12",
        "ValueError: disk on fire",
    )
    assert parsed["traceback"].startswith("Traceback (most recent call last):")
    first, *rest = KeyValueFormatter().format(crash).splitlines()
    assert first.endswith('event=swap_crashed sha256=ab12 error="ValueError: disk on fire"')
    assert rest[0] == "Traceback (most recent call last):"


def test_a_hook_edits_the_fields_before_they_are_rendered() -> None:
    def hook(_record: logging.LogRecord, fields: dict[str, Any]) -> None:
        fields["object"] = f"ns/{fields.pop('private')}"

    line = JsonFormatter(hook).format(record("handler_done", private="m1"))
    assert json.loads(line)["object"] == "ns/m1"
    assert "private" not in json.loads(line)


def test_a_field_named_like_a_record_attribute_is_refused_at_the_call() -> None:
    with pytest.raises(KeyError, match="name"):
        record("bad_event", name="x")


@contextlib.contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without pytest's capturing handlers, restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = []
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_setup_routes_every_logger_to_stderr_at_the_level(
    capsys: pytest.CaptureFixture[str], log_format: LogFormat
) -> None:
    with bare_root():
        setup_logging("INFO", log_format)
        logging.getLogger("vibration.any").debug("hidden_event")
        logging.getLogger("vibration.any").info("shown_event", extra={"count": 2})
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    if log_format == "json":
        assert {"event": "shown_event", "count": 2}.items() <= json.loads(line).items()
    else:
        assert line.endswith(" event=shown_event count=2")


def test_setup_without_replace_leaves_a_configured_root_alone() -> None:
    with bare_root() as root:
        kept = logging.NullHandler()
        root.addHandler(kept)
        setup_logging("DEBUG", "json", replace=False)
        assert root.handlers == [kept]
        setup_logging("DEBUG", "json")
        assert [type(h.formatter) for h in root.handlers] == [JsonFormatter]
        assert root.level == logging.DEBUG
