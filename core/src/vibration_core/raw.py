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

JSON (accepted; decoded with simdjson straight into an array, still slower than
binary, see docs/benchmarks.md)::

    {"timestamp_ns": int, "sample_rate": number, "samples": [number, ...],
     "scale": number,                      # optional, multiplies the samples
     "unit": "g" | "m/s^2"}                # optional; a window in another unit than
                                           # the model's is refused (unit_mismatch)

Other keys are ignored: the reference pipeline's sensors also send their band
energies, which the extractor computes again from the samples. A key within a
typo of one of the five that the window lacks (``scal``, ``sampleRate``,
``timestamp`` without ``timestamp_ns``; `_near_miss` says what a typo is) is
refused, naming the key it resembles, rather than read as absent.

Units. A binary window carries no unit: its samples (after ``scale``) are in
the unit of the serving model's card (`vibration_core.units`), which is what
the sensor's scale must produce. A JSON window may say its unit, and then it
is held to the card's.

Decoding refuses anything unusable with a `MessageError` whose reason is one
of `vibration_core.messages.ErrorReason`.

Longer than the others: it is one contract (binary and JSON windows) with a
refusal, and its reason, for every way a payload can be wrong; split, the two
encodings would duplicate those checks.
"""

from __future__ import annotations

import functools
import json
import math
import re
import struct
import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, SupportsFloat, cast

import numpy as np
import numpy.typing as npt
import simdjson

from vibration_core.errors import MessageError
from vibration_core.messages import I64_LIMIT, ErrorReason
from vibration_core.units import Unit, accepted, parse_unit


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
_JSON_START = re.compile(rb"[ \t\r\n]*\{")
_JSON_KEYS = frozenset({"timestamp_ns", "sample_rate", "samples", "scale", "unit"})
_LONGEST_KEY = max(map(len, _JSON_KEYS))
_TYPO_MIN_LENGTH = 5
"""One letter apart is a typo from five letters on: "unix" and "init" are words of their own beside "unit"."""
_SEPARATORS = str.maketrans("", "", "_- .")
_NUMBER_TYPES = (int, float, np.integer, np.floating)
_JSON_NUMBER_TYPES = frozenset({int, float})

Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]
# Encoders take numpy scalars too: timestamps and rates often come out of arrays.
Integer = int | np.integer[Any]
Real = float | np.integer[Any] | np.floating[Any]


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


def _to_float(value: object) -> float | None:
    """Return `value` as a float (inf when an integer is too large), None if no number."""
    if not _is_number(value):
        return None
    try:
        return float(cast("SupportsFloat", value))
    except OverflowError:
        return math.inf


def _refuse_non_finite(samples: npt.NDArray[np.floating[Any]]) -> None:
    finite = np.isfinite(samples)
    if not finite.all():
        index = int(np.argmin(finite))
        detail = f"sample {index} is {samples[index]}, samples must be finite"
        raise MessageError(ErrorReason.NON_FINITE, "samples", detail)


def _one_d(samples: npt.ArrayLike, dtype: str | None, reason: ErrorReason) -> npt.NDArray[Any]:
    try:
        # A float64 beyond the float32 range becomes inf; _refuse_non_finite reports it.
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


def _check_timestamp(timestamp_ns: object, reason: ErrorReason) -> int:
    if (
        isinstance(timestamp_ns, bool)
        or not isinstance(timestamp_ns, int | np.integer)
        or not 0 <= int(timestamp_ns) < I64_LIMIT
    ):
        detail = f"must be an integer in [0, 2**63), got {timestamp_ns!r}"
        raise MessageError(reason, "timestamp_ns", detail)
    return int(timestamp_ns)


def _check_positive(value: object, field: str, reason: ErrorReason) -> float:
    number = _to_float(value)
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
    timestamp = _check_timestamp(timestamp_ns, reason)
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
    _refuse_non_finite(data)
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
    _refuse_non_finite(data)
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
        _refuse_non_finite(data)
    document: dict[str, Any] = {
        "timestamp_ns": _check_timestamp(timestamp_ns, ErrorReason.BAD_FIELD),
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
    if _JSON_START.match(payload):
        return _decode_json(payload, machine)
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
        # A huge scale can overflow float32; _refuse_non_finite reports it.
        with np.errstate(over="ignore"):
            samples = raw.astype(np.float32)
            samples *= np.float32(scale)
        samples.flags.writeable = False
    _refuse_non_finite(samples)
    return RawWindow(machine, timestamp_ns, float(sample_rate), samples)


def _json_number(document: dict[str, Any], field: str) -> float:
    value = document.get(field)
    number = _to_float(value)
    if number is None:
        detail = "missing" if value is None else f"must be a number, got {type(value).__name__}"
        raise MessageError(ErrorReason.BAD_FIELD, field, detail)
    if not math.isfinite(number):
        raise MessageError(ErrorReason.NON_FINITE, field, f"{number}, must be finite")
    if number <= 0:
        raise MessageError(ErrorReason.BAD_FIELD, field, f"{number}, must be > 0")
    return number


class _Parsers(threading.local):
    """One simdjson parser per thread: a parser is not thread-safe, and reused it keeps its buffers."""

    def __init__(self) -> None:
        self.parser = simdjson.Parser()


_PARSERS = _Parsers()


def _fast_document(payload: bytes) -> dict[str, Any] | None:
    """The document with its samples as a float64 array, through simdjson; None when `json` must judge it.

    simdjson copies the numbers into an array without making a Python float of
    each: a 4096-sample window decodes in about a third of the time orjson took
    with the per-sample checks (docs/benchmarks.md). It takes only the plain
    case: an object of distinct keys, scalar fields and one flat, non-empty
    array of numbers. Everything else (NaN and Infinity, integers beyond 64
    bits, nested or mixed arrays, duplicate keys, keys with a NUL, malformed
    input) returns None and is parsed again by `json`, so every refusal keeps
    its reason and message.
    """
    # A second "[" anywhere (even in a string) goes to json: as_buffer flattens nested arrays,
    # so [[1], [2]] would pass for [1, 2].
    if payload.find(b"[", payload.find(b"[") + 1) != -1:
        return None
    parser = _PARSERS.parser
    try:
        document = cast("simdjson.Object", parser.parse(payload))  # the caller saw a "{"
        keys = list(document.keys())
        # pysimdjson looks keys up as C strings: "a\u0000b" would find "a".
        if len(set(keys)) != len(keys) or any("\x00" in key for key in keys):
            return None
        values = document.get("samples")
        if not isinstance(values, simdjson.Array) or len(values) == 0:
            return None
        fields: dict[str, Any] = {key: document[key] for key in keys if key != "samples"}
        if any(isinstance(value, (simdjson.Object, simdjson.Array)) for value in fields.values()):
            return None
        samples = np.frombuffer(values.as_buffer(of_type="d"), dtype=np.float64)
    # What simdjson raises for the documents it refuses (ValueError, TypeError, RuntimeError,
    # KeyError) and anything else: json decides, and no proxy of this parser outlives the call.
    except Exception:  # noqa: BLE001
        return None
    fields["samples"] = samples
    return fields


def _slow_document(payload: bytes) -> dict[str, Any]:
    """The document through `json`, for the documents `_fast_document` leaves, with their verdict."""
    try:
        document = json.loads(payload)
    except RecursionError:
        raise MessageError(ErrorReason.NOT_JSON, "payload", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise MessageError(ErrorReason.NOT_JSON, "payload", f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):  # pragma: no cover - _JSON_START saw a "{"
        raise MessageError(ErrorReason.NOT_JSON, "payload", "not a JSON object")
    return document


def _json_samples(values: object) -> npt.NDArray[np.float64]:
    """The samples as float64: already converted by `_fast_document`, or a list from `json` checked here."""
    if isinstance(values, np.ndarray):
        return values
    if not isinstance(values, list) or not values:
        detail = "missing" if values is None else "must be a non-empty list of numbers"
        raise MessageError(ErrorReason.BAD_FIELD, "samples", detail)
    # JSON yields exact int and float for numbers, and a set of types is
    # about five times faster than isinstance per sample.
    if not set(map(type, values)) <= _JSON_NUMBER_TYPES:
        index = next(i for i, value in enumerate(values) if type(value) not in _JSON_NUMBER_TYPES)
        detail = f"sample {index} is {type(values[index]).__name__}, not a number"
        raise MessageError(ErrorReason.BAD_FIELD, "samples", detail)
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond the float64 range
        raise MessageError(ErrorReason.NON_FINITE, "samples", "a sample exceeds float64") from None


def _near_miss(key: str, lacking: frozenset[str]) -> str:
    """The key of ours the window lacks that `key` is a typo of ('' if none).

    Only a key the window lacks: "timestamp" beside "timestamp_ns" is the sensor's own. A typo
    is ours in another case or with other separators (``Scale``, ``sampleRate``), ours without
    its unit (``timestamp``), or one letter added, dropped, changed or two swapped in a key of
    five letters or more (``scal``, ``units``, ``sampels``). Short words one letter apart are
    the sensor's own (``unix``, ``init`` beside ``unit``). A key longer than any of ours plus
    two is no typo, and is judged before the cache: a sensor's megabyte key is not kept.
    """
    if len(key) > _LONGEST_KEY + 2:
        return ""
    return _near_miss_of(key, lacking)


@functools.lru_cache(maxsize=256)
def _near_miss_of(key: str, lacking: frozenset[str]) -> str:
    # Cached: a sensor sends the same extra keys (the reference's band energies) in every window.
    theirs = _plain(key)
    for ours in sorted(lacking):
        plain = _plain(ours)
        if theirs in (plain, plain.removesuffix("ns")) or (
            max(len(theirs), len(plain)) >= _TYPO_MIN_LENGTH and _one_edit(theirs, plain)
        ):
            return ours
    return ""


def _plain(key: str) -> str:
    """`key` in lower case without separators: ``sampleRate``, ``Sample-Rate`` and ``sample_rate`` alike."""
    return key.lower().translate(_SEPARATORS)


def _one_edit(a: str, b: str) -> bool:
    """Whether `a` becomes `b` by one letter added, dropped or changed, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        i = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        changed = a[i + 1 :] == b[i + 1 :]
        swapped = i + 1 < len(a) and a[:i] + a[i + 1] + a[i] + a[i + 2 :] == b
        return changed or swapped
    short, long = (a, b) if len(a) < len(b) else (b, a)
    first = next((i for i, (x, y) in enumerate(zip(short, long, strict=False)) if x != y), len(short))
    return short[first:] == long[first + 1 :]


