"""One shape for every benchmark figure, printed and kept for `docs/benchmarks.md`.

Each bench script (`bench.py`, `bench_serve.py`, `bench_operator.py`) ends a
section with `record`: the section is printed to the terminal and written
as JSON to `build/bench/<key>.json`. `bench_report.py` turns the sections of
one `make bench` run into the benchmark page, with the machine they ran on.

A figure carries its target (from the issue that named it) and the
reference design (`reference_design.py`) measured in the same run, or the reason there is none.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("VIBRATION_BENCH_DIR", ROOT / "build" / "bench"))


@dataclass(frozen=True)
class Figure:
    """One measured figure, its target and its baseline, as text a person reads."""

    name: str
    value: str
    target: str = ""
    baseline: str = ""
    met: bool | None = None
    """Whether the value meets the target; None when there is no target."""


@dataclass(frozen=True)
class Section:
    """The figures of one benchmark, with the command that reproduces them."""

    key: str
    title: str
    command: str
    figures: list[Figure]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The section as terminal lines."""
        width = max(len(f.name) for f in self.figures)
        out = [f"## {self.title}"]
        for f in self.figures:
            verdict = {True: "met", False: "MISSED", None: ""}[f.met]
            target = f"   target {f.target} {verdict}" if f.target else ""
            baseline = f"   baseline {f.baseline}" if f.baseline else ""
            out.append(f"  {f.name:<{width}}  {f.value}{target}{baseline}")
        out.extend(f"  note: {note}" for note in self.notes)
        return out


def record(section: Section, results: Path = RESULTS) -> Path:
    """Print `section` and store it for the report; return the JSON file written."""
    print("\n".join(section.lines()), flush=True)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{section.key}.json"
    path.write_text(json.dumps(asdict(section), indent=2) + "\n")
    return path


def load(path: Path) -> Section:
    """A section stored by `record`."""
    data = json.loads(path.read_text())
    figures = [Figure(**f) for f in data.pop("figures")]
    return Section(figures=figures, **data)
