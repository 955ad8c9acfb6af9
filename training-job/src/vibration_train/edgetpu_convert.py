"""TensorFlow steps of the Edge TPU path: train the Keras MLP, convert it to full-integer INT8.

TensorFlow (the training job's ``edgetpu`` extra, about 1.5 GiB) is imported
inside the functions, so the rest of the package, and every serving image,
works without it; its absence is an `ExportError` that names the extra.

The features are transformed before they reach the model, outside the
graph (`fit_input_transform`, recorded in the card as its
`InputTransform`): the int8 input tensor has one scale and zero point for
all ten features, so quantizing the raw ones, whose ranges differ by orders
of magnitude, left the small ones a few steps or none and cost 22 points of
accuracy. The positive, heavy-tailed features (`LOG_FEATURES`) are
log-transformed, then every feature is standardised on the training rows;
the model's input is that standardised vector (about -2.5 to 11 on the
training rows), quantized in steps of about 0.05 standard deviations for
every feature alike. The log is not in the graph because TFLite's LOG is not
an Edge TPU op (everything after the first unsupported op runs on the CPU).
Measured on the test's 3000 simulated windows (600 held out) at three seeds:
standardising alone leaves a gap of 0 to 0.33 points (INT8 accuracy 0.934 on
average); with the log the gap is -0.17 to 0.17 points and both models gain
about half a point (INT8 0.943, float 0.943 on average).

The converted model has a fixed batch of 1: ``edgetpu_compiler`` refuses a
graph with a dynamic batch ("only supports static-sized tensors"), and the
CPU model is the same graph so that its card fits both.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import train_test_split

from vibration_core.features import FEATURE_NAMES
from vibration_core.modelcard_parts import InputTransform
from vibration_train.errors import ExportError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy.typing as npt

logger = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"

LOG_FEATURES = ("rms", "peak", "crest_factor", "kurtosis", "energy_low", "energy_mid", "energy_high")
"""Positive and heavy-tailed (the band energies span four decades, Pearson kurtosis runs from 1.5
for a sine to hundreds for an impulsive window): log-transformed before scaling.

The band shares (bounded by 0 and 1) are not.
"""
LOG_FLOOR_SHARE = 1e-3
"""A feature's log floor as a share of its training median: far below the data, and unit-free."""


@dataclass(frozen=True)
class MlpConfig:
    """Architecture and training of the MLP, and its INT8 calibration."""

    hidden: tuple[int, ...] = (64, 32)
    """Widths of the ReLU layers between the ten inputs and the softmax."""
    max_epochs: int = 300
    """Upper bound; early stopping usually ends training well before."""
    patience: int = 15
    """Epochs without a lower validation loss before training stops (best weights kept)."""
    batch_size: int = 64
    learning_rate: float = 3e-3
    """Adam's step size."""
    validation_share: float = 0.1
    """Share of the training split held out (stratified) for early stopping."""
    representative_rows: int = 300
    """Training rows that calibrate the INT8 ranges."""

    def as_hyperparameters(self) -> dict[str, str | int | float | bool | None]:
        """Return the settings as the model card records them."""
        settings = asdict(self)
        settings["hidden"] = "-".join(str(width) for width in self.hidden)
        return {"estimator": "keras-mlp", **settings}


@dataclass(frozen=True, eq=False)
class TrainedMlp:
    """A trained Keras model and how it got there."""

    model: Any
    """The `keras.Model`: transformed features (`fit_input_transform`) in, class probabilities out."""
    epochs: int
    """Epochs run before early stopping ended training."""
    fit_rows: int
    validation_rows: int
    tf_version: str


def tensorflow_version() -> str:
    """The installed TensorFlow's version; `ExportError` when the extra is missing."""
    return str(_tf().__version__)


def fit_input_transform(x_train: npt.NDArray[np.float32]) -> InputTransform:
    """The log (for `LOG_FEATURES`) and standardisation that turn `x_train`'s columns into the model's input.

    A feature whose training median is not positive is not log-transformed;
    a constant one keeps a scale of 1.
    """
    values = np.asarray(x_train, dtype=np.float64)
    medians = np.median(values, axis=0)
    floors = tuple(
        float(LOG_FLOOR_SHARE * median) if name in LOG_FEATURES and median > 0 else None
        for name, median in zip(FEATURE_NAMES, medians.tolist(), strict=True)
    )
    logged = InputTransform(log_floor=floors, offset=(0.0,) * len(floors), scale=(1.0,) * len(floors))
    spread = logged.apply(values).astype(np.float64)
    std = spread.std(axis=0)
    return InputTransform(
        log_floor=floors,
        offset=tuple(spread.mean(axis=0).tolist()),
        scale=tuple(np.where(std > 0, std, 1.0).tolist()),
    )


