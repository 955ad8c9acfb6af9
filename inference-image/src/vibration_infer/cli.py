"""The ``vibration-infer`` command: ``validate`` (the init container) and ``serve``.

Thin by design: parse flags, build the settings (flags over ``VIBRATION_*``
environment variables), set up logging, call one library function, return
its exit code. The flags of ``validate`` are generated from
`ValidateSettings`, so a setting and its flag cannot drift apart; the S3 keys
themselves have no flag (a flag shows in ``ps`` and in the pod spec), only
their ``*-file`` forms. This is the one place with ``except Exception``: an
unexpected error is logged, reported like any other failure and exits
`ExitCode.INTERNAL`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from vibration_core.validation import ExitCode
from vibration_infer.errors import UsageError
from vibration_infer.settings import ValidateSettings
from vibration_infer.validate import Outcome, emit, one_line, secrets_of, validate

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger("vibration_infer")

_NO_FLAG = frozenset({"s3_access_key", "s3_secret_key"})
_DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        return _serve(args[1:])
    parsed = _parser().parse_args(args)
    _setup_logging(parsed.log_level, parsed.log_format)
    try:
        settings = settings_from_args(parsed)
    except UsageError as exc:
        logger.error("usage_error reason=%r", exc.detail)  # noqa: TRY400 - a bad flag needs no traceback
        path = (
            parsed.termination_log or os.environ.get("VIBRATION_TERMINATION_LOG") or _DEFAULT_TERMINATION_LOG
        )
        emit(Outcome(code=ExitCode.USAGE, reason=one_line(str(exc))), Path(path))
        return int(ExitCode.USAGE)
    try:
        return int(validate(settings))
    except Exception as exc:  # the process boundary: anything unexpected is reported, not a bare traceback
        logger.exception("validate_crashed error=%s", type(exc).__name__)
        reason = one_line(f"internal error: {type(exc).__name__}: {exc}", secrets_of(settings))
        emit(
            Outcome(code=ExitCode.INTERNAL, reason=reason, node=settings.node_name), settings.termination_log
        )
        return int(ExitCode.INTERNAL)


def _serve(argv: list[str]) -> int:
    # Imported here: validate (the init container) must not pay for MQTT and HTTP.
    from vibration_infer.serve import run  # noqa: PLC0415

    return run(argv)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vibration-infer", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", help="run the serving loop (see vibration-infer serve --help)", add_help=False
    )
    validate_cmd = commands.add_parser(
        "validate",
        help="fetch, verify, load and test a model on this node",
        description="Every flag also reads VIBRATION_<NAME> from the environment; flags win.",
    )
    for name, info in ValidateSettings.model_fields.items():
        if name in _NO_FLAG:
            continue
        flag = "--" + name.replace("_", "-")
        if name == "min_class_recall":
            validate_cmd.add_argument(
                flag, action="append", metavar="LABEL=MIN", help=f"{info.description} Repeatable."
            )
        elif info.annotation is bool:
            validate_cmd.add_argument(flag, action="store_const", const=True, help=info.description)
        else:
            validate_cmd.add_argument(flag, metavar=name.upper(), help=info.description)
    validate_cmd.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    validate_cmd.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json in a cluster, text locally."
    )
    return parser


def parse_validate_args(argv: Sequence[str]) -> ValidateSettings:
    """The settings ``vibration-infer validate ARGS`` runs with (flags over the environment)."""
    return settings_from_args(_parser().parse_args(list(argv)))


def settings_from_args(parsed: argparse.Namespace) -> ValidateSettings:
    """Settings from parsed ``validate`` flags; `UsageError` names the first bad one."""
    given = {
        name: getattr(parsed, name)
        for name in ValidateSettings.model_fields
        if name not in _NO_FLAG and getattr(parsed, name, None) is not None
    }
    if "min_class_recall" in given:
        given["min_class_recall"] = _pairs(given["min_class_recall"])
    try:
        return ValidateSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise UsageError(f"{where}: {first['msg']}") from None


def _pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        label, sep, value = item.partition("=")
        if not sep or not label:
            raise UsageError(f"--min-class-recall takes LABEL=MIN, got {item!r}")
        out[label] = value
    return out


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)  # stdout carries the JSON report
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
    # A no-op when logging is already set up (an embedding program, pytest).
    logging.basicConfig(level=level, handlers=[handler])
