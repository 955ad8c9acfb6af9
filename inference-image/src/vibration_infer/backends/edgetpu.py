"""LiteRT with the Coral Edge TPU delegate (``libedgetpu.so.1``).

The delegate comes from Coral's ``libedgetpu1-std`` Debian package in the
Edge TPU image. Coral's own pycoral is a thin layer over the same delegate;
it is used when it is importable and really is Coral's (it has
``pycoral.utils.edgetpu``; the unrelated PyPI project of that name has not).

Without a usable delegate the `fallback` policy decides: ``cpu`` logs
``edgetpu_unavailable fallback=cpu`` and runs the model on LiteRT's CPU
kernels (a model compiled by ``edgetpu_compiler`` holds a custom op the CPU
cannot run, and then fails to load with its own reason), ``fail`` raises
`LoadError`. The library is probed with ``ctypes`` before LiteRT's
``load_delegate`` is called: a failed ``load_delegate`` leaves a half-built
object whose destructor raises.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from typing import TYPE_CHECKING, Literal

from vibration_infer.backends._tflite import TFLiteBackend, open_litert
from vibration_infer.errors import LoadError

if TYPE_CHECKING:
    from pathlib import Path

    from vibration_core.modelcard_parts import InputTransform
    from vibration_infer.backends._tflite import Interpreter

logger = logging.getLogger(__name__)

LIBRARY = "libedgetpu.so.1"


def load(
    path: Path,
    *,
    fallback: Literal["cpu", "fail"] = "cpu",
    device: str | None = None,
    threads: int = 1,
    library: str = LIBRARY,
    transform: InputTransform | None = None,
) -> TFLiteBackend:
    """Open `path` on the Edge TPU (`device` such as ``usb:0``), or per `fallback` on the CPU.

    `transform` (the card's) is applied to the features before the input tensor.
    """
    try:
        interpreter = _open_on_tpu(path, device=device, threads=threads, library=library)
    except _UnavailableError as exc:
        if fallback == "fail":
            raise LoadError(str(path), f"Edge TPU unavailable ({exc}) and edgetpu_fallback is fail") from None
        logger.warning("edgetpu_unavailable", extra={"fallback": "cpu", "reason": str(exc), "path": path})
        backend = TFLiteBackend(
            open_litert(path, threads=threads), "litert:cpu(edgetpu-fallback)", path, transform
        )
    else:
        backend = TFLiteBackend(interpreter, "litert:edgetpu", path, transform)
    logger.info("backend_opened", extra={"backend": backend.name, "path": path})
    return backend


class _UnavailableError(Exception):
    """No Edge TPU: the library or the device is missing."""


def _open_on_tpu(path: Path, *, device: str | None, threads: int, library: str) -> Interpreter:
    try:
        ctypes.CDLL(library)
    except OSError as exc:
        raise _UnavailableError(f"{library} not found") from exc
    options = {"device": device} if device else {}
    if _coral_pycoral():
        from pycoral.utils.edgetpu import make_interpreter  # noqa: PLC0415 - optional, Coral's own package

        try:
            interpreter: Interpreter = make_interpreter(str(path), device=device)
            interpreter.allocate_tensors()
        except ValueError as exc:  # pycoral's "Failed to load delegate"
            raise _UnavailableError(f"no Edge TPU device ({exc})") from exc
        except RuntimeError as exc:
            raise LoadError(str(path), f"Edge TPU refused the model: {exc}") from exc
        return interpreter
    try:
        from ai_edge_litert.interpreter import load_delegate  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise LoadError(str(path), "LiteRT (ai-edge-litert) is not installed in this image") from exc
    try:
        delegate = load_delegate(library, options)
    except (ValueError, OSError) as exc:  # the library loads, but finds no device
        raise _UnavailableError(f"no Edge TPU device ({exc})") from exc
    return open_litert(path, threads=threads, delegates=[delegate])


def _coral_pycoral() -> bool:
    try:
        return importlib.util.find_spec("pycoral.utils.edgetpu") is not None
    except ImportError:  # a `pycoral` without `utils`: not Coral's
        return False
