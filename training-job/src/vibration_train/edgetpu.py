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
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from vibration_core.features import EXTRACTOR_VERSION, FEATURE_NAMES
from vibration_core.modelcard import CARD_FILENAME, FeatureSpec, ModelCard, Signal, TensorSpec
from vibration_train.card import artifact_of, table_reference, training_summary, write_model
from vibration_train.edgetpu_convert import (
    MlpConfig,
    fit_input_transform,
    float_probabilities,
    tensorflow_version,
    to_int8_tflite,
    train_mlp,
)
from vibration_train.errors import ExportError, OutputError, TrainingError
from vibration_train.fit import compute_metrics
from vibration_train.report import format_held_out, format_report
from vibration_train.split import split_table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

    import numpy.typing as npt

    from vibration_core.modelcard import InputTransform, Metrics
    from vibration_train.data import TrainingTable

logger = logging.getLogger(__name__)

INT8_FILENAME: Final = "model_int8.tflite"
EDGETPU_FILENAME: Final = "model_edgetpu.tflite"
COMPILER: Final = "edgetpu_compiler"


class QuantizationError(TrainingError):
    """The INT8 model lost more accuracy against the float model than allowed."""

    def __init__(self, float_accuracy: float, int8_accuracy: float, limit_points: float) -> None:
        self.float_accuracy = float_accuracy
        self.int8_accuracy = int8_accuracy
        self.limit_points = limit_points
        super().__init__(
            f"INT8 accuracy {int8_accuracy:.4f} is {100 * (float_accuracy - int8_accuracy):.2f} points "
            f"below the float model's {float_accuracy:.4f} (allowed: {limit_points:g})"
        )


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
    split = split_table(table, config.test_size, config.random_state)
    x_train, x_test, y_train, y_test = split.parts(table)
    labels = tuple(sorted(set(table.labels.tolist())))
    index = {label: i for i, label in enumerate(labels)}
    y_train_idx = np.array([index[label] for label in y_train.tolist()], dtype=np.intp)
    transform = fit_input_transform(x_train)
    model_x_train = transform.apply(x_train)
    started = time.perf_counter()
    with run(f"training the MLP (at most {config.mlp.max_epochs} epochs)") as advance:
        mlp = train_mlp(
            model_x_train, y_train_idx, len(labels), config.mlp, seed=config.random_state, on_epoch=advance
        )
    seconds["train"] = time.perf_counter() - started
    float_pred = np.asarray(labels)[float_probabilities(mlp, transform.apply(x_test)).argmax(axis=1)]
    started = time.perf_counter()
    with run("converting to full-integer INT8"):
        int8_model = to_int8_tflite(mlp, model_x_train, config.mlp, seed=config.random_state)
    seconds["convert"] = time.perf_counter() - started
    with run(f"measuring the INT8 model in LiteRT on {y_test.size} windows"):
        probabilities, input_spec, output_spec = run_int8(int8_model, x_test, transform)
    int8_pred = np.asarray(labels)[probabilities.argmax(axis=1)]
    metrics = compute_metrics(table, split, int8_pred, labels)
    float_accuracy = float(np.mean(float_pred == y_test))
    if 100 * (float_accuracy - metrics.accuracy) > config.max_gap_points:
        raise QuantizationError(float_accuracy, metrics.accuracy, config.max_gap_points)
    with tempfile.TemporaryDirectory(prefix="edgetpu-") as work, run("compiling for the Edge TPU"):
        compiled, note = compile_for_edgetpu(int8_model, Path(work), config)
    artifact = compiled if compiled is not None else int8_model
    card = ModelCard(
        model_id=model_id,
        version=version,
        framework=f"keras-mlp {mlp.tf_version} int8",
        format="tflite" if compiled is None else "edgetpu",
        created=datetime.now(UTC),
        artifact=artifact_of(INT8_FILENAME if compiled is None else EDGETPU_FILENAME, artifact),
        labels=labels,
        features=FeatureSpec(names=FEATURE_NAMES, extractor_version=EXTRACTOR_VERSION),
        signal=Signal(sample_rate=table.sample_rate, window_length=table.window_length, unit=table.unit),
        input=input_spec,
        outputs=(output_spec,),
        input_transform=transform,
        training=training_summary(table, labels),
        metrics=metrics,
        reference=table_reference(table, labels),
        hyperparameters={
            **config.mlp.as_hyperparameters(),
            "random_state": config.random_state,
            "epochs_trained": mlp.epochs,
            "test_size": config.test_size,
            "float_accuracy": round(float_accuracy, 6),
        },
    )
    int8_path = _write_int8_beside(out_dir, int8_model) if compiled is not None else out_dir / INT8_FILENAME
    artifact_path, card_path = write_model(out_dir, artifact, card)
    _log_done(card, metrics, float_accuracy)
    return EdgeTpuResult(
        card=card,
        artifact_path=artifact_path,
        card_path=card_path,
        int8_path=int8_path,
        float_accuracy=float_accuracy,
        int8_accuracy=metrics.accuracy,
        epochs=mlp.epochs,
        train_rows=int(y_train.size),
        test_rows=int(y_test.size),
        seconds=seconds,
        compile_note=note,
        split_reason=split.reason,
    )


