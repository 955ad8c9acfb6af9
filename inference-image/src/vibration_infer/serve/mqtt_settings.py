"""The MQTT link's fields of `ServeSettings`: broker, credentials, session, topics, the node's name.

MQTT credentials come as values or, from a mounted Secret, through the
``*_file`` fields, read at each (re)connect so a rotated Secret is picked
up; they are `SecretStr`, so no repr or log line shows them.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator

from vibration_core.errors import MessageError
from vibration_core.messages import ID_PATTERN
from vibration_core.topics import check_prefix, check_share_group
from vibration_infer.errors import UsageError
from vibration_infer.settings import namespace_field

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_U32_MAX = 0xFFFFFFFF


def _hostname() -> str:
    return socket.gethostname().split(".")[0] or "node"


class MqttFields(BaseModel):
    """How the pod reaches the broker, which session it keeps and which topics it uses."""

    mqtt_client: Literal["wire", "paho"] = Field(
        default="wire",
        description="MQTT client of the serving loop: wire (the project's MQTT 5 client, one write per "
        "batch: several times less CPU per window) or paho (paho-mqtt v2).",
    )
    mqtt_url: str = Field(
        default="mqtt://localhost:1883",
        description="Broker: mqtt://host[:1883] or mqtts://host[:8883] (TLS).",
    )
    mqtt_username: str | None = Field(default=None, description="MQTT user name.")
    mqtt_password: SecretStr | None = Field(default=None, description="MQTT password.")
    mqtt_username_file: Path | None = Field(
        default=None, description="File holding the MQTT user name (a mounted Secret); wins over the value."
    )
    mqtt_password_file: Path | None = Field(
        default=None, description="File holding the MQTT password (a mounted Secret); wins over the value."
    )
    mqtt_ca_file: Path | None = Field(
        default=None, description="CA bundle for mqtts:// with a private CA; the system store otherwise."
    )
    client_id: str | None = Field(
        default=None,
        description="Stable MQTT client id of the persistent session; vibration-infer-{node} by default.",
    )
    topic_prefix: str = Field(
        default="factory/hall-a",
        description="The hall's topic prefix (publish and the docs use the same default).",
    )
    mqtt_share_group: str | None = Field(
        default=None,
        description="MQTT 5 shared subscription: the pods of one group share the hall's windows, each "
        "window goes to one of them ($share/GROUP/PREFIX/machines/+/raw; the operator sets the "
        "VibrationModel's name). 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', '-'. Unset: this pod "
        "reads every window.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive, seconds.")
    session_expiry_s: int = Field(
        default=3600,
        ge=0,
        le=_U32_MAX,
        description="How long the broker keeps the session (and queues QoS 1 windows) while the pod is away; "
        f"{_U32_MAX} (MQTT's largest): never expires.",
    )
    receive_maximum: int = Field(
        default=1024,
        ge=1,
        le=65535,
        description="Unacknowledged windows the broker may have in flight to this pod; bounds its memory.",
    )
    max_inflight: int = Field(
        default=20,
        ge=1,
        le=65535,
        description="Answers published at QoS 1 and not yet acknowledged, at most. The wire client also "
        "keeps below the broker's Receive Maximum by itself; with paho keep it at or below that "
        "(Mosquitto: max_inflight_messages, 20 by default).",
    )
    reconnect_min_s: int = Field(default=1, ge=1, description="First reconnect delay, seconds; doubles.")
    reconnect_max_s: int = Field(default=30, ge=1, description="Longest reconnect delay, seconds.")
    predictions_qos: int = Field(
        default=1,
        ge=0,
        le=1,
        description="QoS of predictions, alerts and errors: 1, at least once (every answer carries its "
        "window's key, so a subscriber drops a transport copy by it), or 0. QoS 2 is not offered: its "
        "exactly-once lasts only as long as the pod's process, and a restarted pod cannot release the "
        "half-done flows its persistent session left at the broker.",
    )
    node_name: str = Field(
        default_factory=_hostname,
        pattern=ID_PATTERN,
        validation_alias=AliasChoices("node_name", "VIBRATION_NODE_NAME", "NODE_NAME"),
        description="The node this pod runs on (downward API); names the status topic.",
    )
    namespace: str | None = namespace_field()

    @field_validator("mqtt_share_group")
    @classmethod
    def _check_share_group(cls, group: str | None) -> str | None:
        return None if group is None else _checked(check_share_group, group)

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        return _checked(check_prefix, prefix)  # a usage error (exit 2), not a crash once serving starts

    @property
    def mqtt_host(self) -> str:
        """Host of `mqtt_url`."""
        return urlsplit(self.mqtt_url).hostname or "localhost"

    @property
    def mqtt_port(self) -> int:
        """Port of `mqtt_url`, 1883 (mqtt) or 8883 (mqtts) by default."""
        parts = urlsplit(self.mqtt_url)
        return parts.port or DEFAULT_PORTS[parts.scheme]

    @property
    def mqtt_tls(self) -> bool:
        """Whether `mqtt_url` asks for TLS."""
        return urlsplit(self.mqtt_url).scheme == "mqtts"

    @property
    def effective_client_id(self) -> str:
        """The MQTT client id: `client_id`, or vibration-infer-{node}."""
        return self.client_id or f"vibration-infer-{self.node_name}"

    def mqtt_credentials(self) -> tuple[str | None, str | None]:
        """User name and password, read from their files when those are set."""
        return (
            _read_secret(self.mqtt_username_file) or self.mqtt_username,
            _read_secret(self.mqtt_password_file)
            or (self.mqtt_password.get_secret_value() if self.mqtt_password else None),
        )


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        # The message names the file, never its content.
        raise UsageError(f"cannot read secret file {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise UsageError(f"secret file {path} is not UTF-8 text") from None


def _checked(check: Callable[[str], str], value: str) -> str:
    """`check(value)`; a `MessageError` as a ValueError of its detail (reason and field are pydantic's)."""
    try:
        return check(value)
    except MessageError as exc:
        raise ValueError(exc.detail) from None
