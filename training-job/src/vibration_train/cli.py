"""The `vibration-train` command: simulate data, fit and export a model.

`simulate` writes labelled raw windows from the core simulator; `fit` turns a
training table into ``DIR/model.onnx`` and ``DIR/modelcard.json`` through the
library steps (load, fit, report, export, parity, card, write), each behind a
progress display on stderr, the report and the parity line on stdout. The
`import` of a model trained elsewhere is mounted from `cli_import`, the
registry's `publish` and `list` from `cli_registry`.

Exit codes of `fit`: 0 written; 1 export or output failure; 2 bad input data
or arguments; 3 the ONNX model disagrees with scikit-learn. Nothing is
written to ``--out`` unless every step passed.
"""

# No `from __future__ import annotations`: Typer reads the parameter annotations at run time.
import dataclasses
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final

import numpy as np
import typer
from rich.progress import Progress

from vibration_core import dataset
from vibration_core.errors import SimulationParameterError
from vibration_core.logs import setup_logging
from vibration_core.units import Unit, factor
from vibration_train import cli_import, cli_registry
from vibration_train.card import build_card, write_model
from vibration_train.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    UNITS,
    ModelId,
    OutDir,
    SampleRate,
    UnitChoice,
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
from vibration_train.data import TrainingTable, load_table
from vibration_train.edgetpu import EdgeTpuConfig, EdgeTpuResult, fit_edgetpu
from vibration_train.errors import FitConfigError, ParityError, TrainingDataError, TrainingError
from vibration_train.fit import FitConfig, fit
from vibration_train.fit_labels import name_classes
from vibration_train.onnx_export import check_parity, to_onnx
from vibration_train.report import format_held_out, format_report
from vibration_train.simulator import CLASSES, UNIT, simulate

EXIT_PARITY: Final = 3
FIT_ERRORS: Final = (
    (TrainingDataError, EXIT_BAD_INPUT),
    (ParityError, EXIT_PARITY),
    (TrainingError, EXIT_FAILED),
)
"""`fit`'s exit code for each error it turns into one, the first type that matches."""

app = typer.Typer(
    name="vibration-train",
    help="Train, export and publish vibration classifiers.",
    no_args_is_help=True,
    add_completion=False,
    # Locals in a traceback could hold registry credentials.
    pretty_exceptions_show_locals=False,
)


class OutputFormat(StrEnum):
    """Artifact formats `fit` can produce."""

    ONNX = "onnx"
    EDGETPU = "edgetpu"


class LogFormat(StrEnum):
    """How log events are written to stderr."""

    TEXT = "text"
    JSON = "json"


@app.callback()
def main(
    log_level: Annotated[str, typer.Option(help="Level of the log events on stderr.")] = "WARNING",
    log_format: Annotated[
        LogFormat, typer.Option(help="key=value lines (text) locally, one JSON object per line in a cluster.")
    ] = LogFormat.TEXT,
) -> None:
    """Train, export and publish vibration classifiers."""
    setup_logging(log_level.upper(), log_format.value, replace=False)


@app.command("simulate")
def simulate_command(  # noqa: PLR0917 - Typer passes every option as a parameter
    windows: Annotated[int, typer.Option(min=1, help="Number of windows.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Parquet file to write.", show_default=False)],
    seed: Annotated[int, typer.Option(help="Seed: same arguments, same bytes.")] = 0,
    sample_rate: Annotated[float, typer.Option(help="Sample rate, Hz.")] = 25600.0,
    window_length: Annotated[int, typer.Option(help="Samples per window.")] = 4096,
    machines: Annotated[int, typer.Option(min=1, help="Machines the windows are spread over.")] = 8,
    classes: Annotated[
        str | None,
        typer.Option(help="Comma-separated classes to simulate, in equal shares (default: all four)."),
    ] = None,
    unit: Annotated[
        UnitChoice, typer.Option(help="Unit of the samples written (the simulator works in g).")
    ] = UnitChoice.G,
) -> None:
    """Simulate labelled raw windows of four machine states into a parquet file."""
    # A subset is what a node's test set looks like when its machines never showed a class.
    shares = None if classes is None else dict.fromkeys((c.strip() for c in classes.split(",")), 1.0)
    if shares is not None and (unknown := sorted(set(shares) - set(CLASSES))):
        fail(EXIT_BAD_INPUT, f"--classes: unknown {unknown}; known: {', '.join(CLASSES)}")
    with progress_display() as progress:
        try:
            with step(progress, f"simulating {windows} windows"):
                data = simulate(
                    windows,
                    seed=seed,
                    sample_rate=sample_rate,
                    window_length=window_length,
                    machines=machines,
                    class_shares=shares,
                )
                if UNITS[unit] != UNIT:
                    scaled = data.windows * np.float32(factor(UNIT, UNITS[unit]))
                    data = dataclasses.replace(data, windows=scaled)
        except SimulationParameterError as exc:
            fail(EXIT_BAD_INPUT, str(exc))
        try:
            with step(progress, f"writing {out}"):
                dataset.write_parquet(data, out, unit=UNITS[unit])
        except OSError as exc:
            fail(EXIT_FAILED, f"cannot write {out}: {exc.strerror or exc}")
    counts = ", ".join(f"{label} {int((data.labels == label).sum())}" for label in sorted(set(data.labels)))
    typer.echo(f"wrote {len(data)} windows ({counts}) at {data.sample_rate:g} Hz in {unit.value} to {out}")


