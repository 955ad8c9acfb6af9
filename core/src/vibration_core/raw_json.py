"""Decoding of JSON raw windows: the encoding the reference pipeline's sensors send.

A window is one JSON object (UTF-8)::

    {"timestamp_ns": int, "sample_rate": number, "samples": [number, ...],
     "scale": number,                      # optional, multiplies the samples
     "unit": "g" | "m/s^2"}                # optional; a window in another unit than
                                           # the model's is refused (unit_mismatch)

simdjson decodes it straight into an array (still slower than binary,
`vibration_core.raw`; see docs/benchmarks.md). What simdjson does not take
plainly goes to `json`, so malformed JSON is refused with ``not_json`` and the
parser's own message, and a bad field with ``bad_field`` or ``non_finite``
naming it.

Other keys are ignored: the reference pipeline's sensors also send their band
energies, which the extractor computes again from the samples. A key within a
typo of one of the five that the window lacks (``scal``, ``sampleRate``,
``timestamp`` without ``timestamp_ns``; `_near_miss` says what a typo is) is
refused, naming the key it resembles, rather than read as absent.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import simdjson

from vibration_core.errors import MessageError
from vibration_core.messages import ErrorReason
from vibration_core.raw_window import RawWindow, check_timestamp, refuse_non_finite, to_float
from vibration_core.units import Unit, accepted, parse_unit

JSON_START = re.compile(rb"[ \t\r\n]*\{")
"""What a JSON window starts with; `vibration_core.raw.decode_raw` tells the encodings apart by it."""
_JSON_KEYS = frozenset({"timestamp_ns", "sample_rate", "samples", "scale", "unit"})
_LONGEST_KEY = max(map(len, _JSON_KEYS))
_TYPO_MIN_LENGTH = 5
"""One letter apart is a typo from five letters on: "unix" and "init" are words of their own beside "unit"."""
_SEPARATORS = str.maketrans("", "", "_- .")
_JSON_NUMBER_TYPES = frozenset({int, float})


def _json_number(document: dict[str, Any], field: str) -> float:
    value = document.get(field)
    number = to_float(value)
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
    if not isinstance(document, dict):  # pragma: no cover - JSON_START saw a "{"
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


def decode_json(payload: bytes, machine: str) -> RawWindow:
    """Decode a JSON window (a payload that `JSON_START` matches) that came from `machine`."""
    document = _fast_document(payload) or _slow_document(payload)
    lacking = frozenset(_JSON_KEYS - document.keys())
    for key in sorted(document.keys() - _JSON_KEYS):
        if near := _near_miss(key, lacking):
            raise MessageError(ErrorReason.BAD_FIELD, key, f"unknown field; did you mean {near!r}?")
    if "timestamp_ns" not in document:
        raise MessageError(ErrorReason.BAD_FIELD, "timestamp_ns", "missing")
    timestamp_ns = check_timestamp(document["timestamp_ns"], ErrorReason.BAD_FIELD)
    sample_rate = _json_number(document, "sample_rate")
    scale = _json_number(document, "scale") if "scale" in document else None
    unit = _json_unit(document["unit"]) if "unit" in document else None
    data = _json_samples(document.get("samples"))
    # Overflow into inf is reported by refuse_non_finite with its index; a scale so small that
    # samples become 0 would pass for a machine at rest. Counts that only fit float32 once
    # scaled are fine: their own cast, for the comparison, may overflow without a word.
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        samples = (data if scale is None else data * scale).astype(np.float32)
        underflowed = scale is not None and np.count_nonzero(samples) < np.count_nonzero(
            data.astype(np.float32)
        )
    if underflowed:
        detail = f"{scale}: samples times it underflow float32 to 0; scale must give physical units"
        raise MessageError(ErrorReason.BAD_FIELD, "scale", detail)
    refuse_non_finite(samples)
    samples.flags.writeable = False
    return RawWindow(machine, timestamp_ns, sample_rate, samples, unit)


def _json_unit(value: object) -> Unit:
    unit = parse_unit(value) if isinstance(value, str) else None
    if unit is None:
        raise MessageError(ErrorReason.BAD_FIELD, "unit", f"{value!r}, must be one of {accepted()}")
    return unit
