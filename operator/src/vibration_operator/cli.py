"""``vibration-operator``: run the operator, or print the CRD or the RBAC rules it needs.

Thin: flags override the ``VIBRATION_OPERATOR_*`` environment, the settings
are built once here and passed down, logging is set up, and one library
function runs. The only ``except Exception`` of the operator is here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from vibration_operator.crd import crd_yaml
from vibration_operator.kube import CLUSTER_RULES, NAMESPACED_RULES
from vibration_operator.logging import setup_logging
from vibration_operator.settings import OperatorSettings

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger("vibration_operator")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vibration-operator", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator (settings from VIBRATION_OPERATOR_*)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", help="namespace to watch (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("--log-format", choices=["json", "text"], help="json in a cluster, text locally")
    run.add_argument(
        "--liveness", metavar="URL", help="serve kopf's liveness probe, e.g. http://0.0.0.0:8081/healthz"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    commands.add_parser("crd", help="print the VibrationModel CRD")
    commands.add_parser("rbac", help="print the RBAC rules the operator needs, as YAML")
    return parser


def rbac_yaml() -> str:
    """The rules: ``cluster`` (a ClusterRole) and ``namespaced`` (a Role per watched namespace)."""
    rules = {"cluster": list(CLUSTER_RULES), "namespaced": list(NAMESPACED_RULES)}
    return yaml.safe_dump(rules, sort_keys=False)


def _settings(args: argparse.Namespace) -> OperatorSettings:
    overrides: dict[str, Any] = {}
    if args.namespaces:
        overrides["namespaces"] = args.namespaces
    if args.all_namespaces:
        overrides["cluster_wide"] = True
    if args.log_format:
        overrides["log_format"] = args.log_format
    return OperatorSettings(**overrides)


def _run(args: argparse.Namespace) -> int:
    from vibration_operator.handlers import run_operator  # noqa: PLC0415 - kopf only for `run`

    try:
        settings = _settings(args)
        settings.watched_namespaces()
    except (ValidationError, ValueError) as exc:
        print(f"vibration-operator: invalid settings: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    setup_logging(settings.log_format, verbose=args.verbose)
    logger.info("operator_starting", extra={"namespaces": settings.watched_namespaces() or "all"})
    try:
        asyncio.run(run_operator(settings, liveness_endpoint=args.liveness))
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception:  # the process entry point: log what killed us, exit non-zero
        logger.exception("operator_failed")
        return EXIT_FAILED
    logger.info("operator_stopped")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vibration-operator``."""
    args = _parser().parse_args(argv)
    if args.command == "crd":
        sys.stdout.write(crd_yaml())
        return EXIT_OK
    if args.command == "rbac":
        sys.stdout.write(rbac_yaml())
        return EXIT_OK
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
