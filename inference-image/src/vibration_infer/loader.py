"""Load a model for serving or validation, checking its contract on the way in.

`load_model` is the one way in for both jobs, in this order: the artifact's
digest against the card and the VibrationModel; the card's features against
this extractor; the runtime chosen from the card's format and the
accelerator (given the card's input transform, which a TFLite backend applies
before quantizing); the runtime's own signature against the card. A model that
fails any step is never returned, so nothing can serve it. `predict` is the
path from raw windows to labels both the validator and the serving loop use.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vibration_core.features import edge_bins_moved, extract_features
from vibration_core.modelcard import check_extractor, check_signal, check_signature, sha256_file
from vibration_infer.errors import DigestMismatchError, LoadError

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

    from vibration_core.modelcard import ModelCard
    from vibration_infer.backends import Backend
    from vibration_infer.settings import Accelerator, EdgeTpuFallback

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model whose digest and contract were checked, ready to run."""

    card: ModelCard
    backend: Backend
    artifact: Path
    sha256: str
    load_seconds: float
    """Wall time of opening the runtime session, s."""


@dataclass(frozen=True, eq=False)
class Predictions:
    """The outcome of one batch of windows."""

    probabilities: npt.NDArray[np.float32]
    """``(n, n_classes)``, columns in the card's label order."""
    indices: npt.NDArray[np.intp]
    """Index of the most probable class of each window."""
    labels: tuple[str, ...]
    """The card's label of each window."""
    confidences: npt.NDArray[np.float32]
    """Probability of the chosen class."""


def verify_digest(artifact: Path, card: ModelCard, expected_sha256: str | None = None) -> str:
    """Return the artifact's sha256 after checking it against the card and the expected digest."""
    actual = sha256_file(artifact)
    if expected_sha256 is not None and actual != expected_sha256:
        raise DigestMismatchError(artifact.name, expected_sha256, actual)
    if actual != card.artifact.sha256:
        raise DigestMismatchError(artifact.name, card.artifact.sha256, actual)
    return actual


def load_model(
    artifact: Path,
    card: ModelCard,
    *,
    accelerator: Accelerator = "cpu",
    edgetpu_fallback: EdgeTpuFallback = "cpu",
    expected_sha256: str | None = None,
    threads: int = 1,
) -> LoadedModel:
    """Verify, open and contract-check a model; raises one of the package's typed errors."""
    digest = verify_digest(artifact, card, expected_sha256)
    check_extractor(card)
    signal = card.signal
    if card.features.extractor_version == "2.0.0" and edge_bins_moved(
        signal.window_length, signal.sample_rate
    ):
        logger.warning(
            "extractor_edge_bins_moved",
            extra={
                "model_id": card.model_id,
                "version": card.version,
                "hint": f"trained on extractor 2.0.0's features, which put a band-edge bin of "
                f"{signal.sample_rate:g} Hz x {signal.window_length} in the other band; this extractor "
                f"computes them as defined: retrain (or import again) for exact parity",
            },
        )
    started = time.perf_counter()
    backend = _open(artifact, card, accelerator=accelerator, fallback=edgetpu_fallback, threads=threads)
    seconds = time.perf_counter() - started
    backend.use_output(card.outputs[-1].name)
    check_signature(card, backend.signature())
    logger.info(
        "model_loaded",
        extra={
            "model_id": card.model_id,
            "version": card.version,
            "sha256": digest,
            "backend": backend.name,
            "seconds": round(seconds, 3),
        },
    )
    return LoadedModel(card=card, backend=backend, artifact=artifact, sha256=digest, load_seconds=seconds)


def predict(model: LoadedModel, windows: npt.ArrayLike, sample_rate: float) -> Predictions:
    """Run raw windows ``(n, samples)`` through the extractor and the model.

    Refuses (`ContractMismatchError`) windows of another sample rate or
    length than the card's; NaN or inf samples raise the extractor's
    `FeatureInputError`.
    """
    batch = np.asarray(windows)
    length = int(batch.shape[-1]) if batch.ndim else 0
    check_signal(model.card, sample_rate, length)
    probabilities = model.backend.predict_proba(extract_features(batch, sample_rate))
    indices = np.argmax(probabilities, axis=1)
    labels = model.card.labels
    return Predictions(
        probabilities=probabilities,
        indices=indices,
        labels=tuple(labels[i] for i in indices.tolist()),
        confidences=probabilities[np.arange(indices.size), indices],
    )


def _open(
    artifact: Path, card: ModelCard, *, accelerator: Accelerator, fallback: EdgeTpuFallback, threads: int
) -> Backend:
    # Each backend module is imported here, on demand: an ONNX node never
    # imports LiteRT, and the other way round.
    if card.format == "onnx":
        if accelerator == "coral":
            if fallback == "fail":
                raise LoadError(
                    str(artifact), "an ONNX model cannot run on the Edge TPU (edgetpu_fallback is fail)"
                )
            logger.warning(
                "edgetpu_unavailable", extra={"fallback": "cpu", "reason": "ONNX models run on ONNX Runtime"}
            )
        from vibration_infer.backends import onnx  # noqa: PLC0415

        return onnx.load(artifact, threads=threads)
    if accelerator == "coral":
        from vibration_infer.backends import edgetpu  # noqa: PLC0415

        return edgetpu.load(artifact, fallback=fallback, threads=threads, transform=card.input_transform)
    from vibration_infer.backends import litert  # noqa: PLC0415

    return litert.load(artifact, threads=threads, transform=card.input_transform)
