"""The test tree holds tests and fixtures only: every helper lives in vibration_testkit.

ruff bans importing ``tests`` or ``conftest``; this keeps a helper module from
appearing in tests/ where only a bare-name import (``from helm import ...``)
could reach it.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ALLOWED = {"conftest.py", "__init__.py"}


def test_the_test_tree_holds_test_modules_and_conftest_files_only() -> None:
    python_files = list(TESTS.rglob("*.py"))
    stray = sorted(
        str(path.relative_to(TESTS))
        for path in python_files
        if not path.name.startswith("test_") and path.name not in ALLOWED
    )
    assert python_files  # the glob found the tree
    assert stray == [], f"helpers belong in testkit/src/vibration_testkit: {stray}"
