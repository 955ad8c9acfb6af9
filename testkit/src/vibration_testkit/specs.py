"""VibrationModel specs for the operator's decision tests: one hall, a version per call."""

from __future__ import annotations

from typing import Any

from vibration_core.spec import VibrationModelSpec


def sha(version: str) -> str:
    """A stand-in digest, the same for the same version and different between versions."""
    return f"{sum(map(ord, version)):064x}"


def make_spec(
    version: str = "v2", *, coral: bool = False, canaries: int = 1, **rollout: Any
) -> VibrationModelSpec:
    """The spec of hall-a at `version` (an Edge TPU model on coral nodes with `coral`), rollout overrides."""
    return VibrationModelSpec.model_validate(
        {
            "version": version,
            "artifact": {"uri": f"s3://models/spindle/{version}/model.onnx", "sha256": sha(version)},
            "format": "edgetpu" if coral else "onnx",
            "accelerator": "coral" if coral else "cpu",
            "nodeSelector": {"edge.vibration.io/hall": "hall-a"},
            "mqtt": {"broker": "mqtt://mosquitto.hall-a:1883", "topicPrefix": "factory/hall-a"},
            "validation": {"minAccuracy": 0.93},
            "rollout": {"canaryNodes": canaries, **rollout},
        }
    )
