"""`make demo`, the newcomer's first command: its whole story runs and each step says what it found.

The script itself, on fewer simulated windows than the demo's default (the steps are the same;
the demo runs on 4000). Its steps check their own outcomes (a refused v3, zero lost windows in the
hot swap) and exit 1 naming the step that did not behave: a demo that broke unnoticed would be a
newcomer's first sight of the project.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vibration_testkit.mosquitto import require_mosquitto

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "demo.py"


@pytest.mark.slow
@pytest.mark.integration
def test_the_demo_tells_its_whole_story(tmp_path: Path) -> None:
    require_mosquitto()  # the demo starts its own embedded broker
    out = tmp_path / "demo-output"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--windows", "1500", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.split("=== Summary", 1)[1]
    for found in (
        "1500 training windows",
        "v1 published",
        "passed on edge-1",
        "refused: below threshold",
        "v2 and v3 published",
        "hot-swapped with zero lost windows",
        "v3 refused: below threshold",
    ):
        assert found in summary, summary
    assert (out / "v1" / "vibrationmodel.yaml").is_file()
