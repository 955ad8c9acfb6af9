"""The Edge TPU path of `fit`: a Keras MLP as a full-integer INT8 TFLite model, with its card.

The split of the gradient-boosting model (`vibration_train.split`: the same
table, seed and share) holds out the same windows. The MLP
(`edgetpu_convert`) is trained on transformed features (log and
standardisation, `fit_input_transform`),
converted to INT8 and measured where it will run, in LiteRT, on the whole
held-out split, fed as serving feeds it (the card's transform, then the
input tensor's quantization): its accuracy stands beside the float model's,
and a gap wider than `EdgeTpuConfig.max_gap_points` fails the run. When ``edgetpu_compiler``
is on PATH it compiles the INT8 model into ``model_edgetpu.tflite``; without
it the CPU INT8 model is the artifact and the run says so.

The card describes the artifact it names: format ``edgetpu`` or ``tflite``,
the input tensor exactly as LiteRT reports it (the compiler keeps the input
and output tensors), the input transform serving applies before it, labels in
output order, the INT8 model's metrics.

Longer than the others: the INT8 path is one sequence (MLP, representative
data, full-integer conversion, measurement, compilation, card) whose steps
share the split and the scaler.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vibration_core.features import EXTRACTOR_VERSION, FEATURE_NAMES
from vibration_core.modelcard import ModelCard
from vibration_core.modelcard_parts import FeatureSpec, Signal, TensorSpec
from vibration_train.card import artifact_of, table_reference, training_summary, write_model
from vibration_train.edgetpu_convert import (
    MlpConfig,
    TrainedMlp,
    fit_input_transform,
    float_probabilities,
    tensorflow_version,
    to_int8_tflite,
    train_mlp,
)
from vibration_train.edgetpu_int8 import (
    COMPILER,
    EDGETPU_FILENAME,
    INT8_FILENAME,
    compile_for_edgetpu,
    run_int8,
)
from vibration_train.errors import QuantizationError
from vibration_train.fit import compute_metrics
from vibration_train.report import format_held_out, format_report
from vibration_train.split import split_table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

    import numpy.typing as npt

    from vibration_core.modelcard_parts import InputTransform, Metrics
    from vibration_train.data import TrainingTable
    from vibration_train.split import Split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeTpuConfig:
    """Settings of the Edge TPU path."""

    mlp: MlpConfig = field(default_factory=MlpConfig)
    random_state: int = 42
    """Seed of the split (as `FitConfig.random_state`), the MLP and the calibration rows."""
    test_size: float = 0.2
    """Held-out share, split exactly as the gradient-boosting model's."""
    max_gap_points: float = 2.0
    """Largest float-minus-INT8 accuracy gap, in points, that still writes a model (target: 0.5)."""
    compiler: str = COMPILER
    """Name or path of the Edge TPU compiler; looked up on PATH."""
    compiler_timeout_s: float = 300.0


@dataclass(frozen=True, eq=False)
class EdgeTpuResult:
    """What the Edge TPU path wrote and measured."""

    card: ModelCard
    artifact_path: Path
    card_path: Path
    int8_path: Path
    float_accuracy: float
    int8_accuracy: float
    epochs: int
    train_rows: int
    test_rows: int
    seconds: dict[str, float]
    compile_note: str
    """What the Edge TPU compiler did, or that it was not found."""
    split_reason: str
    """Why the split is the card's kind (`vibration_train.split.Split.reason`)."""

    @property
    def gap_points(self) -> float:
        """Float minus INT8 accuracy, in percentage points."""
        return 100 * (self.float_accuracy - self.int8_accuracy)

    def summary(self) -> str:
        """``edgetpu: float accuracy 0.9512, int8 accuracy 0.9487, gap 0.25 points``."""
        return (
            f"edgetpu: float accuracy {self.float_accuracy:.4f}, int8 accuracy {self.int8_accuracy:.4f}, "
            f"gap {self.gap_points:.2f} points"
        )

    def report(self) -> str:
        """What `fit --format edgetpu` prints: split, INT8 report, gap, compile, files, time."""
        card = self.card
        signal = card.signal
        timings = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.seconds.items())
        head = (
            f"{card.training.samples} windows at {signal.sample_rate:g} Hz x {signal.window_length}: "
            f"{self.train_rows} train, {self.test_rows} test\n"
            f"{format_held_out(card.metrics.held_out, self.split_reason)}"
            f"mlp: {self.epochs} epochs (early stopping); the INT8 model in LiteRT on the test split:\n"
        )
        tail = (
            f"{self.summary()}\n{self.compile_note}\n"
            f"wrote {self.artifact_path} ({card.artifact.size_bytes} bytes, sha256 {card.artifact.sha256}) "
            f"and {self.card_path}\ntime: {timings}\n"
        )
        return head + format_report(card.metrics, card.labels) + tail


