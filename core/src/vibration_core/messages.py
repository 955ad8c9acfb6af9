"""The JSON messages of vibration-edge (contract 3) and the vocabulary of refusals.

Predictions, alerts, errors and model status go out as JSON objects described
by the pydantic models below; their field descriptions are the documentation
of the contract (tabulated in docs/contracts.md). Raw windows, the inbound
payloads, are in `vibration_core.raw`. Every refusal is a `MessageError`
whose `reason` is one of `ErrorReason`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from vibration_core.errors import MessageError
from vibration_core.validation import CompactReport

ID_PATTERN = r"^[A-Za-z0-9._-]+$"
MAX_ID_LENGTH = 128
I64_LIMIT = 1 << 63


class ErrorReason(StrEnum):
    """Why an input could not be used: the `reason` of every error message."""

    NOT_JSON = "not_json"
    """Neither a binary window (magic ``VW``) nor a JSON object, or JSON that does not parse."""
    BAD_FIELD = "bad_field"
    """A JSON field, or an identifier, that is missing, of the wrong type or out of range."""
    BAD_LENGTH = "bad_length"
    """A binary payload whose size is not the header plus ``n_samples`` samples."""
    BAD_DTYPE = "bad_dtype"
    """A binary payload with a sample type other than float32 (1) or int16 (2)."""
    NON_FINITE = "non_finite"
    """A NaN or infinite sample (or number); the detail names the first one."""
    OVERSIZED = "oversized"
    """A payload larger than the configured limit; refused before it is parsed."""
    UNKNOWN_TOPIC = "unknown_topic"
    """A message on a topic that is not part of the hall's layout."""
    BAD_HEADER = "bad_header"
    """A binary header that is truncated, of an unknown version, or holds a bad value."""
    SAMPLE_RATE_MISMATCH = "sample_rate_mismatch"
    """A window whose sample rate is not the one the serving model was trained for."""
    WINDOW_LENGTH_MISMATCH = "window_length_mismatch"
    """A window whose length is not the one the serving model was trained for."""
    UNIT_MISMATCH = "unit_mismatch"
    """A JSON window that says its unit, and it is not the one the serving model was trained on."""
    INTERNAL = "internal"
    """The pod failed while answering a window it could read (the detail names the failure; the
    pod's log has the rest). The window is acknowledged: the broker would only bring it back."""


Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
TimestampNs = Annotated[int, Field(ge=0, lt=I64_LIMIT)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0)]
ModelState = Literal["loading", "serving", "validating", "failed", "no_model"]
CandidateState = Literal["validating", "passed", "failed"]
Severity = Literal["warning", "critical"]


def _validation_error(exc: ValidationError) -> MessageError:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return MessageError(ErrorReason.NOT_JSON, "payload", first["msg"])
    if not first["loc"]:
        return MessageError(ErrorReason.NOT_JSON, "payload", "not a JSON object")
    field = ".".join(str(part) for part in first["loc"])
    return MessageError(ErrorReason.BAD_FIELD, field, first["msg"])


class JsonMessage(BaseModel):
    """Base of the outbound JSON messages: frozen, no unknown fields, no NaN, strict on decode."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_version: Literal[1] = Field(
        default=1, description="Version of this message's schema; bumped on breaking changes."
    )

    def encode(self) -> bytes:
        """Serialize to the UTF-8 JSON payload published on MQTT.

        ``model_dump_json().encode()`` byte for byte, straight from pydantic's serializer: without
        the str round trip and the wrapper's keyword handling (1.6 us a message, one per window).
        """
        payload: bytes = self.__pydantic_serializer__.to_json(self)
        return payload

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Parse a payload strictly (no "1" for 1); refusals raise `MessageError`."""
        try:
            return cls.model_validate_json(payload, strict=True)
        except ValidationError as exc:
            raise _validation_error(exc) from None


class Prediction(JsonMessage):
    """The model's answer for one raw window, on ``.../machines/{machine}/predictions``."""

    machine: Identifier = Field(description="Machine id, as in the raw topic.")
    timestamp_ns: TimestampNs = Field(description="Timestamp of the window, ns since the epoch.")
    model_id: str = Field(min_length=1, description="Id of the model that answered.")
    model_version: str = Field(min_length=1, description="Version of that model.")
    label: str = Field(min_length=1, description="Predicted class, a label of the model card.")
    confidence: Probability = Field(description="Probability of `label`, 0..1.")
    probabilities: dict[str, Probability] = Field(
        description="Probability of every class of the model card, by label."
    )
    latency_ms: float = Field(ge=0.0, description="From receipt of the window to this answer.")


