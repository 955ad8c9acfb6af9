"""The INT8 model after conversion: measured in LiteRT as serving runs it, compiled for the Edge TPU.

`run_int8` feeds the model as the serving backend does (the card's input
transform, then the input tensor's quantization) and reports the tensors as
LiteRT sees them, for the card. `compile_for_edgetpu` runs
``edgetpu_compiler`` when it is on PATH; without it the CPU INT8 model is the
artifact and the note says so.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from vibration_core.modelcard_parts import TensorSpec
from vibration_train.errors import ExportError

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

    from vibration_core.modelcard_parts import InputTransform
    from vibration_train.edgetpu import EdgeTpuConfig

logger = logging.getLogger(__name__)

INT8_FILENAME: Final = "model_int8.tflite"
EDGETPU_FILENAME: Final = "model_edgetpu.tflite"
COMPILER: Final = "edgetpu_compiler"


def run_int8(
    model: bytes, features: npt.NDArray[np.float32], transform: InputTransform
) -> tuple[npt.NDArray[np.float32], TensorSpec, TensorSpec]:
    """Run an INT8 model in LiteRT row by row; return probabilities and the tensors as LiteRT reports them.

    As the serving backend does: the extractor's `features` go through
    `transform` (the card's), are quantized with the input tensor's scale and
    zero point, and the outputs are dequantized.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - optional at import time
    except ImportError as exc:
        raise ExportError("tflite", "LiteRT (ai-edge-litert) is needed to measure the INT8 model") from exc
    try:
        interpreter = Interpreter(model_content=model, num_threads=1)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ExportError("tflite", f"LiteRT refused the INT8 model: {exc}") from exc
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    info = np.iinfo(inp["dtype"])
    scaled = transform.apply(features) / np.float32(in_scale)
    quantized = np.clip(np.rint(scaled) + in_zero, info.min, info.max)
    quantized = quantized.astype(inp["dtype"])
    raw = np.empty((features.shape[0], int(out["shape"][-1])), dtype=np.float32)
    for row in range(features.shape[0]):  # the Edge TPU graph has a fixed batch of 1
        interpreter.set_tensor(inp["index"], quantized[row : row + 1])
        interpreter.invoke()
        raw[row] = interpreter.get_tensor(out["index"])[0]
    probabilities = (raw - np.float32(out_zero)) * np.float32(out_scale)
    return probabilities, _spec(inp), _spec(out)


def compile_for_edgetpu(model: bytes, work_dir: Path, config: EdgeTpuConfig) -> tuple[bytes | None, str]:
    """Compile with ``edgetpu_compiler`` when it is on PATH; return the bytes (None without it) and a note."""
    compiler = shutil.which(config.compiler)
    if compiler is None:
        note = (
            f"{config.compiler} not found: wrote the CPU INT8 model ({INT8_FILENAME}); "
            "the Edge TPU compile was skipped"
        )
        logger.warning(
            "edgetpu_compile_skipped", extra={"reason": "compiler_not_found", "compiler": config.compiler}
        )
        return None, note
    source = work_dir / INT8_FILENAME
    source.write_bytes(model)
    command = [compiler, "--out_dir", str(work_dir), str(source)]
    try:
        done = subprocess.run(  # noqa: S603 - a fixed argument list, the compiler found on PATH
            command, capture_output=True, text=True, timeout=config.compiler_timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ExportError("edgetpu", f"{compiler} did not finish within {exc.timeout:g} s") from exc
    except OSError as exc:
        raise ExportError("edgetpu", f"{compiler} could not be started: {exc}") from exc
    compiled = work_dir / f"{source.stem}_edgetpu.tflite"
    if done.returncode != 0 or not compiled.is_file():
        tail = " ".join((done.stdout + done.stderr).split())[-300:]
        raise ExportError("edgetpu", f"{compiler} exited with {done.returncode}: {tail}")
    mapped = [line.strip() for line in done.stdout.splitlines() if "Number of operations" in line]
    logger.info("edgetpu_compiled", extra={"compiler": compiler, "ops": ";".join(mapped)})
    note = f"{config.compiler}: wrote {EDGETPU_FILENAME}" + (f" ({'; '.join(mapped)})" if mapped else "")
    return compiled.read_bytes(), note


def _spec(details: dict[str, Any]) -> TensorSpec:
    shape = details.get("shape_signature", details["shape"])
    return TensorSpec(
        name=str(details["name"]),
        shape=tuple(None if int(size) < 0 else int(size) for size in shape),
        dtype=np.dtype(details["dtype"]).name,
    )
