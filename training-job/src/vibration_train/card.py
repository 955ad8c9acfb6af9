"""Build the model card of a fitted model and write it beside its artifact.

Every figure comes from the objects the pipeline already made: the labels in
the estimator's output order, the metrics the report printed, the ONNX
signature read back from the exported graph. The reference distribution (what
drift is measured against) comes from every window of the table: the split
holds out whole machines, and a reference without them would show their
normal windows as drift on a node that sees every machine of the hall.
`write_model` puts the artifact and the card into place by rename, the card
last, so a reader never finds a card that names bytes not yet there.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import numpy as np
import skl2onnx
import sklearn

from vibration_core.features import EXTRACTOR_VERSION, FEATURE_NAMES
from vibration_core.modelcard import CARD_FILENAME, ModelCard
from vibration_core.modelcard_parts import Artifact, FeatureSpec, Signal, TrainingData
from vibration_core.reference import ReferenceDistribution, build_reference
from vibration_train.errors import OutputError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from vibration_train.data import TrainingTable
    from vibration_train.fit import FitConfig, FitResult
    from vibration_train.onnx_export import OnnxModel

logger = logging.getLogger(__name__)

ONNX_FILENAME: Final = "model.onnx"


def build_card(
    *,
    table: TrainingTable,
    result: FitResult,
    config: FitConfig,
    model: OnnxModel,
    model_id: str,
    version: str,
    created: datetime | None = None,
) -> ModelCard:
    """Return the card of an ONNX model fitted on `table`.

    Raises pydantic's `ValidationError` for an id or version the card's
    patterns refuse (the CLI checks those before training).
    """
    opsets = ", ".join(f"{domain} {version}" for domain, version in sorted(model.opsets.items()))
    return ModelCard(
        model_id=model_id,
        version=version,
        framework=(
            f"sklearn-gradient-boosting {sklearn.__version__}; skl2onnx {skl2onnx.__version__}; "
            f"opsets {opsets}"
        ),
        format="onnx",
        created=created or datetime.now(UTC),
        artifact=artifact_of(ONNX_FILENAME, model.data),
        labels=result.labels,
        features=FeatureSpec(names=FEATURE_NAMES, extractor_version=EXTRACTOR_VERSION),
        signal=Signal(sample_rate=table.sample_rate, window_length=table.window_length, unit=table.unit),
        input=model.input,
        outputs=model.outputs,
        training=training_summary(table, result.labels),
        metrics=result.metrics,
        reference=table_reference(table, result.labels),
        hyperparameters=config.as_hyperparameters(),
    )


def artifact_of(filename: str, data: bytes) -> Artifact:
    """The card's record of an artifact's bytes."""
    return Artifact(filename=filename, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def training_summary(table: TrainingTable, labels: tuple[str, ...]) -> TrainingData:
    """The card's summary of the table a model was trained (or measured) on."""
    start, end = table.date_range()
    return TrainingData(
        samples=int(table.labels.size),
        start=start,
        end=end,
        machines=table.machine_ids(),
        class_counts={label: int(np.count_nonzero(table.labels == label)) for label in labels},
    )


def table_reference(table: TrainingTable, labels: tuple[str, ...]) -> ReferenceDistribution:
    """What drift is measured against: every window of the table (see the module docstring)."""
    return build_reference(table.features, table.labels, feature_names=FEATURE_NAMES, label_order=labels)


def write_model(
    out_dir: Path, artifact: bytes, card: ModelCard, *, beside: Mapping[str, bytes] | None = None
) -> tuple[Path, Path]:
    """Write `artifact` and `card` (and the files `beside` it, by name) into `out_dir`; return their paths.

    All go to temporary names first. An older card in `out_dir` is removed
    before the new files replace the old ones, and the new card is renamed
    into place last: at every moment the directory holds either no card or a
    card that matches the artifact beside it.
    """
    artifact_path = out_dir / card.artifact.filename
    card_path = out_dir / CARD_FILENAME
    files = {artifact_path: artifact} | {out_dir / name: data for name, data in (beside or {}).items()}
    temporary = {path: out_dir / f".{path.name}.tmp" for path in files}
    card_tmp = out_dir / f".{CARD_FILENAME}.tmp"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, data in files.items():
            temporary[path].write_bytes(data)
        card_tmp.write_text(card.to_json(), encoding="utf-8")
        card_path.unlink(missing_ok=True)
        for path, tmp in temporary.items():
            tmp.replace(path)
        card_tmp.replace(card_path)
    except OSError as exc:
        for leftover in (*temporary.values(), card_tmp):
            leftover.unlink(missing_ok=True)
        raise OutputError(str(out_dir), exc.strerror or str(exc)) from exc
    logger.info(
        "model_written",
        extra={
            "dir": out_dir,
            "artifact": artifact_path.name,
            "sha256": card.artifact.sha256,
            "bytes": card.artifact.size_bytes,
        },
    )
    return artifact_path, card_path
