"""The operator's tests read their settings from what they build, never from the developer's shell."""

from __future__ import annotations

import os

import pytest

# OperatorSettings reads VIBRATION_OPERATOR_* and POD_NAMESPACE, and test modules build theirs at
# import (the golden pods'): an exported image or namespace would change every golden pod. Gone
# before any test module is imported, and again around each test.
for _name in [n for n in os.environ if n.startswith("VIBRATION_OPERATOR_") or n == "POD_NAMESPACE"]:
    del os.environ[_name]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VIBRATION_") or name == "POD_NAMESPACE":
            monkeypatch.delenv(name)
