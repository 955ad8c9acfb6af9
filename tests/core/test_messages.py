"""Tests of the MQTT payloads: raw window encodings, JSON messages and every refusal."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from vibration_core import raw_json
from vibration_core.errors import MessageError
from vibration_core.messages import (
    Alert,
    ErrorMessage,
    ErrorReason,
    JsonMessage,
    ModelStatus,
    Prediction,
    PredictionRow,
)
from vibration_core.raw import (
    RAW_HEADER,
    decode_raw,
    encode_raw_float32,
    encode_raw_int16,
    encode_raw_json,
    quantize_int16,
)

TS = 1_767_225_600_123_456_789
RATE = 25_600
N = 4096


def _signal(n: int = N) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(7)
    return (3.0 * rng.standard_normal(n)).astype(np.float32)


def _binary(
    code: int = 1,
    rate: int = RATE,
    n: int = 4,
    ts: int = TS,
    scale: float = 1.0,
    *,
    body: bytes | None = None,
    magic: bytes = b"VW",
    version: int = 1,
) -> bytes:
    """A binary payload with any header, valid or not; the body defaults to n zeros."""
    header = RAW_HEADER.pack(magic, version, code, rate, n, ts, scale)
    if body is None:
        body = bytes(n * (2 if code == 2 else 4))
    return header + body


def _json(**fields: Any) -> bytes:
    document = {"timestamp_ns": TS, "sample_rate": RATE, "samples": [0.5, -1.0, 2]}
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


def _refusal(payload: bytes, **kwargs: Any) -> MessageError:
    with pytest.raises(MessageError) as caught:
        decode_raw(payload, "cnc-01", **kwargs)
    return caught.value


# --- raw windows: round trips -------------------------------------------------------------


def test_float32_round_trip_is_exact() -> None:
    samples = _signal()
    window = decode_raw(encode_raw_float32(samples, RATE, TS), "cnc-01")
    assert window.machine == "cnc-01"
    assert window.timestamp_ns == TS
    assert window.sample_rate == float(RATE)
    assert window.samples.dtype == np.float32
    assert window.samples.shape == (N,)
    np.testing.assert_array_equal(window.samples, samples)


def test_float32_decoding_is_zero_copy_and_read_only() -> None:
    payload = encode_raw_float32(_signal(), RATE, TS)
    window = decode_raw(payload, "cnc-01")
    base: object = window.samples.base
    assert base is payload
    assert np.shares_memory(window.samples, np.frombuffer(payload, dtype=np.uint8))
    assert not window.samples.flags.writeable


def test_binary_header_layout_is_the_documented_one() -> None:
    payload = encode_raw_float32(np.ones(3, dtype=np.float32), RATE, TS)
    assert RAW_HEADER.size == 24
    assert len(payload) == 24 + 3 * 4
    assert RAW_HEADER.unpack_from(payload) == (b"VW", 1, 1, RATE, 3, TS, 1.0)
    assert payload[24:] == np.ones(3, dtype="<f4").tobytes()


@pytest.mark.parametrize(
    "full_scale",
    [pytest.param(None, id="peak"), pytest.param(50.0, id="full-scale-above-peak")],
)
def test_int16_round_trip_within_half_a_step(full_scale: float | None) -> None:
    samples = _signal()
    quantized, scale = quantize_int16(samples, full_scale)
    assert quantized.dtype == np.int16
    window = decode_raw(encode_raw_int16(quantized, scale, RATE, TS), "cnc-01")
    assert window.samples.dtype == np.float32
    assert not window.samples.flags.writeable
    error = np.abs(window.samples.astype(np.float64) - samples)
    # float32 arithmetic in the decoder adds a rounding far below half a step.
    assert error.max() <= scale / 2 + 1e-6 * float(np.abs(samples).max())


def test_quantize_uses_the_int16_range() -> None:
    quantized, scale = quantize_int16(_signal())
    assert int(np.abs(quantized).max()) == 32767
    assert scale == pytest.approx(float(np.abs(_signal()).max()) / 32767, rel=1e-6)


def test_quantize_clips_beyond_full_scale() -> None:
    quantized, scale = quantize_int16([-10.0, 0.5, 10.0], full_scale=1.0)
    assert quantized.tolist() == [-32767, round(0.5 / scale), 32767]


def test_quantize_all_zero_window() -> None:
    quantized, scale = quantize_int16(np.zeros(8))
    assert scale > 0
    assert not quantized.any()


def test_json_round_trip_without_scale_is_exact_for_float32() -> None:
    samples = _signal(256)
    window = decode_raw(encode_raw_json(samples, RATE, TS), "cnc-01")
    assert window.timestamp_ns == TS
    assert window.sample_rate == float(RATE)
    assert window.samples.dtype == np.float32
    assert not window.samples.flags.writeable
    np.testing.assert_array_equal(window.samples, samples)


def test_json_round_trip_with_scale() -> None:
    payload = encode_raw_json(np.array([100, -200, 0], dtype=np.int16), 10_000.5, TS, scale=0.01)
    assert json.loads(payload)["samples"] == [100, -200, 0]
    window = decode_raw(payload, "cnc-01")
    assert window.sample_rate == 10_000.5
    np.testing.assert_allclose(window.samples, [1.0, -2.0, 0.0], rtol=1e-6)


def test_json_windows_may_say_their_unit() -> None:
    samples = np.array([0.5, -0.25], dtype=np.float32)
    assert decode_raw(encode_raw_json(samples, 25600, 1), "m").unit is None
    assert decode_raw(encode_raw_json(samples, 25600, 1, unit="m/s^2"), "m").unit == "m/s^2"
    assert decode_raw(
        b'{"timestamp_ns":1,"sample_rate":25600,"samples":[1],"unit":"m/s\\u00b2"}', "m"
    ).unit == ("m/s^2")
    for bad in (b'"counts"', b"9.81", b"null"):
        payload = b'{"timestamp_ns":1,"sample_rate":25600,"samples":[1],"unit":' + bad + b"}"
        with pytest.raises(MessageError, match=r"unit: .* must be one of 'g', 'm/s\^2'") as info:
            decode_raw(payload, "m")
        assert info.value.reason == ErrorReason.BAD_FIELD


def test_json_accepts_leading_whitespace() -> None:
    window = decode_raw(b" \r\n\t" + _json(), "cnc-01")
    np.testing.assert_array_equal(window.samples, np.array([0.5, -1.0, 2.0], dtype=np.float32))


def test_json_samples_are_the_standard_parsers_numbers() -> None:
    # simdjson decodes; the numbers must be exactly what json.loads reads (float64, then float32).
    values = [*np.random.default_rng(7).normal(scale=3.0, size=4096).tolist(), 1, -2, 10**15, 5e-324]
    payload = json.dumps({"timestamp_ns": TS, "sample_rate": RATE, "samples": values}).encode()
    expected = np.array(json.loads(payload)["samples"], dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(decode_raw(payload, "cnc-01").samples, expected)


# --- raw windows: refusals ----------------------------------------------------------------

_NAN_AT_5 = np.zeros(8, dtype="<f4")
_NAN_AT_5[5] = np.nan
_INF_AT_2 = np.zeros(8, dtype="<f4")
_INF_AT_2[2] = -np.inf

MALFORMED_RAW = [
    # payload, reason, field
    pytest.param(b"", "not_json", "payload", id="empty"),
    pytest.param(b"hello", "not_json", "payload", id="text"),
    pytest.param(b"V", "not_json", "payload", id="half-magic"),
    pytest.param(b"WV" + bytes(30), "not_json", "payload", id="wrong-magic"),
    pytest.param(b"[1, 2, 3]", "not_json", "payload", id="json-array"),
    pytest.param(b"{", "not_json", "payload", id="truncated-json"),
    pytest.param(b'{"samples": [1,]}', "not_json", "payload", id="invalid-json"),
    pytest.param(b'{"\xff": 1}', "not_json", "payload", id="not-utf8"),
    pytest.param(b'{"a":' + b"[" * 100_000, "not_json", "payload", id="deep-nesting"),
    pytest.param(b"VW", "bad_header", "header", id="magic-only"),
    pytest.param(_binary()[:23], "bad_header", "header", id="short-header"),
    pytest.param(_binary(version=2), "bad_header", "version", id="version"),
    pytest.param(_binary(rate=0), "bad_header", "sample_rate", id="zero-rate"),
    pytest.param(_binary(n=0), "bad_header", "n_samples", id="zero-samples"),
    pytest.param(_binary(ts=-1), "bad_header", "timestamp_ns", id="negative-timestamp"),
    pytest.param(_binary(scale=2.0), "bad_header", "scale", id="float32-scale"),
    pytest.param(_binary(2, scale=0.0), "bad_header", "scale", id="int16-zero-scale"),
    pytest.param(_binary(2, scale=-1.0), "bad_header", "scale", id="int16-negative-scale"),
    pytest.param(_binary(2, scale=float("nan")), "bad_header", "scale", id="int16-nan-scale"),
    pytest.param(_binary(2, scale=float("inf")), "bad_header", "scale", id="int16-inf-scale"),
    pytest.param(_binary(0), "bad_dtype", "dtype", id="dtype-0"),
    pytest.param(_binary(3, body=bytes(16)), "bad_dtype", "dtype", id="dtype-3"),
    pytest.param(_binary(body=bytes(15)), "bad_length", "samples", id="short-body"),
    pytest.param(_binary(body=bytes(17)), "bad_length", "samples", id="long-body"),
    pytest.param(_binary(2, scale=0.5, body=bytes(16)), "bad_length", "samples", id="int16-len"),
    pytest.param(_binary(n=8, body=_NAN_AT_5.tobytes()), "non_finite", "samples", id="nan"),
    pytest.param(_binary(n=8, body=_INF_AT_2.tobytes()), "non_finite", "samples", id="inf"),
    pytest.param(
        _binary(2, n=2, scale=3e38, body=np.array([0, 2], "<i2").tobytes()),
        "non_finite",
        "samples",
        id="int16-overflow",
    ),
    pytest.param(_json(timestamp_ns=...), "bad_field", "timestamp_ns", id="no-timestamp"),
    pytest.param(_json(timestamp_ns="1"), "bad_field", "timestamp_ns", id="str-timestamp"),
    pytest.param(_json(timestamp_ns=1.5), "bad_field", "timestamp_ns", id="float-timestamp"),
    pytest.param(_json(timestamp_ns=True), "bad_field", "timestamp_ns", id="bool-timestamp"),
    pytest.param(_json(timestamp_ns=-1), "bad_field", "timestamp_ns", id="negative-timestamp"),
    pytest.param(_json(timestamp_ns=2**63), "bad_field", "timestamp_ns", id="huge-timestamp"),
    pytest.param(_json(sample_rate=...), "bad_field", "sample_rate", id="no-rate"),
    pytest.param(_json(sample_rate="25600"), "bad_field", "sample_rate", id="str-rate"),
    pytest.param(_json(sample_rate=0), "bad_field", "sample_rate", id="zero-rate-json"),
    pytest.param(_json(sample_rate=-1.0), "bad_field", "sample_rate", id="negative-rate"),
    pytest.param(_json(sample_rate=None), "bad_field", "sample_rate", id="null-rate"),
    pytest.param(_json(samples=...), "bad_field", "samples", id="no-samples"),
    pytest.param(_json(samples=[]), "bad_field", "samples", id="empty-samples"),
    pytest.param(_json(samples="1,2"), "bad_field", "samples", id="str-samples"),
    pytest.param(_json(samples=[1, "2"]), "bad_field", "samples", id="str-sample"),
    pytest.param(_json(samples=[1, True]), "bad_field", "samples", id="bool-sample"),
    pytest.param(_json(samples=[1, None]), "bad_field", "samples", id="null-sample"),
    pytest.param(_json(samples=[[1, 2]]), "bad_field", "samples", id="nested-samples"),
    pytest.param(_json(samples=[[1], [2]]), "bad_field", "samples", id="column-samples"),
    pytest.param(_json(samples=[1, [2]]), "bad_field", "samples", id="half-nested-samples"),
    pytest.param(_json(samples=[[1, 2], []]), "bad_field", "samples", id="nested-with-empty"),
    pytest.param(
        b'{"timestamp_ns":1,"sample_rate":1,"samples":[1],"sc\\u0000ale":1}',
        "bad_field",
        "sc\x00ale",
        id="nul-key",
    ),
    pytest.param(_json(scale=0), "bad_field", "scale", id="zero-scale"),
    pytest.param(_json(scale="2"), "bad_field", "scale", id="str-scale"),
    pytest.param(_json(scal=2.0), "bad_field", "scal", id="typo-of-scale"),
    pytest.param(
        _json(sample_rate=..., sampleRate=25600), "bad_field", "sampleRate", id="typo-of-sample-rate"
    ),
    pytest.param(_json(Scale=2.0), "bad_field", "Scale", id="typo-of-scale-case"),
    pytest.param(_json(samples=..., sampels=[1.0]), "bad_field", "sampels", id="typo-of-samples-swapped"),
    pytest.param(_json(units="g"), "bad_field", "units", id="typo-of-unit"),
    pytest.param(_json(scale=1e-46), "bad_field", "scale", id="scale-underflows-to-zero"),
    pytest.param(_json(samples=[1.0, float("nan")]), "non_finite", "samples", id="json-nan"),
    pytest.param(
        b'{"timestamp_ns":1,"sample_rate":1,"samples":[Infinity]}',
        "non_finite",
        "samples",
        id="json-infinity",
    ),
    pytest.param(_json(samples=[1e400]), "non_finite", "samples", id="json-1e400"),
    pytest.param(_json(samples=[10**400]), "non_finite", "samples", id="json-huge-int"),
    pytest.param(_json(samples=[1e30], scale=1e30), "non_finite", "samples", id="scaled-overflow"),
    pytest.param(_json(sample_rate=float("nan")), "non_finite", "sample_rate", id="nan-rate"),
    pytest.param(_json(scale=float("inf")), "non_finite", "scale", id="inf-scale"),
    pytest.param(_json(sample_rate=10**400), "non_finite", "sample_rate", id="huge-int-rate"),
]


@pytest.mark.parametrize(("payload", "reason", "field"), MALFORMED_RAW)
def test_refuses_malformed_raw_windows(payload: bytes, reason: str, field: str) -> None:
    error = _refusal(payload)
    assert (error.reason, error.field) == (reason, field)
    assert error.reason in set(ErrorReason)
    assert error.detail
    assert len(error.detail) < 300


def test_oversized_is_checked_before_parsing() -> None:
    error = _refusal(b"x" * 101, max_bytes=100)
    assert (error.reason, error.field) == (ErrorReason.OVERSIZED, "payload")
    assert "101" in error.detail
    assert "100" in error.detail
    assert _refusal(encode_raw_float32(_signal(), RATE, TS), max_bytes=1000).reason == "oversized"


def test_default_size_limit_is_one_mebibyte() -> None:
    assert _refusal(b"VW" + bytes(1 << 20)).reason == ErrorReason.OVERSIZED


def test_not_json_detail_names_both_encodings() -> None:
    error = _refusal(b"\x00\x01")
    assert error.detail == "neither a binary window (magic VW) nor a JSON object"


def test_bad_length_detail_states_expected_and_actual_bytes() -> None:
    error = _refusal(_binary(n=4, body=bytes(10)))
    assert "expected 40 bytes" in error.detail
    assert "got 34" in error.detail


ACCEPTED_JSON = [
    pytest.param(_json(), id="plain"),
    pytest.param(
        _json(samples=[1, -2, 2**63 - 1, 2**64 - 1, 0.1, -0.0, 5e-324, 1e-400]), id="ints-and-edges"
    ),
    pytest.param(_json(scale=0.5, unit="g"), id="scale-and-unit"),
    pytest.param(b'{"samples":[3,4],"timestamp_ns":1,"sample_rate":2,"samples":[1,2]}', id="duplicate-key"),
    pytest.param(b'\t{ "timestamp_ns" : 1 , "sample_rate" : 2.5 , "samples" : [ 1 , 2e3 ] }\n', id="spaces"),
]


def _outcome(payload: bytes) -> tuple[Any, ...]:
    """What decoding `payload` gives: the window's every field, or the refusal's reason, field and detail."""
    try:
        w = decode_raw(payload, "cnc-01")
    except MessageError as error:
        return (error.reason, error.field, error.detail)
    return (w.timestamp_ns, w.sample_rate, w.unit, w.samples.dtype, w.samples.tobytes())


_JSON_CASES = [
    *ACCEPTED_JSON,
    *(case for case in MALFORMED_RAW if cast("bytes", case.values[0]).lstrip()[:1] == b"{"),
]


@pytest.mark.parametrize(
    "payload", [case.values[0] for case in _JSON_CASES], ids=[case.id for case in _JSON_CASES]
)
def test_json_fast_path_decides_as_the_standard_parser(
    payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # simdjson takes the plain documents and hands the rest to json: either way, the same window or refusal.
    fast = _outcome(payload)
    monkeypatch.setattr(raw_json, "_fast_document", lambda _payload: None)
    assert fast == _outcome(payload)


def test_plain_json_windows_take_the_fast_path() -> None:
    payload = encode_raw_json(_signal(), RATE, TS, unit="g")
    document = raw_json._fast_document(payload)
    assert document is not None
    assert isinstance(document["samples"], np.ndarray)
    for odd in (
        _json(samples=[1.0, float("nan")]),
        _json(samples=[[1, 2]]),
        _json(unit=["g"]),
        b'{"a":1,"a":2}',
    ):
        assert raw_json._fast_document(odd) is None


def test_json_windows_decode_alike_on_many_threads() -> None:
    payloads = [encode_raw_json(np.full(64, i, dtype=np.float32), RATE, TS + i) for i in range(400)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        windows = list(pool.map(lambda p: decode_raw(p, "m"), payloads))
    assert [w.timestamp_ns - TS for w in windows] == list(range(400))
    assert all((w.samples == w.timestamp_ns - TS).all() for w in windows)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_binary(n=8, body=_NAN_AT_5.tobytes()), id="binary"),
        pytest.param(_json(samples=[0, 1, 2, 3, 4, float("nan")]), id="json"),
    ],
)
def test_non_finite_detail_gives_the_first_bad_index(payload: bytes) -> None:
    assert "sample 5 " in _refusal(payload).detail


# --- raw windows: encoders refuse what the decoder would --------------------------------

_NAN = float("nan")


@pytest.mark.parametrize(
    ("encode", "reason", "field"),
    [
        pytest.param(
            lambda: encode_raw_float32([1.0, _NAN], RATE, TS), "non_finite", "samples", id="f32-nan"
        ),
        pytest.param(
            lambda: encode_raw_float32([1e39], RATE, TS), "non_finite", "samples", id="f32-overflow"
        ),
        pytest.param(lambda: encode_raw_float32([[1.0]], RATE, TS), "bad_field", "samples", id="f32-2d"),
        pytest.param(lambda: encode_raw_float32([], RATE, TS), "bad_header", "n_samples", id="f32-empty"),
        pytest.param(lambda: encode_raw_float32(["a"], RATE, TS), "bad_dtype", "samples", id="f32-str"),
        pytest.param(
            lambda: encode_raw_float32([1.0], 25_600.5, TS),
            "bad_header",
            "sample_rate",
            id="f32-fractional-rate",
        ),
        pytest.param(
            lambda: encode_raw_float32([1.0], 2**32, TS),
            "bad_header",
            "sample_rate",
            id="f32-rate-beyond-u32",
        ),
        pytest.param(
            lambda: encode_raw_float32([1.0], 0, TS),
            "bad_header",
            "sample_rate",
            id="f32-zero-rate",
        ),
        pytest.param(
            lambda: encode_raw_float32([1.0], RATE, -1),
            "bad_header",
            "timestamp_ns",
            id="f32-negative-timestamp",
        ),
        pytest.param(
            lambda: encode_raw_int16([1.0], 1.0, RATE, TS),
            "bad_dtype",
            "samples",
            id="i16-float-samples",
        ),
        pytest.param(
            lambda: encode_raw_int16(np.array([1], dtype=np.int16), 0.0, RATE, TS),
            "bad_header",
            "scale",
            id="i16-zero-scale",
        ),
        pytest.param(
            lambda: encode_raw_int16(np.array([1], dtype=np.int16), 1e39, RATE, TS),
            "bad_header",
            "scale",
            id="i16-scale-beyond-f32",
        ),
        pytest.param(
            lambda: encode_raw_int16(np.array([1], dtype=np.int16), 1e-50, RATE, TS),
            "bad_header",
            "scale",
            id="i16-scale-below-f32",
        ),
        pytest.param(lambda: encode_raw_json(["a"], RATE, TS), "bad_dtype", "samples", id="json-str"),
        pytest.param(lambda: encode_raw_json([_NAN], RATE, TS), "non_finite", "samples", id="json-nan"),
        pytest.param(
            lambda: encode_raw_json([1], RATE, TS, scale=-1.0),
            "bad_field",
            "scale",
            id="json-negative-scale",
        ),
        pytest.param(
            lambda: encode_raw_json([1], RATE, timestamp_ns=True),
            "bad_field",
            "timestamp_ns",
            id="json-bool-timestamp",
        ),
        pytest.param(lambda: quantize_int16([1.0, _NAN]), "non_finite", "samples", id="quantize-nan"),
        pytest.param(
            lambda: quantize_int16([1.0], full_scale=0.0),
            "bad_field",
            "full_scale",
            id="quantize-zero-full-scale",
        ),
    ],
)
def test_encoders_refuse_bad_input(encode: Any, reason: str, field: str) -> None:
    with pytest.raises(MessageError) as caught:
        encode()
    assert (caught.value.reason, caught.value.field) == (reason, field)


def test_encoders_accept_numpy_scalars() -> None:
    payload = encode_raw_float32([1.0], np.float64(RATE), np.int64(TS))
    window = decode_raw(payload, "m")
    assert (window.sample_rate, window.timestamp_ns) == (RATE, TS)
    window = decode_raw(encode_raw_json([1.0], np.float32(RATE), np.int64(TS)), "m")
    assert (window.sample_rate, window.timestamp_ns) == (RATE, TS)


# --- JSON messages ------------------------------------------------------------------------

DIGEST = "ab" * 32


def _prediction(**fields: Any) -> dict[str, Any]:
    return {
        "machine": "cnc-01",
        "timestamp_ns": TS,
        "model_id": "bearing-gbdt",
        "model_version": "3",
        "label": "bearing_fault",
        "confidence": 0.93,
        "probabilities": {"normal": 0.05, "bearing_fault": 0.93, "imbalance": 0.02},
        "latency_ms": 0.41,
    } | fields


def _alert(**fields: Any) -> dict[str, Any]:
    alert = _prediction(consecutive=5, severity="critical")
    del alert["probabilities"], alert["latency_ms"]
    return alert | fields


def _error(**fields: Any) -> dict[str, Any]:
    return {
        "topic": "factory/hall-a/machines/cnc-01/raw",
        "reason": "bad_length",
        "field": "samples",
        "detail": "expected 40 bytes, got 34",
        "machine": "cnc-01",
        "received_ns": TS,
    } | fields


def _status(**fields: Any) -> dict[str, Any]:
    return {
        "node": "edge-gw-1",
        "model_id": "bearing-gbdt",
        "version": "3",
        "sha256": DIGEST,
        "state": "serving",
        "ready": True,
        "windows_total": 1200,
        "errors_total": 3,
        "drift": {"psi_rms": 0.04, "chi2_classes": 1.7},
        "drifted": False,
        "message": "",
        "updated_ns": TS,
    } | fields


MESSAGES = [
    pytest.param(Prediction, _prediction(), id="prediction"),
    pytest.param(Alert, _alert(), id="alert"),
    pytest.param(ErrorMessage, _error(), id="error"),
    pytest.param(ErrorMessage, _error(machine=None, topic="elsewhere"), id="error-no-machine"),
    pytest.param(ModelStatus, _status(), id="status"),
    pytest.param(
        ModelStatus,
        {
            "node": "edge-gw-1",
            "state": "no_model",
            "ready": False,
            "windows_total": 0,
            "errors_total": 0,
            "updated_ns": TS,
        },
        id="status-no-model",
    ),
]


@pytest.mark.parametrize(("model", "fields"), MESSAGES)
def test_message_round_trip(model: type[JsonMessage], fields: dict[str, Any]) -> None:
    message = model.model_validate(fields)
    payload = message.encode()
    assert isinstance(payload, bytes)
    assert json.loads(payload)["schema_version"] == 1
    assert model.decode(payload) == message
    assert payload == message.model_dump_json().encode()  # pydantic's own JSON, byte for byte


@pytest.mark.parametrize(
    ("confidence", "probabilities", "latency_ms"),
    [
        (0.9, {"normal": 0.01, "imbalance": 0.9, "misalignment": 0.05, "bearing_fault": 0.04}, 0.1234),
        (1.0, {"normal": 3.2e-05, "imbalance": 1.0, "misalignment": 1e-300, "bearing_fault": 0.0}, 0.0),
        (0.5, {"a": 0.5, "b": 0.5}, 123456.7891),
        (1 / 3, {"a": 1 / 3, "b": 2 / 3, "c": 5e-324}, 1e-4),
    ],
)
def test_a_prediction_row_encodes_as_its_prediction(
    confidence: float, probabilities: dict[str, float], latency_ms: float
) -> None:
    row = PredictionRow("m-01.a_b", TS, "spindle", "v1.2", "imbalance", confidence, probabilities, latency_ms)
    assert row.encode() == Prediction(**row._asdict()).encode()
    assert Prediction.decode(row.encode()) == Prediction(**row._asdict())
    # the same fields, in the same order: a field added to Prediction must be added here
    assert ("schema_version", *PredictionRow._fields) == tuple(Prediction.model_fields)


def test_a_prediction_row_never_writes_nan_into_json() -> None:
    row = PredictionRow("m-01", TS, "spindle", "v1", "imbalance", float("nan"), {"a": float("inf")}, 0.0)
    assert json.loads(row.encode())["confidence"] is None  # JSON has no NaN: null, as JsonMessage writes
    assert json.loads(row.encode())["probabilities"] == {"a": None}


def test_status_defaults() -> None:
    status = ModelStatus.model_validate(MESSAGES[-1].values[1])
    assert (status.model_id, status.version, status.sha256) == (None, None, None)
    assert (status.drift, status.drifted, status.message) == ({}, False, "")


MALFORMED_MESSAGES = [
    # model, payload, reason, field
    pytest.param(Prediction, b"nope", "not_json", "payload", id="not-json"),
    pytest.param(Prediction, b'{"machine": ', "not_json", "payload", id="truncated"),
    pytest.param(Prediction, b"\xff\xfe", "not_json", "payload", id="not-utf8"),
    pytest.param(Prediction, b"[1]", "not_json", "payload", id="array"),
    pytest.param(Prediction, _prediction(label=...), "bad_field", "label", id="missing"),
    pytest.param(Prediction, _prediction(extra=1), "bad_field", "extra", id="extra-field"),
    pytest.param(Prediction, _prediction(confidence=1.5), "bad_field", "confidence", id="conf"),
    pytest.param(Prediction, _prediction(confidence="0.5"), "bad_field", "confidence", id="str"),
    pytest.param(Prediction, _prediction(timestamp_ns="1"), "bad_field", "timestamp_ns", id="strict-int"),
    pytest.param(Prediction, _prediction(timestamp_ns=-1), "bad_field", "timestamp_ns", id="negative-ts"),
    pytest.param(Prediction, _prediction(latency_ms=-0.1), "bad_field", "latency_ms", id="negative-latency"),
    pytest.param(Prediction, _prediction(latency_ms=float("nan")), "bad_field", "latency_ms", id="nan"),
    pytest.param(
        Prediction,
        _prediction(probabilities={"normal": "x"}),
        "bad_field",
        "probabilities.normal",
        id="nested-path",
    ),
    pytest.param(Prediction, _prediction(machine="a/b"), "bad_field", "machine", id="bad-id"),
    pytest.param(
        Prediction,
        _prediction(schema_version=2),
        "bad_field",
        "schema_version",
        id="schema-version",
    ),
    pytest.param(Alert, _alert(consecutive=0), "bad_field", "consecutive", id="consecutive"),
    pytest.param(Alert, _alert(severity="info"), "bad_field", "severity", id="severity"),
    pytest.param(ErrorMessage, _error(reason="oops"), "bad_field", "reason", id="reason"),
    pytest.param(ErrorMessage, _error(received_ns=1.0), "bad_field", "received_ns", id="float-ns"),
    pytest.param(ModelStatus, _status(state="running"), "bad_field", "state", id="state"),
    pytest.param(ModelStatus, _status(sha256="ABC"), "bad_field", "sha256", id="sha256"),
    pytest.param(ModelStatus, _status(ready=1), "bad_field", "ready", id="strict-bool"),
    pytest.param(ModelStatus, _status(windows_total=-1), "bad_field", "windows_total", id="negative-count"),
    pytest.param(ModelStatus, _status(drift={"psi": "x"}), "bad_field", "drift.psi", id="drift-value"),
    pytest.param(ModelStatus, _status(node=""), "bad_field", "node", id="empty-node"),
]


@pytest.mark.parametrize(("model", "payload", "reason", "field"), MALFORMED_MESSAGES)
def test_refuses_malformed_messages(
    model: type[JsonMessage], payload: bytes | dict[str, Any], reason: str, field: str
) -> None:
    if isinstance(payload, dict):
        payload = json.dumps({k: v for k, v in payload.items() if v is not ...}).encode()
    with pytest.raises(MessageError) as caught:
        model.decode(payload)
    assert (caught.value.reason, caught.value.field) == (reason, field)


def test_messages_are_frozen() -> None:
    prediction = Prediction.model_validate(_prediction())
    with pytest.raises(ValidationError):
        prediction.label = "normal"


def test_messages_refuse_non_finite_numbers_when_built() -> None:
    with pytest.raises(ValidationError):
        Prediction.model_validate(_prediction(latency_ms=float("inf")))


def test_error_message_from_error() -> None:
    error = _refusal(_binary(n=4, body=bytes(10)))
    message = ErrorMessage.from_error(error, "factory/hall-a/machines/cnc-01/raw", "cnc-01", TS)
    assert message.reason is ErrorReason.BAD_LENGTH
    assert (message.field, message.detail) == ("samples", error.detail)
    assert (message.machine, message.received_ns) == ("cnc-01", TS)
    assert ErrorMessage.decode(message.encode()) == message


@pytest.mark.parametrize(
    "payload",
    [
        {"timestamp_ns": "\\" * 500_000, "sample_rate": 25600.0, "samples": [0.0] * 64},
        {"timestamp_ns": 1, "sample_rate": 25600.0, "samples": [0.0] * 64, "unit": "g" * 500_000},
        {"timestamp_ns": 1, "sample_rate": "r" * 500_000, "samples": [0.0] * 64},
    ],
    ids=["timestamp", "unit", "sample_rate"],
)
def test_an_error_message_quotes_a_huge_broken_field_briefly(payload: dict[str, Any]) -> None:
    # The error goes to every dashboard and historian: a 1 MB broken field once came back as 2 MB.
    error = _refusal(json.dumps(payload).encode())
    message = ErrorMessage.from_error(error, "factory/hall-a/machines/cnc-01/raw", "cnc-01", TS)
    assert len(message.encode()) < 1500
    assert len(message.detail) <= 512


def test_a_json_window_may_carry_other_keys_as_the_reference_sensors_do() -> None:
    # The reference pipeline's sensors send their band energies too; the extractor computes them again.
    extra = {"energy_low": 0.1, "energy_mid": 0.2, "energy_high": 0.3, "machine": "cnc-01", "seq": 7}
    window = decode_raw(_json(**extra), "cnc-01")
    assert window.timestamp_ns == decode_raw(_json(), "cnc-01").timestamp_ns
    refused = _refusal(_json(timestamp_ns=..., timestamp=1_700_000_000_000))
    assert (refused.field, refused.detail) == ("timestamp", "unknown field; did you mean 'timestamp_ns'?")
    # Beside the key it resembles, a key is the sensor's own (kept for other consumers).
    both = decode_raw(
        _json(timestamp="2023-11-14T22:13:20Z", unit="g", units="g", sample_rate_hz=25600), "cnc-01"
    )
    assert both.timestamp_ns == TS


def test_a_scale_is_blamed_only_for_what_it_underflows() -> None:
    # A sample too small for float32 on its own is the sensor's (read as 0, with or without scale 1).
    tiny = [1e-46, 0.5, -1.0]
    plain, scaled = (
        decode_raw(_json(samples=tiny), "cnc-01"),
        decode_raw(_json(samples=tiny, scale=1), "cnc-01"),
    )
    assert plain.samples.tolist() == scaled.samples.tolist() == [0.0, 0.5, -1.0]


def test_counts_beyond_float32_with_a_scale_that_brings_them_back_decode_quietly() -> None:
    # A sensor may send raw counts with a scale to physical units: the counts alone need not fit
    # float32, only the samples they scale to (the underflow check must not warn on the way).
    window = decode_raw(_json(samples=[1e300, -2e300, 0.0], scale=1e-300), "cnc-01")
    assert window.samples.tolist() == [1.0, -2.0, 0.0]


def test_a_key_a_letter_from_a_short_key_of_ours_is_the_sensors_own() -> None:
    # "unix" (a timestamp in seconds), "init" and "unit_id" are words of their own, not typos of "unit".
    window = decode_raw(_json(unix=1_700_000_000, init=True, unit_id=7, scale_factor_note="x"), "cnc-01")
    assert window.timestamp_ns == TS
    assert window.unit is None


def test_a_huge_unknown_key_is_judged_without_being_kept() -> None:
    # A sensor's megabyte key must not stay in the typo cache: 256 of them pinned 260 MB of a pod.
    raw_json._near_miss_of.cache_clear()  # room in the cache: a key kept would show
    kept = raw_json._near_miss_of.cache_info().currsize
    for i in range(3):
        decode_raw(_json(**{f"{i}" + "k" * 100_000: 1}), "cnc-01")
    assert raw_json._near_miss_of.cache_info().currsize == kept


def test_an_error_naming_a_key_without_utf8_is_sent_with_the_key_escaped() -> None:
    # A JSON key may hold a lone surrogate ("\ud800"): the error names it by its escape, not "internal".
    refused = _refusal(b'{"timestamp_ns":1,"sample_rate":25600,"samples":[1,2],"scale\\ud800":1}')
    assert (refused.reason, refused.field) == ("bad_field", "scale\ud800")
    message = ErrorMessage.from_error(refused, "factory/hall-a/machines/cnc-01/raw", "cnc-01", TS)
    assert json.loads(message.encode())["field"] == "scale\\ud800"


def test_error_reason_vocabulary() -> None:
    assert {reason.value for reason in ErrorReason} == {
        "not_json",
        "bad_field",
        "bad_length",
        "bad_dtype",
        "non_finite",
        "oversized",
        "unknown_topic",
        "bad_header",
        "sample_rate_mismatch",
        "window_length_mismatch",
        "unit_mismatch",
        "internal",
    }
