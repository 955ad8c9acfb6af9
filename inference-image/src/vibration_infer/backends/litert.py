"""LiteRT (TFLite) on the CPU: float and full-integer ``.tflite`` models."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vibration_infer.backends._tflite import TFLiteBackend, open_litert

if TYPE_CHECKING:
    from pathlib import Path

    from vibration_core.modelcard_parts import InputTransform

logger = logging.getLogger(__name__)


def load(path: Path, *, threads: int = 1, transform: InputTransform | None = None) -> TFLiteBackend:
    """Open `path` in LiteRT on the CPU, `transform` (the card's) before its input; `LoadError` if refused."""
    backend = TFLiteBackend(open_litert(path, threads=threads), "litert:cpu", path, transform)
    logger.info("backend_opened", extra={"backend": backend.name, "path": path, "threads": threads})
    return backend
