"""The error types of the training job.

One root class, `TrainingError`; each subclass carries the fields that
explain it and builds its message from them. The CLI maps them to exit codes
and a one-line ``error: ...`` once, at its boundary. (The registry's errors
live in `vibration_train.registry`, beside the code that raises them.)
"""

from __future__ import annotations


class TrainingError(Exception):
    """Root of every error the training job raises on purpose."""


class TrainingDataError(TrainingError):
    """Training data that cannot be used.

    `source` is the file (or the step, such as ``split``) that holds the
    problem, `detail` names it precisely enough to find it.
    """

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"training data {source}: {detail}")


class FitConfigError(TrainingError):
    """A hyper-parameter out of its range; `parameter` is the setting's name."""

    def __init__(self, parameter: str, detail: str) -> None:
        self.parameter = parameter
        self.detail = detail
        super().__init__(f"fit setting {parameter}: {detail}")


class ParityError(TrainingError):
    """The ONNX model disagrees with the scikit-learn model it came from.

    `mismatched_labels` of `total` test windows got another label;
    `max_prob_diff` is the largest absolute probability difference, checked
    against `tolerance`.
    """

    def __init__(self, mismatched_labels: int, max_prob_diff: float, total: int, tolerance: float) -> None:
        self.mismatched_labels = mismatched_labels
        self.max_prob_diff = max_prob_diff
        self.total = total
        self.tolerance = tolerance
        super().__init__(
            f"ONNX parity failed: {mismatched_labels}/{total} labels differ from scikit-learn, "
            f"max |dp| = {max_prob_diff:.3g} (tolerance {tolerance:g})"
        )


class ExportError(TrainingError):
    """A fitted model that could not be converted to the requested format."""

    def __init__(self, target: str, detail: str) -> None:
        self.target = target
        self.detail = detail
        super().__init__(f"export to {target} failed: {detail}")


class OutputError(TrainingError):
    """An output location that cannot be written."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"cannot write {path}: {detail}")


class ModelImportError(TrainingError):
    """A model to import that does not fit the model contract, or labels that do not fit the model.

    `source` is the model file (or the flag, such as ``--labels``), `detail`
    names the tensor, value or label that is wrong and what was expected.
    """

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"model {source}: {detail}")


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