def run_int8(
    model: bytes, features: npt.NDArray[np.float32], transform: InputTransform
) -> tuple[npt.NDArray[np.float32], TensorSpec, TensorSpec]:
    """Run an INT8 model in LiteRT row by row; return probabilities and the tensors as LiteRT reports them.

    As the serving backend does: the extractor's `features` go through
    `transform` (the card's), are quantized with the input tensor's scale and
    zero point, and the outputs are dequantized.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - optional at import time
    except ImportError as exc:
        raise ExportError("tflite", "LiteRT (ai-edge-litert) is needed to measure the INT8 model") from exc
    try:
        interpreter = Interpreter(model_content=model, num_threads=1)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ExportError("tflite", f"LiteRT refused the INT8 model: {exc}") from exc
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    info = np.iinfo(inp["dtype"])
    scaled = transform.apply(features) / np.float32(in_scale)
    quantized = np.clip(np.rint(scaled) + in_zero, info.min, info.max)
    quantized = quantized.astype(inp["dtype"])
    raw = np.empty((features.shape[0], int(out["shape"][-1])), dtype=np.float32)
    for row in range(features.shape[0]):  # the Edge TPU graph has a fixed batch of 1
        interpreter.set_tensor(inp["index"], quantized[row : row + 1])
        interpreter.invoke()
        raw[row] = interpreter.get_tensor(out["index"])[0]
    probabilities = (raw - np.float32(out_zero)) * np.float32(out_scale)
    return probabilities, _spec(inp), _spec(out)


def compile_for_edgetpu(model: bytes, work_dir: Path, config: EdgeTpuConfig) -> tuple[bytes | None, str]:
    """Compile with ``edgetpu_compiler`` when it is on PATH; return the bytes (None without it) and a note."""
    compiler = shutil.which(config.compiler)
    if compiler is None:
        note = (
            f"{config.compiler} not found: wrote the CPU INT8 model ({INT8_FILENAME}); "
            "the Edge TPU compile was skipped"
        )
        logger.warning(
            "edgetpu_compile_skipped", extra={"reason": "compiler_not_found", "compiler": config.compiler}
        )
        return None, note
    source = work_dir / INT8_FILENAME
    source.write_bytes(model)
    command = [compiler, "--out_dir", str(work_dir), str(source)]
    try:
        done = subprocess.run(  # noqa: S603 - a fixed argument list, the compiler found on PATH
            command, capture_output=True, text=True, timeout=config.compiler_timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ExportError("edgetpu", f"{compiler} did not finish within {exc.timeout:g} s") from exc
    except OSError as exc:
        raise ExportError("edgetpu", f"{compiler} could not be started: {exc}") from exc
    compiled = work_dir / f"{source.stem}_edgetpu.tflite"
    if done.returncode != 0 or not compiled.is_file():
        tail = " ".join((done.stdout + done.stderr).split())[-300:]
        raise ExportError("edgetpu", f"{compiler} exited with {done.returncode}: {tail}")
    mapped = [line.strip() for line in done.stdout.splitlines() if "Number of operations" in line]
    logger.info("edgetpu_compiled", extra={"compiler": compiler, "ops": ";".join(mapped)})
    note = f"{config.compiler}: wrote {EDGETPU_FILENAME}" + (f" ({'; '.join(mapped)})" if mapped else "")
    return compiled.read_bytes(), note


def _spec(details: dict[str, Any]) -> TensorSpec:
    shape = details.get("shape_signature", details["shape"])
    return TensorSpec(
        name=str(details["name"]),
        shape=tuple(None if int(size) < 0 else int(size) for size in shape),
        dtype=np.dtype(details["dtype"]).name,
    )


def _write_int8_beside(out_dir: Path, model: bytes) -> Path:
    """Put the CPU INT8 model next to the compiled one; an older card goes first (it may name this file)."""
    path, tmp = out_dir / INT8_FILENAME, out_dir / f".{INT8_FILENAME}.tmp"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(model)
        (out_dir / CARD_FILENAME).unlink(missing_ok=True)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(str(out_dir), exc.strerror or str(exc)) from exc
    return path


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


__all__ = [
    "EdgeTpuConfig",
    "EdgeTpuResult",
    "QuantizationError",
    "compile_for_edgetpu",
    "fit_edgetpu",
    "run_int8",
    "tensorflow_version",
]