def fit_edgetpu(
    table: TrainingTable,
    out_dir: Path,
    config: EdgeTpuConfig,
    *,
    model_id: str,
    version: str,
    step: Callable[[str], AbstractContextManager[Callable[[int, int], None]]] | None = None,
) -> EdgeTpuResult:
    """Train, convert, measure and (when possible) compile; write the artifacts and the card, card last.

    `step(description)` wraps each long step (a progress display) and yields
    ``advance(done, total)``. Nothing is written to `out_dir` unless every
    step passed.
    """
    run = step or _quiet_step
    seconds: dict[str, float] = {}
    data = _prepare(table, config)
    with (
        run(f"training the MLP (at most {config.mlp.max_epochs} epochs)") as advance,
        _timed(seconds, "train"),
    ):
        mlp = train_mlp(
            data.x_fit, data.y_fit, len(data.labels), config.mlp, seed=config.random_state, on_epoch=advance
        )
    with run("converting to full-integer INT8"), _timed(seconds, "convert"):
        int8_model = to_int8_tflite(mlp, data.x_fit, config.mlp, seed=config.random_state)
    with run(f"measuring the INT8 model in LiteRT on {data.y_test.size} windows"):
        measured = _measure(int8_model, mlp, data, table, config)
    with tempfile.TemporaryDirectory(prefix="edgetpu-") as work, run("compiling for the Edge TPU"):
        compiled, note = compile_for_edgetpu(int8_model, Path(work), config)
    artifact = compiled if compiled is not None else int8_model
    card = _card(
        table,
        data,
        mlp,
        measured,
        artifact=artifact,
        compiled=compiled is not None,
        config=config,
        model_id=model_id,
        version=version,
    )
    # A compiled artifact keeps the CPU INT8 model beside it.
    beside = {INT8_FILENAME: int8_model} if compiled is not None else {}
    artifact_path, card_path = write_model(out_dir, artifact, card, beside=beside)
    _log_done(card, measured.metrics, measured.float_accuracy)
    return EdgeTpuResult(
        card=card,
        artifact_path=artifact_path,
        card_path=card_path,
        int8_path=out_dir / INT8_FILENAME,
        float_accuracy=measured.float_accuracy,
        int8_accuracy=measured.metrics.accuracy,
        epochs=mlp.epochs,
        train_rows=int(data.y_train.size),
        test_rows=int(data.y_test.size),
        seconds=seconds,
        compile_note=note,
        split_reason=data.split.reason,
    )


@dataclass(frozen=True, eq=False)
class _Data:
    """The split as the MLP sees it: transformed training rows, class indices, the held-out rows."""

    split: Split
    labels: tuple[str, ...]
    transform: InputTransform
    x_fit: npt.NDArray[np.float32]
    """The training rows after `transform`."""
    y_fit: npt.NDArray[np.intp]
    """The training labels as indices into `labels`."""
    y_train: npt.NDArray[Any]
    x_test: npt.NDArray[np.float32]
    """The held-out rows as the extractor gives them (serving applies the transform)."""
    y_test: npt.NDArray[Any]


