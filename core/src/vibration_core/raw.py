"""Raw vibration windows on MQTT (contract 3): the binary and JSON encodings.

Raw windows come in on ``{prefix}/machines/{machine}/raw`` (see
`vibration_core.topics`) in one of two encodings, told apart by the first bytes:

Binary (the fast path), little-endian, a 24-byte header then the samples::

    offset  type  field        meaning
    0       2s    magic        b"VW"
    2       u8    version      1
    3       u8    dtype        1 = float32, 2 = int16
    4       u32   sample_rate  Hz, > 0
    8       u32   n_samples    > 0
    12      i64   timestamp    ns since the Unix epoch, >= 0
    20      f32   scale        int16: physical value = sample * scale (finite, > 0);
                               float32: exactly 1.0
    24      ...   samples      n_samples x 4 (float32) or x 2 (int16) bytes

JSON (accepted, slower; what the reference pipeline's sensors send): one object
with ``timestamp_ns``, ``sample_rate``, ``samples`` and optional ``scale`` and
``unit``, decoded by `vibration_core.raw_json`, which describes it.

Units. A binary window carries no unit: its samples (after ``scale``) are in
the unit of the serving model's card (`vibration_core.units`), which is what
the sensor's scale must produce. A JSON window may say its unit, and then it
is held to the card's.

Decoding refuses anything unusable with a `MessageError` whose reason is one
of `vibration_core.messages.ErrorReason`; the checks both encodings share are
in `vibration_core.raw_window`.
"""

from __future__ import annotations

import json
import math
import struct
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from vibration_core.errors import MessageError
from vibration_core.messages import ErrorReason
from vibration_core.raw_json import JSON_START, decode_json
from vibration_core.raw_window import Float32Array, RawWindow, check_timestamp, refuse_non_finite, to_float

if TYPE_CHECKING:
    from vibration_core.units import Unit

# RawWindow and Float32Array are part of what callers import from here.
__all__ = [
    "DEFAULT_MAX_BYTES",
    "INT16_MAX",
    "RAW_HEADER",
    "RAW_MAGIC",
    "RAW_VERSION",
    "Float32Array",
    "Int16Array",
    "Integer",
    "RawDtype",
    "RawWindow",
    "Real",
    "decode_raw",
    "encode_raw_float32",
    "encode_raw_int16",
    "encode_raw_json",
    "quantize_int16",
]


class RawDtype(IntEnum):
    """The sample type code of a binary raw window."""

    FLOAT32 = 1
    INT16 = 2


RAW_MAGIC = b"VW"
RAW_VERSION = 1
RAW_HEADER = struct.Struct("<2sBBIIqf")
DEFAULT_MAX_BYTES = 1 << 20
INT16_MAX = 32767

_DTYPES: dict[int, np.dtype[Any]] = {
    RawDtype.FLOAT32: np.dtype("<f4"),
    RawDtype.INT16: np.dtype("<i2"),
}
_U32_MAX = (1 << 32) - 1

Int16Array = npt.NDArray[np.int16]
# Encoders take numpy scalars too: timestamps and rates often come out of arrays.
Integer = int | np.integer[Any]
Real = float | np.integer[Any] | np.floating[Any]


