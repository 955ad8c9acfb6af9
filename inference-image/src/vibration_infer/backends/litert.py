"""LiteRT (TFLite) on the CPU: float and full-integer ``.tflite`` models."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vibration_infer.backends._tflite import TFLiteBackend, open_litert

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)


def load(path: Path, *, threads: int = 1) -> TFLiteBackend:
    """Open `path` in LiteRT on the CPU; raises `LoadError` when LiteRT refuses it."""
    backend = TFLiteBackend(open_litert(path, threads=threads), "litert:cpu", path)
    logger.info("backend_opened backend=%s path=%s threads=%d", backend.name, path, threads)
    return backend
