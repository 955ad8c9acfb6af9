"""The `import` command of `vibration-train`, registered on its Typer app.

``vibration-train import MODEL.onnx --labels a,b,c,d --data labelled.parquet
--out DIR`` brings a classifier trained elsewhere (the reference pipeline's,
for one) under the model contract: `vibration_train.importer` checks its
graph and its outputs against the labels, measures it on the data and writes
``DIR/model.onnx`` (the same bytes) and ``DIR/modelcard.json``, ready for
`publish`.

Exit codes: 0 written; 1 output failure; 2 bad data or arguments; 3 the
model refused (its input or outputs, or --labels against its classes or
against the data's labels).
Nothing is written to ``--out`` unless every check passed.
"""

# No `from __future__ import annotations`: Typer reads the parameter annotations at run time.
from pathlib import Path
from typing import Annotated, Final

import typer

from vibration_train.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    ModelId,
    OutDir,
    SampleRate,
    UnitFlag,
    Version,
    WindowLength,
    check_names,
    exit_codes,
    fail,
    progress_display,
    step,
    unit_of,
)
from vibration_train.errors import ModelImportError, TrainingDataError, TrainingError
from vibration_train.importer import import_model

EXIT_MODEL: Final = 3


def register(app: typer.Typer) -> None:
    """Add the `import` command to `app`."""
    app.command("import")(import_command)


def import_command(  # noqa: PLR0917 - Typer passes every option as a parameter
    model: Annotated[Path, typer.Argument(help="The ONNX classifier to import.", show_default=False)],
    labels: Annotated[
        str,
        typer.Option(
            help="Class names, comma-separated, in the order of the model's probability columns "
            "(scikit-learn's classes_ order): the i-th names the model's i-th class, and data labelled "
            "with the model's integer classes is read with these names.",
            show_default=False,
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="Labelled parquet (raw windows or features) the model is measured on.", show_default=False
        ),
    ],
    out: OutDir,
    version: Version = "v1",
    model_id: ModelId = "spindle-classifier",
    sample_rate: SampleRate = None,
    window_length: WindowLength = None,
    unit: UnitFlag = None,
) -> None:
    """Import an ONNX classifier trained elsewhere: check it, measure it on --data, write it and its card."""
    check_names(model_id, version)
    if not model.is_file():
        fail(EXIT_BAD_INPUT, f"model {model}: no such file")
    if out.exists() and not out.is_dir():
        fail(EXIT_BAD_INPUT, f"--out {out} exists and is not a directory")
    errors = (
        (ModelImportError, EXIT_MODEL),
        (TrainingDataError, EXIT_BAD_INPUT),
        (TrainingError, EXIT_FAILED),
    )
    with exit_codes(*errors), progress_display() as progress:
        result = import_model(
            model,
            labels.split(","),
            data,
            out,
            model_id=model_id,
            version=version,
            sample_rate=sample_rate,
            window_length=window_length,
            unit=unit_of(unit),
            step=lambda description: step(progress, description),
        )
    typer.echo(result.report(), nl=False)
