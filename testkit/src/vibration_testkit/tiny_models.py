"""Tiny real models for the serving and validation tests, trained at test time; nothing binary committed.

The ONNX model goes through the training job's own steps (fit, export, card)
on simulated windows, 2048 samples at 25.6 kHz, 20 boosting stages. The
TFLite models are softmax regressions fitted by scikit-learn and written by
`vibration_testkit.tflite`; the full-integer one takes transformed features,
as the training job's INT8 path makes them, and carries the transform in its
card. The node's test data is a second, independently seeded simulation.

This module imports the training stack (seconds): the fixtures that call it
import it when they first run, not when their conftest loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.linear_model import LogisticRegression

from vibration_testkit.cards import MODEL_ID, SAMPLE_RATE, WINDOW_LENGTH, TinyModel, card_with
from vibration_testkit.tflite import build_tflite, tflite_card
from vibration_train.card import build_card, write_model
from vibration_train.data import TrainingTable
from vibration_train.edgetpu_convert import fit_input_transform
from vibration_train.fit import FitConfig, fit
from vibration_train.onnx_export import to_onnx
from vibration_train.simulator import SimulatedData, simulate

if TYPE_CHECKING:
    from pathlib import Path

TINY = FitConfig(n_estimators=20, max_depth=3)


def simulated(n: int, seed: int) -> SimulatedData:
    """`n` windows of the tests' signal from four machines."""
    return simulate(n, seed=seed, sample_rate=SAMPLE_RATE, window_length=WINDOW_LENGTH, machines=4)


def train_table() -> TrainingTable:
    """The windows every tiny model is fitted on."""
    return TrainingTable.from_simulated(simulated(480, seed=7))


def onnx_model(table: TrainingTable) -> TinyModel:
    """A 20-stage gradient boosting model, exported to ONNX with its card, as `vibration-train fit` does."""
    result = fit(table, TINY)
    model = to_onnx(result.estimator, table.features.shape[1])
    card = build_card(table=table, result=result, config=TINY, model=model, model_id=MODEL_ID, version="v1")
    return TinyModel(model.data, card, result.estimator, result.x_test)


def tflite_model(table: TrainingTable, onnx: TinyModel) -> TinyModel:
    """A float TFLite softmax regression on the standardised features, with its card."""
    x, labels = table.features.astype(np.float64), table.labels
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-12
    lr = LogisticRegression(max_iter=2000).fit((x - mean) / std, labels)
    if tuple(lr.classes_) != onnx.card.labels:
        raise AssertionError(f"class order {tuple(lr.classes_)} is not the card's {onnx.card.labels}")
    # Standardisation folded into the layer: W' = W / std, b' = b - W' . mean.
    weights = lr.coef_ / std
    bias = lr.intercept_ - weights @ mean
    data = build_tflite(weights, bias)
    card = tflite_card(onnx.card, data, "float32", framework="test softmax regression")
    return TinyModel(data, card, (weights, bias))


def int8_model(table: TrainingTable, onnx: TinyModel) -> TinyModel:
    """A full-integer softmax regression on transformed features; the card holds the transform.

    `estimator` is (weights, bias, transform): float probabilities are
    ``softmax_reference(transform.apply(features), weights, bias)``.
    """
    transform = fit_input_transform(table.features)
    x = transform.apply(table.features)
    lr = LogisticRegression(max_iter=2000).fit(x, table.labels)
    if tuple(lr.classes_) != onnx.card.labels:
        raise AssertionError(f"class order {tuple(lr.classes_)} is not the card's {onnx.card.labels}")
    logits = x @ lr.coef_.T + lr.intercept_
    in_scale, logit_scale = float(np.abs(x).max() / 127), float(np.abs(logits).max() / 127)
    data = build_tflite(lr.coef_, lr.intercept_, int8=(in_scale, 0, logit_scale, 0))
    card = tflite_card(
        onnx.card,
        data,
        "int8",
        framework="test int8 softmax regression",
        input_transform=transform.model_dump(),
    )
    return TinyModel(data, card, (lr.coef_, lr.intercept_, transform))


def publish(root: Path, model: TinyModel, version: str | None = None) -> Path:
    """Write a model into a file registry; return the artifact's path."""
    card = model.card if version is None else card_with(model.card, {"version": version})
    artifact, _ = write_model(root / card.model_id / card.version, model.data, card)
    return artifact
