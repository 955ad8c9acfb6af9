"""The error types of the inference package, and their one mapping to exit codes.

One root class, `InferenceError`; every subclass carries the fields that
explain it and builds its message from them. A model that breaks its
contract raises the shared core's `ContractMismatchError`, not a class of
its own, so the serving loop, the validator and the operator name it the
same way. `exit_code_for` is the only place that turns an error into an
`ExitCode`, by type.

No message built here may carry a credential: URIs reach these classes
already redacted (see `vibration_infer.fetch.redact_uri`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vibration_core.errors import (
    ContractMismatchError,
    DatasetError,
    FeatureInputError,
    ModelCardError,
    TargetError,
)
from vibration_core.validation import ExitCode

if TYPE_CHECKING:
    from collections.abc import Sequence


class InferenceError(Exception):
    """Root of every error the inference package raises on purpose."""


class UsageError(InferenceError):
    """Settings or flags that cannot be used; nothing was tried."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"bad settings: {detail}")


class FetchError(InferenceError):
    """The artifact or its card could not be downloaded (after every retry)."""

    def __init__(self, uri: str, detail: str) -> None:
        self.uri = uri
        self.detail = detail
        super().__init__(f"cannot fetch {uri}: {detail}")


class DigestMismatchError(InferenceError):
    """Bytes whose sha256 is not the one promised by the VibrationModel or the card."""

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        self.uri = uri
        self.expected = expected
        self.actual = actual
        super().__init__(f"sha256 of {uri} is {actual}, expected {expected}")


class LoadError(InferenceError):
    """The runtime refused the artifact: corrupt file, unsupported op, no delegate."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"cannot load {path}: {detail}")


class PredictError(InferenceError):
    """A loaded model that failed while running a batch.

    The serving loop answers the batch with an error message and goes on; the
    validator counts it as a model the runtime cannot run (`CANNOT_LOAD`).
    """

    def __init__(self, backend: str, detail: str) -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(f"{backend} failed on a batch: {detail}")


class TestDataError(InferenceError):
    """The node-local test data is missing, unreadable or unusable."""

    __test__ = False  # a domain class, not a pytest test class

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"test data {path}: {detail}")


class BelowThresholdError(InferenceError):
    """The model ran, but some figures are below their thresholds.

    `failures` holds one line per failed check, such as
    ``recall[bearing_fault] 0.712 < 0.850 (regression)``; `reason_code` is
    the gate's (`vibration_core.gate.REASONS`): BelowFloor, Regressed or TooSlow.
    """

    def __init__(self, failures: Sequence[str], reason_code: str = "BelowFloor") -> None:
        self.failures = list(failures)
        self.reason_code = reason_code
        super().__init__("below threshold: " + "; ".join(self.failures))


# Checked in order: the first matching type wins. The core's errors derive
# from ValueError, so they come before anything broader.
_EXIT_CODES: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (UsageError, ExitCode.USAGE),
    (TargetError, ExitCode.USAGE),
    (FetchError, ExitCode.CANNOT_FETCH),
    (DigestMismatchError, ExitCode.DIGEST_MISMATCH),
    (LoadError, ExitCode.CANNOT_LOAD),
    (PredictError, ExitCode.CANNOT_LOAD),
    # A card that does not parse cannot be loaded as a model: its contract is unreadable.
    (ModelCardError, ExitCode.CANNOT_LOAD),
    (ContractMismatchError, ExitCode.CONTRACT_MISMATCH),
    (BelowThresholdError, ExitCode.BELOW_THRESHOLD),
    (TestDataError, ExitCode.BAD_TEST_DATA),
    # Only the test data's windows reach the extractor or the dataset reader in validate.
    (DatasetError, ExitCode.BAD_TEST_DATA),
    (FeatureInputError, ExitCode.BAD_TEST_DATA),
)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The validator's exit code for an error; `INTERNAL` for anything unexpected."""
    for kind, code in _EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return ExitCode.INTERNAL
