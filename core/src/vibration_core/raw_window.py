"""A decoded raw window (`RawWindow`) and the checks on its fields that both encodings share.

The binary format and the encoders (`vibration_core.raw`) and the JSON
decoder (`vibration_core.raw_json`) refuse a bad timestamp, a non-number and a
non-finite sample here, so both encodings word those refusals alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, SupportsFloat, cast

import numpy as np
import numpy.typing as npt

from vibration_core.errors import MessageError
from vibration_core.messages import I64_LIMIT, ErrorReason

if TYPE_CHECKING:
    from vibration_core.units import Unit

_NUMBER_TYPES = (int, float, np.integer, np.floating)

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, eq=False)
class RawWindow:
    """One decoded window of raw acceleration from one machine.

    `samples` is a read-only 1-D float32 array in physical units; for a binary
    float32 payload it is a view of the payload itself (no copy). Windows
    compare by identity, because element-wise array equality has no truth value.
    """

    machine: str
    timestamp_ns: int
    sample_rate: float
    samples: Float32Array
    unit: Unit | None = None
    """The unit a JSON window declares; None for binary windows (in the model's unit by contract)."""


def _is_number(value: object) -> bool:
    # bool is an int subclass; JSON true/false must not pass as numbers.
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


def to_float(value: object) -> float | None:
    """Return `value` as a float (inf when an integer is too large), None if no number."""
    if not _is_number(value):
        return None
    try:
        return float(cast("SupportsFloat", value))
    except OverflowError:
        return math.inf


def refuse_non_finite(samples: npt.NDArray[np.floating[Any]]) -> None:
    """Refuse (`non_finite`) samples with a NaN or an infinity, naming the first one."""
    finite = np.isfinite(samples)
    if not finite.all():
        index = int(np.argmin(finite))
        detail = f"sample {index} is {samples[index]}, samples must be finite"
        raise MessageError(ErrorReason.NON_FINITE, "samples", detail)


def check_timestamp(timestamp_ns: object, reason: ErrorReason) -> int:
    """Return `timestamp_ns` as an int in [0, 2**63); refuse anything else with `reason`."""
    if (
        isinstance(timestamp_ns, bool)
        or not isinstance(timestamp_ns, int | np.integer)
        or not 0 <= int(timestamp_ns) < I64_LIMIT
    ):
        detail = f"must be an integer in [0, 2**63), got {timestamp_ns!r}"
        raise MessageError(reason, "timestamp_ns", detail)
    return int(timestamp_ns)