def _one_d(samples: npt.ArrayLike, dtype: str | None, reason: ErrorReason) -> npt.NDArray[Any]:
    try:
        # A float64 beyond the float32 range becomes inf; refuse_non_finite reports it.
        with np.errstate(over="ignore"):
            data = np.ascontiguousarray(samples, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise MessageError(ErrorReason.BAD_DTYPE, "samples", str(exc)) from None
    if data.ndim != 1:
        detail = f"expected a 1-D array of samples, got shape {data.shape}"
        raise MessageError(ErrorReason.BAD_FIELD, "samples", detail)
    if data.size == 0:
        raise MessageError(reason, "n_samples", "a window needs at least one sample")
    return data


def _check_positive(value: object, field: str, reason: ErrorReason) -> float:
    number = to_float(value)
    if number is None or not math.isfinite(number) or number <= 0:
        detail = f"must be a finite number > 0, got {value!r}"
        raise MessageError(reason, field, detail)
    return number


def _float32_scale(scale: float) -> float:
    # The header carries a float32; a scale that does not survive that is refused.
    with np.errstate(over="ignore", under="ignore"):
        narrowed = float(np.float32(scale))
    if not 0 < narrowed < math.inf:
        detail = f"{scale!r} is not representable as a positive float32"
        raise MessageError(ErrorReason.BAD_HEADER, "scale", detail)
    return narrowed


def _header(dtype: RawDtype, sample_rate: object, n: int, timestamp_ns: object, scale: float) -> bytes:
    reason = ErrorReason.BAD_HEADER
    timestamp = check_timestamp(timestamp_ns, reason)
    rate = _check_positive(sample_rate, "sample_rate", reason)
    if not rate.is_integer() or rate > _U32_MAX:
        detail = f"the binary format carries whole Hz up to 2**32-1, got {sample_rate!r}"
        raise MessageError(reason, "sample_rate", detail)
    if n > _U32_MAX:
        raise MessageError(reason, "n_samples", f"{n} samples exceed 2**32-1")
    return RAW_HEADER.pack(RAW_MAGIC, RAW_VERSION, dtype, int(rate), n, timestamp, scale)


def encode_raw_float32(samples: npt.ArrayLike, sample_rate: Real, timestamp_ns: Integer) -> bytes:
    """Encode a window as a binary float32 payload (scale 1.0).

    `sample_rate` must be a whole number of Hz: the header carries a u32.
    """
    data = _one_d(samples, "<f4", ErrorReason.BAD_HEADER)
    refuse_non_finite(data)
    return _header(RawDtype.FLOAT32, sample_rate, data.size, timestamp_ns, 1.0) + data.tobytes()


def encode_raw_int16(
    samples_int16: npt.ArrayLike, scale: Real, sample_rate: Real, timestamp_ns: Integer
) -> bytes:
    """Encode int16 samples as a binary payload; physical value = sample * scale.

    Anything but an int16 array is refused (`bad_dtype`) rather than cast,
    because a silent cast would wrap values around; see `quantize_int16`.
    """
    given = np.asarray(samples_int16).dtype
    if given != np.int16:
        detail = f"expected int16 samples, got {given}"
        raise MessageError(ErrorReason.BAD_DTYPE, "samples", detail)
    data = _one_d(samples_int16, "<i2", ErrorReason.BAD_HEADER)
    positive = _check_positive(scale, "scale", ErrorReason.BAD_HEADER)
    header = _header(RawDtype.INT16, sample_rate, data.size, timestamp_ns, _float32_scale(positive))
    return header + data.tobytes()


def quantize_int16(samples_float: npt.ArrayLike, full_scale: Real | None = None) -> tuple[Int16Array, float]:
    """Quantize physical samples to int16 and return them with their scale.

    The scale maps `full_scale` (default: the window's peak) to 32767, so the
    signal uses the whole int16 range; values beyond `full_scale` clip. The
    scale is rounded to float32 first, because that is what the header carries:
    decoding then reproduces every sample within scale / 2.
    """
    data = _one_d(samples_float, "f8", ErrorReason.BAD_FIELD)
    refuse_non_finite(data)
    if full_scale is None:
        peak = float(np.max(np.abs(data)))
    else:
        peak = _check_positive(full_scale, "full_scale", ErrorReason.BAD_FIELD)
    # An all-zero window has no peak; any positive scale encodes it exactly.
    scale = _float32_scale(peak / INT16_MAX) if peak > 0 else 1.0
    quantized = np.clip(np.rint(data / scale), -INT16_MAX, INT16_MAX).astype("<i2")
    return quantized, scale


def encode_raw_json(
    samples: npt.ArrayLike,
    sample_rate: Real,
    timestamp_ns: Integer,
    *,
    scale: Real | None = None,
    unit: Unit | None = None,
) -> bytes:
    """Encode a window as a JSON payload; `scale`, when given, multiplies the samples.

    Integer samples stay integers (the usual companion of `scale`); float32
    samples are written exactly, so they decode to the same float32 values.
    """
    data = _one_d(samples, None, ErrorReason.BAD_FIELD)
    if data.dtype.kind not in "iuf":
        detail = f"expected numeric samples, got {data.dtype}"
        raise MessageError(ErrorReason.BAD_DTYPE, "samples", detail)
    if data.dtype.kind == "f":
        refuse_non_finite(data)
    document: dict[str, Any] = {
        "timestamp_ns": check_timestamp(timestamp_ns, ErrorReason.BAD_FIELD),
        "sample_rate": _check_positive(sample_rate, "sample_rate", ErrorReason.BAD_FIELD),
        "samples": data.tolist(),
    }
    if scale is not None:
        document["scale"] = _check_positive(scale, "scale", ErrorReason.BAD_FIELD)
    if unit is not None:
        document["unit"] = unit
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def decode_raw(payload: bytes, machine: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> RawWindow:
    """Decode a raw window payload (binary or JSON) that came from `machine`.

    `machine` is trusted: it comes from `TopicLayout.machine_of_raw`, which
    validated it. Raises `MessageError` for every payload that cannot be used.
    """
    if len(payload) > max_bytes:
        detail = f"{len(payload)} bytes, the limit is {max_bytes}"
        raise MessageError(ErrorReason.OVERSIZED, "payload", detail)
    if payload[:2] == RAW_MAGIC:
        return _decode_binary(payload, machine)
    if JSON_START.match(payload):
        return decode_json(payload, machine)
    detail = "neither a binary window (magic VW) nor a JSON object"
    raise MessageError(ErrorReason.NOT_JSON, "payload", detail)


def _binary_header(payload: bytes) -> tuple[RawDtype, int, int, int, float]:
    """Check the header; return dtype, sample rate, sample count, timestamp and scale."""
    bad = ErrorReason.BAD_HEADER
    if len(payload) < RAW_HEADER.size:
        detail = f"{len(payload)} bytes, the header alone is {RAW_HEADER.size}"
        raise MessageError(bad, "header", detail)
    _, version, code, sample_rate, n, timestamp_ns, scale = RAW_HEADER.unpack_from(payload)
    if version != RAW_VERSION:
        raise MessageError(bad, "version", f"version {version}, expected {RAW_VERSION}")
    if code not in _DTYPES:
        detail = f"dtype code {code}, expected 1 (float32) or 2 (int16)"
        raise MessageError(ErrorReason.BAD_DTYPE, "dtype", detail)
    if sample_rate == 0:
        raise MessageError(bad, "sample_rate", "sample rate 0, must be > 0")
    if n == 0:
        raise MessageError(bad, "n_samples", "0 samples, a window needs at least one")
    if timestamp_ns < 0:
        raise MessageError(bad, "timestamp_ns", f"{timestamp_ns} is before the Unix epoch")
    if code == RawDtype.FLOAT32 and scale != 1.0:
        raise MessageError(bad, "scale", f"scale {scale}, float32 windows carry 1.0")
    if not (math.isfinite(scale) and scale > 0):
        raise MessageError(bad, "scale", f"scale {scale}, must be finite and > 0")
    return RawDtype(code), sample_rate, n, timestamp_ns, scale


def _decode_binary(payload: bytes, machine: str) -> RawWindow:
    code, sample_rate, n, timestamp_ns, scale = _binary_header(payload)
    dtype = _DTYPES[code]
    expected = RAW_HEADER.size + n * dtype.itemsize
    if len(payload) != expected:
        detail = f"expected {expected} bytes ({n} x {dtype.itemsize} + header), got {len(payload)}"
        raise MessageError(ErrorReason.BAD_LENGTH, "samples", detail)
    raw = np.frombuffer(payload, dtype=dtype, count=n, offset=RAW_HEADER.size)
    samples: Float32Array
    if code == RawDtype.FLOAT32:
        samples = raw
    else:
        # A huge scale can overflow float32; refuse_non_finite reports it.
        with np.errstate(over="ignore"):
            samples = raw.astype(np.float32)
            samples *= np.float32(scale)
        samples.flags.writeable = False
    refuse_non_finite(samples)
    return RawWindow(machine, timestamp_ns, float(sample_rate), samples)