def _prepare(table: TrainingTable, config: EdgeTpuConfig) -> _Data:
    split = split_table(table, config.test_size, config.random_state)
    x_train, x_test, y_train, y_test = split.parts(table)
    labels = tuple(sorted(set(table.labels.tolist())))
    index = {label: i for i, label in enumerate(labels)}
    transform = fit_input_transform(x_train)
    return _Data(
        split=split,
        labels=labels,
        transform=transform,
        x_fit=transform.apply(x_train),
        y_fit=np.array([index[label] for label in y_train.tolist()], dtype=np.intp),
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
    )


@dataclass(frozen=True)
class _Measured:
    metrics: Metrics
    """The INT8 model's, on the held-out split."""
    float_accuracy: float
    input_spec: TensorSpec
    output_spec: TensorSpec


def _measure(
    int8_model: bytes, mlp: TrainedMlp, data: _Data, table: TrainingTable, config: EdgeTpuConfig
) -> _Measured:
    """The INT8 model's metrics in LiteRT beside the float model's accuracy; a wide gap fails the run."""
    float_pred = np.asarray(data.labels)[
        float_probabilities(mlp, data.transform.apply(data.x_test)).argmax(axis=1)
    ]
    probabilities, input_spec, output_spec = run_int8(int8_model, data.x_test, data.transform)
    int8_pred = np.asarray(data.labels)[probabilities.argmax(axis=1)]
    metrics = compute_metrics(table, data.split, int8_pred, data.labels)
    float_accuracy = float(np.mean(float_pred == data.y_test))
    if 100 * (float_accuracy - metrics.accuracy) > config.max_gap_points:
        raise QuantizationError(float_accuracy, metrics.accuracy, config.max_gap_points)
    return _Measured(metrics, float_accuracy, input_spec, output_spec)


def _card(
    table: TrainingTable,
    data: _Data,
    mlp: TrainedMlp,
    measured: _Measured,
    *,
    artifact: bytes,
    compiled: bool,
    config: EdgeTpuConfig,
    model_id: str,
    version: str,
) -> ModelCard:
    return ModelCard(
        model_id=model_id,
        version=version,
        framework=f"keras-mlp {mlp.tf_version} int8",
        format="edgetpu" if compiled else "tflite",
        created=datetime.now(UTC),
        artifact=artifact_of(EDGETPU_FILENAME if compiled else INT8_FILENAME, artifact),
        labels=data.labels,
        features=FeatureSpec(names=FEATURE_NAMES, extractor_version=EXTRACTOR_VERSION),
        signal=Signal(sample_rate=table.sample_rate, window_length=table.window_length, unit=table.unit),
        input=measured.input_spec,
        outputs=(measured.output_spec,),
        input_transform=data.transform,
        training=training_summary(table, data.labels),
        metrics=measured.metrics,
        reference=table_reference(table, data.labels),
        hyperparameters={
            **config.mlp.as_hyperparameters(),
            "random_state": config.random_state,
            "epochs_trained": mlp.epochs,
            "test_size": config.test_size,
            "float_accuracy": round(measured.float_accuracy, 6),
        },
    )


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - started


def _log_done(card: ModelCard, metrics: Metrics, float_accuracy: float) -> None:
    logger.info(
        "edgetpu_model_written",
        extra={
            "format": card.format,
            "artifact": card.artifact.filename,
            "bytes": card.artifact.size_bytes,
            "float_accuracy": round(float_accuracy, 4),
            "int8_accuracy": round(metrics.accuracy, 4),
        },
    )


@contextlib.contextmanager
def _quiet_step(_description: str) -> Iterator[Callable[[int, int], None]]:
    yield lambda _done, _total: None


__all__ = ["EdgeTpuConfig", "EdgeTpuResult", "fit_edgetpu", "tensorflow_version"]
