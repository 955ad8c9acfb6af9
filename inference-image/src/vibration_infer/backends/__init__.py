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

    def use_output(self, name: str) -> None:
        """Read the probabilities from the output called `name` (the card's), where the model has one.

        Without it (or without such an output) the last float output of shape (batch, classes)
        holds them: a model whose outputs are [probabilities, logits] would serve logits.
        """
        ...

    def predict_proba(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Return ``(n, n_classes)`` probabilities, columns in the card's label order."""
        ...
