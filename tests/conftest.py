"""Fixtures any test folder may use (real Mosquitto brokers), and the markers they bring with them.

A test that asks for a fixture named in `MARKS` gets that marker at
collection. `make test-fast` deselects the integration, slow and e2e markers,
so a test that starts a broker never slips into the fast lane because its
author forgot a marker, and a new test file is in the fast lane unless it
needs something slow: the lane is chosen by what a test needs, not by where
it lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vibration_testkit.mosquitto import Mosquitto, require_mosquitto

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

MARKS = {"broker": "integration", "make_broker": "integration"}
"""Fixture name -> the marker every test using it (directly or through another fixture) gets."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the slow fixtures it uses (``fixturenames`` includes those it reaches indirectly)."""
    for item in items:
        for name in sorted(MARKS.keys() & set(getattr(item, "fixturenames", ()))):
            item.add_marker(MARKS[name])


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start real brokers on free loopback ports (skips without mosquitto); all stopped afterwards.

    ``make_broker(*extra_config_lines, auth=(passwordfile, aclfile))``; see `Mosquitto`.
    """
    binary = require_mosquitto()
    started: list[Mosquitto] = []

    def make(*extra: str, auth: tuple[Path, Path] | None = None) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"broker-{len(started)}", binary=binary, auth=auth, extra=extra)
        started.append(broker)  # before start: a broker that fails half-way is stopped too
        broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Mosquitto]) -> Mosquitto:
    """One started broker with anonymous access, stopped after the test."""
    return make_broker()
