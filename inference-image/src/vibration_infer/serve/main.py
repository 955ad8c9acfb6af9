"""The ``serve`` command: flags over ``VIBRATION_*`` environment, logging, signals, one `ServeApp`.

Thin by design. The flags are generated from `ServeSettings` (``--mqtt-url``
for ``mqtt_url``), so a setting and its flag cannot drift apart; the MQTT
password has no flag (a flag shows in ``ps`` and the pod spec), only its
``--mqtt-password-file`` form. SIGTERM and SIGINT stop the loop gracefully.
This is the process entry: its ``except Exception`` logs what killed the process and exits
non-zero. The others catch per unit of work (a batch, a message, a swap, an MQTT session) so
that one bad unit cannot stop the loop, and each says so where it stands.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from typing import TYPE_CHECKING

from vibration_core.errors import VibrationCoreError
from vibration_core.logs import setup_logging
from vibration_core.validation import ExitCode
from vibration_infer.cmdline import add_settings_flags, settings_from_flags
from vibration_infer.errors import InferenceError, UsageError
from vibration_infer.serve.app import ServeApp
from vibration_infer.serve.settings import ServeSettings

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

logger = logging.getLogger("vibration_infer.serve")

_NO_FLAG = frozenset({"mqtt_password"})
_PAIRS = frozenset({"alert_severity", "min_class_recall"})
_LISTS = frozenset({"normal_labels", "alert_labels"})


def run(argv: Sequence[str] | None = None) -> int:
    """Run the serving loop until SIGTERM; return the process exit code."""
    parsed = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    setup_logging(parsed.log_level, parsed.log_format, replace=True)
    try:
        settings = build_settings(parsed)
    except UsageError as exc:
        logger.error("usage_error", extra={"reason": exc.detail})  # noqa: TRY400 - a bad flag needs no traceback
        return int(ExitCode.USAGE)
    try:
        return serve(settings)
    except Exception:  # the process boundary: log it and exit non-zero
        logger.exception("serve_crashed")
        return int(ExitCode.INTERNAL)


def serve(settings: ServeSettings) -> int:
    """Load the starting model, serve until a stop signal, shut down cleanly."""
    app = ServeApp(settings)
    try:
        app.install(app.load_initial())
    except (InferenceError, VibrationCoreError, OSError) as exc:
        # Stay up, unready: a valid target (hot swap) can still bring a model.
        logger.error("initial_model_unavailable", extra={"reason": str(exc)})  # noqa: TRY400 - expected, typed
        app.status_message(f"no model: {exc}"[:500])

    def stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal_received", extra={"signal": signal.Signals(signum).name})
        app.signal_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Everything loaded so far (runtimes, the model, pydantic's schemas) out of the
    # collector's sight: a full collection walks tens of thousands of objects, for
    # milliseconds, while a window waits. A hot swap collects the replaced model and freezes again (ServeApp).
    gc.freeze()
    app.start()
    logger.info(
        "serve_started",
        extra={
            "node": settings.node_name,
            "mqtt": settings.mqtt_url,
            "subscription": app.subscription,
            "http_port": app.http.port,
        },
    )
    try:
        app.run_forever()
    finally:
        app.shutdown()
    return int(ExitCode.PASSED)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vibration-infer serve",
        description="Serve a validated model on MQTT. Every flag also reads VIBRATION_<NAME>; flags win.",
    )
    add_settings_flags(parser, ServeSettings, no_flag=_NO_FLAG, pairs=_PAIRS, lists=_LISTS)
    return parser


def build_settings(parsed: argparse.Namespace) -> ServeSettings:
    """`ServeSettings` from the parsed flags over the environment; raises `UsageError`."""
    return settings_from_flags(ServeSettings, parsed, no_flag=_NO_FLAG, pairs=_PAIRS)
