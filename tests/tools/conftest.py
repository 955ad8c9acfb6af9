"""A model in the layout the bench's probes read: model.onnx and modelcard.json in one folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bench_serve_parts import RATE
from vibration_testkit import tiny_models
from vibration_testkit.cards import card_with

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ONNX model whose card takes the bench's windows (4096 samples at its rate)."""
    model = tiny_models.onnx_model(tiny_models.train_table())
    # A card for other windows refuses them all.
    card = card_with(model.card, {"signal": {"sample_rate": RATE, "window_length": 4096}})
    folder = tmp_path_factory.mktemp("model")
    (folder / card.artifact.filename).write_bytes(model.data)
    card.save(folder / "modelcard.json")
    return folder
