"""A target validated inside the serving pod: the init container's validation, from serve's settings.

This is `vibration_infer.validate.run_validation`, the very code of the
init container, with a `ValidateSettings` built from the pod's own
`ServeSettings` and the target's thresholds; the model it returns is the
session that passed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from vibration_core.validation import ExitCode
from vibration_infer.settings import ValidateSettings
from vibration_infer.validate import Outcome, run_validation

if TYPE_CHECKING:
    import threading

    from vibration_core.target import ModelTarget
    from vibration_infer.cache import ModelCache
    from vibration_infer.loader import LoadedModel
    from vibration_infer.serve.settings import ServeSettings


def validate_target(
    settings: ServeSettings,
    target: ModelTarget,
    cache: ModelCache,
    serving: LoadedModel | None = None,
    *,
    defer_promotion: bool = False,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Run the init container's validation for `target` in this process; never raises for a bad target.

    `serving`, the model answering now, is the champion when the target names it: it is evaluated
    beside the candidate on the same windows, in the same runtime, without a second load.
    """
    if settings.test_data is None:
        return Outcome(
            code=ExitCode.USAGE, reason="no node-local test data (test_data) to validate a target on"
        )
    try:
        base = ValidateSettings(
            model_uri=target.model_uri,
            s3_endpoint=settings.s3_endpoint,
            s3_region=settings.s3_region,
            s3_access_key_file=settings.s3_access_key_file,
            s3_secret_key_file=settings.s3_secret_key_file,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            retries=settings.retries,
            cache_dir=settings.cache_dir,
            cache_keep=settings.cache_keep,
            test_data=settings.test_data,
            threads=settings.threads,
            accelerator=settings.accelerator,
            edgetpu_fallback=settings.edgetpu_fallback,
            min_accuracy=settings.min_accuracy,
            min_macro_f1=settings.min_macro_f1,
            min_class_recall=settings.min_class_recall,
            max_p99_ms=settings.max_p99_ms,
            node_name=settings.node_name,
            namespace=settings.namespace,
        )
        vsettings = base.for_target(target)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "target"
        return Outcome(code=ExitCode.USAGE, reason=f"{where}: {first['msg']}", node=settings.node_name)
    return run_validation(
        vsettings, cache=cache, serving=serving, defer_promotion=defer_promotion, cancel=cancel
    )
