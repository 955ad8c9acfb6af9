"""Settings of ``vibration-infer serve``: one typed object, built once in `run`.

Every field reads ``VIBRATION_<FIELD>`` from the environment (the node name
also plain ``NODE_NAME``, as the downward API sets it). Each field carries
the description its flag's help and the chart's documentation come from.

The fields stand in three modules by concern: `mqtt_settings` (the MQTT
link), `model_settings` (the model and its hot swap) and `loop_settings`
(batching, alerts, drift, HTTP and status). They are mixins of one flat
class, not nested models: the flags and environment names are generated
from the flat fields (``--mqtt-url``, ``VIBRATION_MQTT_URL``), which a
nested model would turn into ``VIBRATION_MQTT__URL``. What this module
keeps is the checks that span the groups.
"""

from __future__ import annotations

from typing import Self
from urllib.parse import urlsplit

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vibration_infer.serve.loop_settings import LoopFields
from vibration_infer.serve.model_settings import ModelFields, SwapFields
from vibration_infer.serve.mqtt_settings import DEFAULT_PORTS, MqttFields


# pydantic lists the fields of the last base first: the bases stand in reverse, so that the
# flags (and `--help`) keep their order, MQTT first and the hot swap last.
class ServeSettings(SwapFields, LoopFields, ModelFields, MqttFields, BaseSettings):
    """Broker, model, batching, alert, drift, HTTP and hot-swap settings of one serving pod."""

    model_config = SettingsConfigDict(
        env_prefix="VIBRATION_", extra="forbid", frozen=True, populate_by_name=True
    )

    # One validator for all the groups: its checks run in this order, so the first error a
    # pod reports (exit 2) does not depend on how the fields are split.
    @model_validator(mode="after")
    def _check(self) -> Self:
        parts = urlsplit(self.mqtt_url)
        if parts.username is not None or parts.password is not None:
            # It would be logged and shown on /status, and never used: credentials come from files.
            msg = "mqtt_url must not carry a user or password: set mqtt_username_file and mqtt_password_file"
            raise ValueError(msg)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            msg = f"mqtt_url must be mqtt://host[:port] or mqtts://host[:port], got {self.mqtt_url!r}"
            raise ValueError(msg)
        if (self.artifact is None) != (self.card is None):
            msg = "artifact and card go together: set both or neither"
            raise ValueError(msg)
        if self.artifact is None and self.model_id is None and self.target_file is None:
            msg = "set target_file, model_id (serve the cache's last good version) or artifact and card"
            raise ValueError(msg)
        if self.reconnect_max_s < self.reconnect_min_s:
            msg = "reconnect_max_s must be >= reconnect_min_s"
            raise ValueError(msg)
        return self
