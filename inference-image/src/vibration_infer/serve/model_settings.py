"""The model's fields of `ServeSettings`: which model serves, and how a new target is taken in.

Which model serves: the validate init container left the node's last good
version in the cache, and serve loads the last good version of the
VibrationModel its `target_file` names (or of `model_id`, when set) from
`cache_dir`. For local runs and tests, `artifact` and `card` name the files
directly instead.

The cache, accelerator, threshold and S3 fields share their names (and so
their environment variables) with `vibration_infer.settings.ValidateSettings`:
the init container and the serving container of a pod read one environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from vibration_infer.settings import Accelerator, EdgeTpuFallback


class ModelFields(BaseModel):
    """The model a pod starts with, the cache it comes from and the runtime that runs it."""

    cache_dir: Path = Field(
        default=Path("/var/cache/vibration-edge"), description="Node-local model cache (a hostPath volume)."
    )
    cache_keep: int = Field(default=3, ge=1, description="Digests kept per model id in the cache.")
    model_id: str | None = Field(
        default=None, description="Serve the last good version of this model id from the cache."
    )
    artifact: Path | None = Field(
        default=None, description="Serve this artifact directly (local runs, tests); needs `card`."
    )
    card: Path | None = Field(default=None, description="The model card of `artifact`.")
    accelerator: Accelerator = Field(default="cpu", description="cpu, or coral for the Edge TPU delegate.")
    edgetpu_fallback: EdgeTpuFallback = Field(
        default="cpu",
        description="Edge TPU wanted but missing: cpu = LiteRT on the CPU (logged), fail = refuse.",
    )
    threads: int = Field(default=1, ge=1, description="Threads per runtime (intra-op).")


class SwapFields(BaseModel):
    """The hot swap's: the target file, and how a target is fetched and what it must pass."""

    target_file: Path | None = Field(
        default=Path("/etc/vibration-edge/target/target.json"),
        description="The operator's target model (a projected ConfigMap); polled, swapped in when valid.",
    )
    target_poll_s: float = Field(default=1.0, gt=0, description="Seconds between looks at `target_file`.")
    fetch_retry_s: float = Field(
        default=30.0, gt=0, description="Seconds before a target that could not be fetched is tried again."
    )
    test_data: Path | None = Field(
        default=None, description="Node-local test data a new target is validated on before it serves."
    )
    min_accuracy: float | None = Field(
        default=None, ge=0, le=1, description="Default lowest accuracy of a target; unset: not checked."
    )
    min_macro_f1: float | None = Field(
        default=None, ge=0, le=1, description="Default lowest macro F1 of a target; unset: the default floor."
    )
    min_class_recall: dict[str, float] = Field(
        default_factory=dict, description="Default lowest recall per class label of a target."
    )
    max_p99_ms: float | None = Field(
        default=None, gt=0, description="Default highest p99 latency per window of a target (ms)."
    )
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint for targets on s3://.")
    s3_region: str | None = Field(default=None, description="S3 region; asked from the endpoint when unset.")
    s3_access_key_file: Path | None = Field(default=None, description="File holding the S3 access key.")
    s3_secret_key_file: Path | None = Field(default=None, description="File holding the S3 secret key.")
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Connect timeout of a target download, s."
    )
    read_timeout_s: float = Field(default=30.0, gt=0, description="Read timeout of a target download, s.")
    retries: int = Field(default=3, ge=0, le=10, description="Retries of a target download.")