def train_mlp(
    x_train: npt.NDArray[np.float32],
    y_train: npt.NDArray[np.intp],
    n_classes: int,
    config: MlpConfig,
    *,
    seed: int,
    on_epoch: Callable[[int, int], None] | None = None,
) -> TrainedMlp:
    """Fit the MLP on `x_train` (class indices `y_train`), early-stopped on a stratified slice of it.

    `x_train` holds transformed features (`fit_input_transform`): the model has no scaling of its own.

    `seed` seeds the validation split, the weights and the shuffling.
    """
    tf = _tf()
    keras = tf.keras  # Keras 3 behind TensorFlow's lazy loader
    # Seeds of Python, NumPy and TensorFlow, and deterministic kernels: same data, same weights.
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train,
        y_train,
        test_size=config.validation_share,
        stratify=y_train if _can_stratify(y_train, config.validation_share) else None,
        random_state=seed,
    )
    inputs = keras.Input(shape=(x_train.shape[1],), name=INPUT_NAME)
    hidden = inputs
    for width in config.hidden:
        hidden = keras.layers.Dense(width, activation="relu")(hidden)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name=OUTPUT_NAME)(hidden)
    model = keras.Model(inputs, outputs, name="vibration_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        # One graph call per epoch rather than per batch: Python overhead dominates a model this small.
        steps_per_execution=max(1, -(-len(x_fit) // config.batch_size)),
    )
    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    ]
    if on_epoch is not None:
        report = on_epoch
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, _logs: report(epoch + 1, config.max_epochs)
            )
        )
    history = model.fit(
        x_fit,
        y_fit,
        validation_data=(x_val, y_val),
        epochs=config.max_epochs,
        batch_size=config.batch_size,
        callbacks=callbacks,
        verbose=0,
    )
    epochs = len(history.history["loss"])
    logger.info(
        "mlp_trained", extra={"epochs": epochs, "fit_rows": len(x_fit), "validation_rows": len(x_val)}
    )
    return TrainedMlp(model, epochs, len(x_fit), len(x_val), str(tf.__version__))


def _can_stratify(labels: npt.NDArray[np.intp], share: float) -> bool:
    """Whether the early-stopping slice can hold every class: two windows of each, a slice as large.

    The ONNX path trains on such data; scikit-learn's stratified split would refuse it.
    """
    counts = np.bincount(labels)
    present = counts[counts > 0]
    return bool(present.min() >= 2) and math.ceil(share * labels.size) >= present.size  # noqa: PLR2004


def float_probabilities(mlp: TrainedMlp, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The float Keras model's class probabilities for `features` (transformed, as `train_mlp`'s)."""
    return np.asarray(mlp.model.predict(features, batch_size=1024, verbose=0), dtype=np.float32)


def to_int8_tflite(
    mlp: TrainedMlp, x_train: npt.NDArray[np.float32], config: MlpConfig, *, seed: int
) -> bytes:
    """Full-integer INT8 TFLite (int8 in and out) with a fixed batch of 1, calibrated on training rows.

    `x_train` holds transformed features, as `train_mlp`'s; `seed` picks the calibration rows.
    """
    tf = _tf()
    model = mlp.model
    n_features = int(x_train.shape[1])
    rng = np.random.default_rng(seed)
    rows = x_train[rng.choice(len(x_train), min(config.representative_rows, len(x_train)), replace=False)]

    def call(features: Any) -> Any:  # noqa: ANN401 - TensorFlow tensors are untyped
        return model(features, training=False)

    signature = [tf.TensorSpec([1, n_features], tf.float32, name=INPUT_NAME)]
    serve = tf.function(call, input_signature=signature)

    def representative() -> Iterator[list[npt.NDArray[np.float32]]]:
        for row in rows:
            yield [np.asarray(row[None, :], dtype=np.float32)]

    # Variables frozen into constants: a graph that still reads Keras 3's variables fails the
    # calibration run with "READ_VARIABLE failed to invoke" (TensorFlow 2.21).
    from tensorflow.python.framework.convert_to_constants import (  # noqa: PLC0415 - optional extra
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        with warnings.catch_warnings():
            # Said for every frozen graph with int8 input; the representative rows supply those
            # statistics during calibration, and the measured INT8 accuracy is the check that counts.
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected", UserWarning)
            data = bytes(converter.convert())
    except (RuntimeError, ValueError, TypeError) as exc:  # the converter's own errors
        raise ExportError("tflite", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc
    logger.info("tflite_converted", extra={"bytes": len(data), "calibration_rows": len(rows)})
    return data


def _tf() -> Any:  # noqa: ANN401 - the tensorflow module
    try:
        import tensorflow as tf  # noqa: PLC0415 - optional extra, only this path needs it
    except ImportError as exc:
        raise ExportError(
            "tflite",
            "TensorFlow is not installed: the INT8 path needs the training job's 'edgetpu' extra "
            "(uv sync --extra edgetpu, or pip install 'vibration-train[edgetpu]')",
        ) from exc
    return tf
