"""The error types of the shared core.

One root class, `VibrationCoreError`; every subclass carries the fields that
explain it and builds its message from them, so a caller can both show the
message and act on the fields. They also derive from `ValueError`, because
every one of them is a value that was refused.
"""

from __future__ import annotations


class VibrationCoreError(ValueError):
    """Root of every error the shared core raises."""


class FeatureInputError(VibrationCoreError):
    """A batch of windows the feature extractor cannot use.

    `windows` lists the indices of the offending windows when the problem is
    in particular windows (NaN or inf samples); it is empty when the problem
    is the batch as a whole (its shape, its dtype, its sample rate).
    """

    def __init__(self, reason: str, windows: tuple[int, ...] = ()) -> None:
        self.reason = reason
        self.windows = windows
        super().__init__(reason)


class MessageError(VibrationCoreError):
    """An MQTT payload or topic that cannot be used.

    `reason` is a short machine-readable code (see
    `vibration_core.messages.ErrorReason`), `field` names the part of the
    payload that is wrong, `detail` says how.
    """

    def __init__(self, reason: str, field: str, detail: str) -> None:
        self.reason = reason
        self.field = field
        self.detail = detail
        super().__init__(f"{reason}: {field}: {detail}")


class ModelCardError(VibrationCoreError):
    """A model card that cannot be read or does not hold together."""

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"model card {source}: {detail}")


class ContractMismatchError(VibrationCoreError):
    """A model, an input or a card that breaks the model contract.

    `field` is the part of the contract (labels, features, input shape,
    sample rate, ...), `expected` what the card promises, `actual` what was
    found, `hint` (optional) what to do about it.
    """

    def __init__(self, field: str, expected: object, actual: object, hint: str = "") -> None:
        self.field = field
        self.expected = expected
        self.actual = actual
        message = f"contract mismatch on {field}: expected {expected!r}, found {actual!r}"
        super().__init__(f"{message}; {hint}" if hint else message)


class SimulationParameterError(VibrationCoreError):
    """A simulator parameter out of its range.

    `parameter` names the argument (``n_windows``, ``drift.speed_shift``,
    ...), `detail` says what is wrong with the value given.
    """

    def __init__(self, parameter: str, detail: str) -> None:
        self.parameter = parameter
        self.detail = detail
        super().__init__(f"simulation parameter {parameter}: {detail}")


class DatasetError(VibrationCoreError):
    """A parquet file of windows that breaks the dataset contract.

    `path` is the file, `detail` names the problem (a missing column, a row
    with NaN samples, ...) precisely enough to find it in the file.
    """

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"dataset {path}: {detail}")


class TargetError(VibrationCoreError):
    """A node target file (``target.json``) that cannot be read or does not parse."""

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"target {source}: {detail}")
