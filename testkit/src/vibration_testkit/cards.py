"""Model cards for tests: a complete valid card as data, card edits, and the tiny models' signal.

Light on purpose (the core only): a test that builds or edits cards does not
import the training stack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from vibration_core.features import EXTRACTOR_VERSION, FEATURE_NAMES
from vibration_core.modelcard import ModelCard
from vibration_core.reference import build_reference

SAMPLE_RATE = 25600.0
WINDOW_LENGTH = 2048
MODEL_ID = "spindle-classifier"
LABELS = ("normal", "imbalance", "misalignment", "bearing_fault")


@dataclass(frozen=True, eq=False)
class TinyModel:
    """A trained model: its artifact bytes, its card, and what made it."""

    data: bytes
    card: ModelCard
    estimator: Any = None
    x_test: Any = None


def card_with(card: ModelCard, updates: dict[str, Any]) -> ModelCard:
    """A copy of `card` with nested fields replaced (``{"signal": {"sample_rate": 51200.0}}``), validated."""

    def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in changes.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and key in base else value
        return out

    return ModelCard.model_validate(merge(card.model_dump(mode="json"), updates))


def for_artifact(card: ModelCard, data: bytes, **updates: Any) -> ModelCard:
    """`card` re-pointed at other artifact bytes (digest and size follow them)."""
    artifact = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        **updates.pop("artifact", {}),
    }
    return card_with(card, {"artifact": artifact, **updates})


@cache
def _reference_json() -> str:
    rng = np.random.default_rng(1)
    features = rng.gamma(2.0, 1.0, (400, len(FEATURE_NAMES)))
    labels = np.asarray(LABELS)[rng.integers(0, len(LABELS), 400)]
    reference = build_reference(features, labels, feature_names=FEATURE_NAMES, label_order=LABELS)
    return reference.model_dump_json()


def card_dict(sha256: str = "a" * 64, size_bytes: int = 1234, **changes: Any) -> dict[str, Any]:
    """A complete, valid card as JSON data, with top-level `changes` on top."""
    per_class = {label: {"precision": 0.9, "recall": 0.95, "f1": 0.92, "support": 100} for label in LABELS}
    card: dict[str, Any] = {
        "model_id": "spindle-classifier",
        "version": "v3",
        "framework": "sklearn-gradient-boosting 1.9.1",
        "format": "onnx",
        "created": "2026-11-24T22:00:00Z",
        "artifact": {"filename": "model.onnx", "sha256": sha256, "size_bytes": size_bytes},
        "labels": list(LABELS),
        "features": {"names": list(FEATURE_NAMES), "extractor_version": EXTRACTOR_VERSION},
        "signal": {"sample_rate": 25600.0, "window_length": 4096, "unit": "g"},
        "input": {"name": "features", "shape": [None, len(FEATURE_NAMES)], "dtype": "float32"},
        "outputs": [
            {"name": "label", "shape": [None], "dtype": "string"},
            {"name": "probabilities", "shape": [None, len(LABELS)], "dtype": "float32"},
        ],
        "training": {
            "samples": 400,
            "start": "2026-11-01T00:00:00Z",
            "end": "2026-11-02T00:00:00Z",
            "machines": ["m-01", "m-02"],
            "class_counts": dict.fromkeys(LABELS, 100),
        },
        "metrics": {
            "accuracy": 0.95,
            "macro_f1": 0.949,
            "weighted_f1": 0.95,
            "per_class": per_class,
            "test_samples": 80,
            "held_out": {
                "split": "grouped",
                "machines": ["m-02"],
                "recordings": 4,
                "recording_accuracy": 1.0,
            },
        },
        "reference": json.loads(_reference_json()),
        "hyperparameters": {"n_estimators": 150, "max_depth": 5},
    }
    return {**card, **changes}