class PredictionRow(NamedTuple):
    """A `Prediction` made of values already checked: serve's answer to each window, the same JSON.

    Serve builds one per window from what its own checks vouch for: the machine id of a
    known raw topic, the decoded timestamp, the card's id, version and (non-empty, unique)
    labels, probabilities clipped to 0..1 and checked finite for the whole batch. Validating
    each field again, in a `Prediction` object per window, cost 5 us of a flood's 160. `encode` gives
    `Prediction.encode`'s bytes (the same serializer; tests/core/test_messages.py compares
    them), and the fields are `Prediction`'s, in its order.
    """

    machine: str
    timestamp_ns: int
    model_id: str
    model_version: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    latency_ms: float

    def encode(self) -> bytes:
        """The UTF-8 JSON payload: `Prediction(**fields).encode()`, byte for byte.

        A NaN or infinity (which serve refuses before it builds a row) would be written as
        ``null``, as `JsonMessage` writes it, never as the ``NaN`` that JSON does not have.
        """
        payload: bytes = to_json({"schema_version": 1, **self._asdict()}, inf_nan_mode="null")
        return payload


class Alert(JsonMessage):
    """A sustained fault, on ``.../machines/{machine}/alerts``."""

    machine: Identifier = Field(description="Machine id, as in the raw topic.")
    timestamp_ns: TimestampNs = Field(description="Timestamp of the window that raised it.")
    model_id: str = Field(min_length=1, description="Id of the model that answered.")
    model_version: str = Field(min_length=1, description="Version of that model.")
    label: str = Field(min_length=1, description="The fault class, a label of the model card.")
    confidence: Probability = Field(description="Probability of `label` in its latest window of the run.")
    consecutive: int = Field(ge=1, description="Windows in a row above the alert threshold.")
    severity: Severity = Field(description="`warning` or `critical`, per the alert policy.")


MAX_ERROR_FIELD = 128
MAX_ERROR_DETAIL = 512
"""An error message quotes at most this much of the input: a 1 MB broken field must not come back as 2 MB."""


def _cut(text: str, limit: int) -> str:
    # A lone surrogate (a JSON key such as "scale\ud800") has no UTF-8: quoted by its escape instead.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} chars)"


class ErrorMessage(JsonMessage):
    """An input that could not be used, and why.

    Published on ``.../machines/{machine}/errors`` for a machine's raw topic,
    or on ``{prefix}/errors`` when the topic itself is unknown.
    """

    topic: str = Field(description="Topic the unusable input arrived on.")
    reason: ErrorReason = Field(description="Machine-readable reason, see `ErrorReason`.")
    field: str = Field(description="The part of the input that is wrong.")
    detail: str = Field(description="What is wrong with it, for a person.")
    machine: Identifier | None = Field(default=None, description="Machine id, when the topic names one.")
    received_ns: TimestampNs = Field(description="When the input arrived, ns since the epoch.")

    @classmethod
    def from_error(cls, err: MessageError, topic: str, machine: str | None, received_ns: int) -> Self:
        """Build the error message for a refused input.

        `err.reason` must be an `ErrorReason` value; anything else is a bug
        and raises `ValueError`.
        """
        return cls(
            topic=topic,
            reason=ErrorReason(err.reason),
            field=_cut(err.field, MAX_ERROR_FIELD),
            detail=_cut(err.detail, MAX_ERROR_DETAIL),
            machine=machine,
            received_ns=received_ns,
        )


class ModelStatus(JsonMessage):
    """What one serving pod runs, retained on ``{prefix}/nodes/{node}/status``."""

    node: Identifier = Field(description="Kubernetes node the serving pod runs on.")
    model_id: str | None = Field(default=None, min_length=1, description="Served model's id.")
    version: str | None = Field(default=None, min_length=1, description="Served version.")
    sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Digest of the served artifact."
    )
    state: ModelState = Field(
        description="`loading`, `serving`, `validating` (a candidate, while the last good "
        "version keeps serving), `failed` or `no_model`."
    )
    ready: bool = Field(description="Whether windows get predictions right now.")
    windows_total: Count = Field(description="Raw windows received since the pod started.")
    errors_total: Count = Field(description="Error messages published since the pod started.")
    drift: dict[str, float] = Field(
        default_factory=dict,
        description="Figures of the last drift evaluation, by name: `psi.`, `p.`, `ks.<feature>` against the "
        "training data, `class_psi` and `class_p` against the node's baseline, `class_psi_vs_training`, "
        "`flagged.<feature or classes>`, `baseline_windows` of `baseline_needed`, `threshold.*`.",
    )
    drifted: bool = Field(
        default=False, description="Whether the pod reports drift: flagged in enough evaluations in a row."
    )
    message: str = Field(default="", description="A short explanation of the state, for a person.")
    candidate_version: str | None = Field(
        default=None, description="Version of the last target the pod was asked to swap to."
    )
    candidate_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Digest of that target."
    )
    candidate_state: CandidateState | None = Field(
        default=None,
        description="`validating`, `passed` (now served) or `failed` (the last good version kept serving).",
    )
    candidate_report: CompactReport | None = Field(
        default=None, description="The validation report of that target, as the init container writes it."
    )
    updated_ns: TimestampNs = Field(description="When this status was produced, ns since the epoch.")
