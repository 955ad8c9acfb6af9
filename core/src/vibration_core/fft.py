"""The real FFT of the extractor: scipy's pocketfft, without the rest of scipy.

Why not ``import scipy.fft``: it also imports scipy's array-API layer,
``numpy.testing``, ``numpy.f2py`` and ``unittest`` (about 270 modules), which
every serving pod would pay in memory and start time (serve's RSS and start
to ready: docs/benchmarks.md), for one function. The compiled module under
it, ``scipy/fft/_pocketfft/pypocketfft``, needs only numpy; loaded from its
file, it gives the same result bit for bit (a test compares them).
``numpy.fft`` is no substitute: on a batch of 4096-sample float32 windows it
is about four times slower (no SIMD across rows).

Should a future scipy move that module or change its call, `rfft` falls back
to ``scipy.fft.rfft`` and logs why once; the features do not change.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

logger = logging.getLogger(__name__)


class _R2C(Protocol):
    # The compiled function's own signature, positional only.
    def __call__(  # noqa: PLR0917
        self,
        a: npt.NDArray[np.float32],
        axes: tuple[int, ...],
        forward: bool,  # noqa: FBT001
        inorm: int,
        out: None,
        nthreads: int,
    ) -> npt.NDArray[np.complex64]: ...


def _load_pocketfft() -> _R2C | None:
    """Return pocketfft's ``r2c`` from scipy's extension module, or None when it is not as expected."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "fft" / "_pocketfft"
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    files = sorted(p for p in folder.glob("pypocketfft*") if p.name.endswith(suffixes))
    if not files:
        return None
    # The module's own name: its init function is PyInit_pypocketfft.
    loader = importlib.machinery.ExtensionFileLoader("pypocketfft", str(files[0]))
    module_spec = importlib.util.spec_from_file_location("pypocketfft", files[0], loader=loader)
    if module_spec is None:
        return None
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    r2c: _R2C = module.r2c
    # A known transform: an impulse has a flat spectrum. Checks the call as well as the result.
    probe = _forward(r2c, np.array([[1, 0, 0, 0]], dtype=np.float32))
    if probe.dtype != np.complex64 or not np.array_equal(probe, np.ones((1, 3), dtype=np.complex64)):
        return None
    return r2c


def _forward(r2c: _R2C, block: npt.NDArray[np.float32]) -> npt.NDArray[np.complex64]:
    # axes (1,), forward, no normalisation, a new output array, one thread
    return r2c(block, (1,), True, 0, None, 1)  # noqa: FBT003 - positional in C


def _scipy_rfft(block: npt.NDArray[np.float32]) -> npt.NDArray[np.complex64]:
    import scipy.fft  # noqa: PLC0415 - the fallback only: see the module docstring

    spectrum: npt.NDArray[np.complex64] = scipy.fft.rfft(block, axis=1, workers=1)
    return spectrum


Transform = Callable[["npt.NDArray[np.float32]"], "npt.NDArray[np.complex64]"]


@functools.cache
def transform() -> Transform:
    """The FFT `rfft` runs: pocketfft's own, loaded once, else ``scipy.fft.rfft`` (logged)."""
    try:
        r2c = _load_pocketfft()
    # Any failure of another package's private module means one thing: use its public API.
    except Exception as exc:  # noqa: BLE001
        logger.info("fft_fallback", extra={"reason": f"{type(exc).__name__}: {exc}"})
        return _scipy_rfft
    if r2c is None:
        logger.info("fft_fallback", extra={"reason": "scipy's pypocketfft module not found as expected"})
        return _scipy_rfft
    return functools.partial(_forward, r2c)


def rfft(block: npt.NDArray[np.float32]) -> npt.NDArray[np.complex64]:
    """The one-sided FFT of each row of a float32 ``(n, samples)`` block, one thread."""
    return transform()(block)


def backend() -> str:
    """``pocketfft`` or ``scipy.fft``: which one `rfft` runs."""
    return "scipy.fft" if transform() is _scipy_rfft else "pocketfft"
