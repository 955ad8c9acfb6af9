"""The ``vibration-infer`` command: ``validate`` (the init container) and ``serve``.

Thin by design: parse flags, build the settings (flags over ``VIBRATION_*``
environment variables), set up logging, call one library function, return
its exit code. The flags of ``validate`` are generated from
`ValidateSettings`, so a setting and its flag cannot drift apart; the S3 keys
themselves have no flag (a flag shows in ``ps`` and in the pod spec), only
their ``*-file`` forms. This is validate's one ``except Exception``: an
unexpected error is logged, reported like any other failure and exits
`ExitCode.INTERNAL`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vibration_core.logs import setup_logging
from vibration_core.validation import ExitCode
from vibration_infer.cmdline import add_settings_flags, settings_from_flags
from vibration_infer.errors import UsageError
from vibration_infer.outcome import Outcome, emit, one_line, secrets_of
from vibration_infer.settings import ValidateSettings
from vibration_infer.validate import validate

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger("vibration_infer")

_NO_FLAG = frozenset({"s3_access_key", "s3_secret_key"})
_PAIRS = frozenset({"min_class_recall", "max_regression_per_class"})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        return _serve(args[1:])
    parsed = _parser().parse_args(args)
    setup_logging(parsed.log_level, parsed.log_format, replace=False)
    try:
        settings = settings_from_args(parsed)
    except UsageError as exc:
        logger.error("usage_error", extra={"reason": exc.detail})  # noqa: TRY400 - a bad flag needs no traceback
        path = parsed.termination_log or os.environ.get("VIBRATION_TERMINATION_LOG")
        emit(Outcome(code=ExitCode.USAGE, reason=one_line(str(exc))), Path(path) if path else None)
        return int(ExitCode.USAGE)
    try:
        return int(validate(settings))
    except Exception as exc:  # the process boundary: anything unexpected is reported, not a bare traceback
        logger.exception("validate_crashed")
        reason = one_line(f"internal error: {type(exc).__name__}: {exc}", secrets_of(settings))
        emit(
            Outcome(code=ExitCode.INTERNAL, reason=reason, node=settings.node_name), settings.termination_log
        )
        return int(ExitCode.INTERNAL)


def _serve(argv: list[str]) -> int:
    # Imported here: validate (the init container) must not pay for MQTT and HTTP.
    from vibration_infer.serve.main import run  # noqa: PLC0415

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
    add_settings_flags(validate_cmd, ValidateSettings, no_flag=_NO_FLAG, pairs=_PAIRS, bool_switches=True)
    return parser


def parse_validate_args(argv: Sequence[str]) -> ValidateSettings:
    """The settings ``vibration-infer validate ARGS`` runs with (flags over the environment)."""
    return settings_from_args(_parser().parse_args(list(argv)))


def settings_from_args(parsed: argparse.Namespace) -> ValidateSettings:
    """Settings from parsed ``validate`` flags; `UsageError` names the first bad one."""
    return settings_from_flags(ValidateSettings, parsed, no_flag=_NO_FLAG, pairs=_PAIRS)
