"""Settings of the operator: one typed object, built once in ``__main__`` and passed down.

Every field reads ``VIBRATION_OPERATOR_<FIELD>`` from the environment (the
chart sets them); the operator's own namespace comes from the downward API
as plain ``POD_NAMESPACE``. Nothing here is read at import time, and the
builders take the object as an argument, so tests build it with keywords.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_QUANTITY = r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+|[KMGTPE]i?|[munkMGTPE])?$"


def _quantity_text(value: object) -> object:
    """A number as a quantity's text: the chart's values say `cpu: 2`, which reaches here as JSON's 2."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Quantities = dict[str, Annotated[str, BeforeValidator(_quantity_text), Field(pattern=_QUANTITY)]]


def _default_requests() -> dict[str, str]:
    return {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "64Mi"}


def _default_limits() -> dict[str, str]:
    return {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "256Mi"}


class OperatorSettings(BaseSettings):
    """Where the operator watches, and how it builds the serving pods."""

    model_config = SettingsConfigDict(
        env_prefix="VIBRATION_OPERATOR_", extra="forbid", frozen=True, populate_by_name=True
    )

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch, comma-separated; empty: the operator's own namespace.",
    )
    cluster_wide: bool = Field(
        default=False,
        description="Watch every namespace (needs the chart's ClusterRole); wins over namespaces.",
    )
    pod_namespace: str | None = Field(
        default=None,
        validation_alias=AliasChoices("pod_namespace", "VIBRATION_OPERATOR_POD_NAMESPACE", "POD_NAMESPACE"),
        description="The operator's own namespace, from the downward API (POD_NAMESPACE).",
    )
    inference_image: str = Field(
        default="ghcr.io/vibration-edge/vibration-infer:0.1.0",
        min_length=1,
        description="Image of the serving pods (vibration-infer validate and serve) on CPU nodes.",
    )
    edgetpu_image: str = Field(
        default="ghcr.io/vibration-edge/vibration-infer:0.1.0-edgetpu",
        min_length=1,
        description="The inference image's variant with libedgetpu, used when the accelerator is coral.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent",
        description="Pull policy of the serving pods; IfNotPresent keeps a rebooted gateway offline-capable.",
    )
    coral_resource_name: str = Field(
        default="squat.ai/coral",
        pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9_.-]+$",
        description="Extended resource of the Edge TPU device plugin (the generic device plugin's style).",
    )
    cache_host_path: str = Field(
        default="/var/lib/vibration-edge/cache",
        pattern=r"^/.+",
        description="Node-local model cache (hostPath); the last good model survives reboots here.",
    )
    registry_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://.+",
        description="S3 endpoint for s3:// artifacts whose spec names none, e.g. http://minio.minio:9000.",
    )
    serving_requests: Quantities = Field(
        default_factory=_default_requests, description="Resource requests of each serving container (JSON)."
    )
    serving_limits: Quantities = Field(
        default_factory=_default_limits, description="Resource limits of each serving container (JSON)."
    )
    status_poll_interval_s: float = Field(
        default=10.0, gt=0, description="Seconds between reads of the serving pods' /status during rollouts."
    )
    drift_interval_s: float = Field(
        default=60.0, gt=0, description="Seconds between drift checks of a VibrationModel's serving pods."
    )
    timer_steps: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Timer steps (rollout ticks, drift checks) run at once; a change never waits for them.",
    )
    http_port: int = Field(
        default=8080, ge=1, le=65535, description="Port of the serving pods' /healthz, /readyz and /status."
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Log lines as JSON (in a cluster) or key=value text; also for pods."
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # "hall-a, hall-b" reads better in a values file than a JSON list.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def watched_namespaces(self) -> list[str] | None:
        """The namespaces to watch; None means cluster-wide."""
        if self.cluster_wide:
            return None
        if self.namespaces:
            return list(self.namespaces)
        if self.pod_namespace:
            return [self.pod_namespace]
        msg = "set namespaces, cluster_wide, or POD_NAMESPACE (downward API)"
        raise ValueError(msg)