def _decode_json(payload: bytes, machine: str) -> RawWindow:
    document = _fast_document(payload) or _slow_document(payload)
    lacking = frozenset(_JSON_KEYS - document.keys())
    for key in sorted(document.keys() - _JSON_KEYS):
        if near := _near_miss(key, lacking):
            raise MessageError(ErrorReason.BAD_FIELD, key, f"unknown field; did you mean {near!r}?")
    if "timestamp_ns" not in document:
        raise MessageError(ErrorReason.BAD_FIELD, "timestamp_ns", "missing")
    timestamp_ns = _check_timestamp(document["timestamp_ns"], ErrorReason.BAD_FIELD)
    sample_rate = _json_number(document, "sample_rate")
    scale = _json_number(document, "scale") if "scale" in document else None
    unit = _json_unit(document["unit"]) if "unit" in document else None
    data = _json_samples(document.get("samples"))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        samples = (data if scale is None else data * scale).astype(np.float32)
    # Overflow into inf is reported by _refuse_non_finite with its index; a scale so small that
    # samples become 0 would pass for a machine at rest.
    if scale is not None and np.count_nonzero(samples) < np.count_nonzero(data.astype(np.float32)):
        detail = f"{scale}: samples times it underflow float32 to 0; scale must give physical units"
        raise MessageError(ErrorReason.BAD_FIELD, "scale", detail)
    _refuse_non_finite(samples)
    samples.flags.writeable = False
    return RawWindow(machine, timestamp_ns, sample_rate, samples, unit)


def _json_unit(value: object) -> Unit:
    unit = parse_unit(value) if isinstance(value, str) else None
    if unit is None:
        raise MessageError(ErrorReason.BAD_FIELD, "unit", f"{value!r}, must be one of {accepted()}")
    return unit
