"""Model runtimes behind one small protocol.

Each runtime lives in its own module (`onnx`, `litert`, `edgetpu`), imported
lazily by `vibration_infer.loader`, and none imports another: the ONNX image
path never pays for LiteRT and the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from vibration_core.modelcard import RuntimeSignature


class Backend(Protocol):
    """A loaded model that maps a feature batch to class probabilities."""

    @property
    def name(self) -> str:
        """Runtime and device, e.g. ``onnxruntime:CPUExecutionProvider`` or ``litert:edgetpu``."""
        ...

    def signature(self) -> RuntimeSignature:
        """Inputs and output width as the runtime reports them, for the contract check."""
        ...

    def predict_proba(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Return ``(n, n_classes)`` probabilities, columns in the card's label order."""
        ...