@app.command("fit")
def fit_command(  # noqa: PLR0917 - Typer passes every option as a parameter
    data: Annotated[Path, typer.Option(help="Parquet of raw windows or of features.", show_default=False)],
    out: OutDir,
    version: Version = "v1",
    model_id: ModelId = "spindle-classifier",
    n_estimators: Annotated[int, typer.Option(min=1, help="Boosting stages.")] = FitConfig.n_estimators,
    max_depth: Annotated[int, typer.Option(min=1, help="Depth of each tree.")] = FitConfig.max_depth,
    learning_rate: Annotated[float, typer.Option(help="Shrinkage, > 0.")] = FitConfig.learning_rate,
    random_state: Annotated[
        int, typer.Option(help="Seed of the split and the trees.")
    ] = FitConfig.random_state,
    sample_rate: SampleRate = None,
    window_length: WindowLength = None,
    unit: UnitFlag = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="Artifact format.")
    ] = OutputFormat.ONNX,
    labels: Annotated[
        str | None,
        typer.Option(
            help="Class names, comma-separated, for a table labelled with integers (the reference "
            "pipeline's 0..3): the i-th name for the i-th smallest integer.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Fit a classifier on --data, check its ONNX form, write OUT/model.onnx and OUT/modelcard.json."""
    check_names(model_id, version)
    if out.exists() and not out.is_dir():
        fail(EXIT_BAD_INPUT, f"--out {out} exists and is not a directory")
    names = None if labels is None else tuple(name.strip() for name in labels.split(","))
    source = _Source(data, sample_rate, window_length, unit_of(unit), names)
    if output_format is OutputFormat.EDGETPU:
        # Keras MLP -> full-integer INT8 TFLite (compiled when edgetpu_compiler is on PATH),
        # sharing load_table and the split; the boosting options do not apply to it.
        with exit_codes(*FIT_ERRORS):
            edgetpu = _run_edgetpu(source, out, EdgeTpuConfig(random_state=random_state), model_id, version)
        typer.echo(edgetpu.report(), nl=False)
        return
    config = _fit_config(n_estimators, max_depth, learning_rate, random_state)
    with exit_codes(*FIT_ERRORS):
        _run_fit(source, out, config, model_id=model_id, version=version)


@dataclasses.dataclass(frozen=True)
class _Source:
    """The --data file and the flags that say how to read it."""

    path: Path
    sample_rate: float | None
    window_length: int | None
    unit: Unit | None
    labels: tuple[str, ...] | None = None

    def load(
        self, progress: Progress, timings: dict[str, float] | None = None, name: str = ""
    ) -> TrainingTable:
        """The training table, loaded behind a progress step, its integer classes named (`fit_labels`)."""
        with step(progress, f"loading {self.path.name}", timings, name) as advance:
            table = load_table(
                self.path,
                sample_rate=self.sample_rate,
                window_length=self.window_length,
                unit=self.unit,
                on_progress=advance,
            )
        table, read_as = name_classes(table, self.labels)
        if read_as:
            typer.echo(f"labels {', '.join(read_as)} read as {', '.join(read_as.values())}", err=True)
        return table


def _fit_config(n_estimators: int, max_depth: int, learning_rate: float, random_state: int) -> FitConfig:
    try:
        return FitConfig(
            n_estimators=n_estimators,
            max_depth=max_depth,
            learning_rate=learning_rate,
            random_state=random_state,
        )
    except FitConfigError as exc:
        fail(EXIT_BAD_INPUT, f"--{exc.parameter.replace('_', '-')} {exc.detail}")


def _run_edgetpu(
    source: _Source, out: Path, config: EdgeTpuConfig, model_id: str, version: str
) -> EdgeTpuResult:
    with progress_display() as progress:
        table = source.load(progress)
        return fit_edgetpu(
            table,
            out,
            config,
            model_id=model_id,
            version=version,
            step=lambda description: step(progress, description),
        )


def _run_fit(source: _Source, out: Path, config: FitConfig, *, model_id: str, version: str) -> None:
    timings: dict[str, float] = {}
    with progress_display() as progress:
        table = source.load(progress, timings, "load")
        with step(progress, f"fitting {config.n_estimators} stages", timings, "fit") as advance:
            result = fit(table, config, on_stage=advance)
        with step(progress, "exporting to ONNX", timings, "export"):
            model = to_onnx(result.estimator, table.features.shape[1])
        with step(progress, f"checking parity on {result.y_test.size} windows", timings, "parity"):
            parity = check_parity(result.estimator, model, result.x_test)
        card = build_card(
            table=table, result=result, config=config, model=model, model_id=model_id, version=version
        )
        started = time.perf_counter()
        artifact_path, card_path = write_model(out, model.data, card)
        timings["write"] = time.perf_counter() - started
    if table.timestamps_ns is None:
        typer.echo(
            f"warning: {source.path} has no timestamp column; the card's training date range is the file's "
            "modification time",
            err=True,
        )
    typer.echo(
        f"{table.labels.size} windows at {table.sample_rate:g} Hz x {table.window_length} in {table.unit}: "
        f"{result.y_train.size} train, {result.y_test.size} test"
    )
    typer.echo(format_held_out(result.metrics.held_out, result.split.reason), nl=False)
    typer.echo(format_report(result.metrics, result.labels), nl=False)
    typer.echo(f"parity: {parity.summary()}")
    typer.echo(f"wrote {artifact_path} (sha256 {card.artifact.sha256}) and {card_path}")
    typer.echo("time: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in timings.items()))


cli_import.register(app)
cli_registry.register(app)
