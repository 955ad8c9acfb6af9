"""Fixtures any test folder may use (real Mosquitto brokers), and the markers they bring with them.

A test that asks for a fixture named in `MARKS` gets that marker at
collection. `make test-fast` deselects the integration, slow and e2e markers,
so a test that starts a broker never slips into the fast lane because its
author forgot a marker, and a new test file is in the fast lane unless it
needs something slow: the lane is chosen by what a test needs, not by where
it lives.

The e2e tests run last, in their own order. Where a cluster is still being
set up as the run starts (`.ci/run` starts it beside `make check` and the
other tests), ``VIBRATION_E2E_CLUSTER_STATUS`` names a file its set-up
writes when it is done: ``ready``, or ``failed`` and why. The first e2e test
waits for it; a failed set-up fails the e2e tests with its words.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from vibration_testkit import cluster_status
from vibration_testkit.mosquitto import Mosquitto, require_mosquitto

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MARKS = {"broker": "integration", "make_broker": "integration"}
"""Fixture name -> the marker every test using it (directly or through another fixture) gets."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the slow fixtures it uses, and move the e2e tests to the end.

    ``fixturenames`` includes the fixtures a test reaches indirectly. The sort is stable: the
    e2e tests keep their order among themselves (a story's steps are numbered), as do the rest.
    A module- or package-scoped fixture that e2e and other tests of one module share would be
    set up twice: e2e tests live in modules of their own, or use no such fixture.
    """
    for item in items:
        for name in sorted(MARKS.keys() & set(getattr(item, "fixturenames", ()))):
            item.add_marker(MARKS[name])
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


_cluster: dict[str, str] = {}
"""The cluster set-up's word, once read."""


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Before the first e2e test, wait for the cluster a CI run is still setting up (`cluster_status.ENV`).

    Here, outside the test's set-up, so the wait does not count against the test's timeout.
    """
    path = os.environ.get(cluster_status.ENV)
    wanted = path and os.environ.get("KUBECONFIG") and item.get_closest_marker("e2e") is not None
    if wanted and "status" not in _cluster:
        reporter = item.config.pluginmanager.get_plugin("terminalreporter")
        say = reporter.write_line if reporter is not None else print
        pid = os.environ.get(cluster_status.PID_ENV, "")
        found = cluster_status.read_status(Path(str(path)), say=say, pid=int(pid) if pid.isdigit() else None)
        _cluster["status"] = found
    yield


def pytest_runtest_setup(item: pytest.Item) -> None:
    """An e2e test fails, with the set-up's words, when the cluster it waited for did not come up."""
    status = _cluster.get("status", cluster_status.READY)
    if item.get_closest_marker("e2e") is not None and status != cluster_status.READY:
        pytest.fail(f"the cluster for the e2e tests did not come up: {status}", pytrace=False)


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
