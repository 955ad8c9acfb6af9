"""What the `vibration-train` commands share: exit codes, the unit flag, names, progress, failing.

`cli` (simulate, fit), `cli_import` (import) and `cli_registry` (publish, list) use these; each command
stays a thin layer that parses flags and calls one library function.
"""

# No `from __future__ import annotations`: Typer reads the option annotations at run time.
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from vibration_core.modelcard import ModelCard
from vibration_core.units import Unit

EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2

logger = logging.getLogger(__name__)


class UnitChoice(StrEnum):
    """The units a flag accepts (`vibration_core.units.Unit`)."""

    G = "g"
    M_S2 = "m/s^2"


UNITS: Final[dict[UnitChoice, Unit]] = {UnitChoice.G: "g", UnitChoice.M_S2: "m/s^2"}


OutDir = Annotated[Path, typer.Option(help="Directory for the artifact and the card.", show_default=False)]
Version = Annotated[str, typer.Option(help="Model version.")]
ModelId = Annotated[str, typer.Option(help="Model id (a DNS label).")]
SampleRate = Annotated[
    float | None, typer.Option(help="Sample rate, Hz, of a features table's windows.", show_default=False)
]
WindowLength = Annotated[
    int | None, typer.Option(min=2, help="Samples per window of a features table.", show_default=False)
]
UnitFlag = Annotated[
    UnitChoice | None,
    typer.Option(
        help="Unit of the samples, when the file does not declare it (schema metadata vibration.unit).",
        show_default=False,
    ),
]
"""The options `fit` and `import` share; the defaults stay in each command's signature."""


def unit_of(choice: UnitChoice | None) -> Unit | None:
    """The unit a ``--unit`` flag names, None when it was not given."""
    return None if choice is None else UNITS[choice]


def check_names(model_id: str, version: str) -> None:
    """Refuse a ``--model-id`` or ``--version`` the card's own patterns would refuse."""
    # Checked before a minute of work rather than after.
    properties = ModelCard.model_json_schema()["properties"]
    for flag, value, key in (("--model-id", model_id, "model_id"), ("--version", version, "version")):
        rule = properties[key]
        if not re.search(rule["pattern"], value) or len(value) > rule.get("maxLength", len(value)):
            limit = f" (at most {rule['maxLength']} characters)" if "maxLength" in rule else ""
            fail(EXIT_BAD_INPUT, f"{flag} {value!r} must match {rule['pattern']}{limit}")


@contextmanager
def progress_display() -> Iterator[Progress]:
    """A progress display on stderr (stdout is for the report)."""
    console = Console(stderr=True)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        yield progress


@contextmanager
def step(
    progress: Progress,
    description: str,
    timings: dict[str, float] | None = None,
    name: str = "",
) -> Iterator[Callable[[int, int], None]]:
    """Show one step; yield `advance(done, total)` for steps that can count their work."""
    task: TaskID = progress.add_task(description, total=None)
    counted = 0

    def advance(done: int, total: int) -> None:
        nonlocal counted
        counted = total
        progress.update(task, completed=done, total=total)

    started = time.perf_counter()
    yield advance
    seconds = time.perf_counter() - started
    if timings is not None:
        timings[name] = seconds
    logger.info("step_done", extra={"step": name or description, "seconds": round(seconds, 2)})
    # A step that never counted shows as one unit of work, done.
    progress.update(task, total=counted or 1, completed=counted or 1)
    progress.stop_task(task)


def fail(code: int, message: str) -> NoReturn:
    """Print ``error: <message>`` on one line of stderr and exit with `code`."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


@contextmanager
def exit_codes(*codes: tuple[type[Exception], int]) -> Iterator[None]:
    """A command's boundary: an error of a listed type (the first match) is `fail(code, str(error))`."""
    try:
        yield
    except tuple(error for error, _ in codes) as exc:
        fail(next(code for error, code in codes if isinstance(exc, error)), str(exc))
