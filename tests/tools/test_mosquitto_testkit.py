"""The test kit's broker: it starts on a port it holds itself, never on another listener's."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

from vibration_testkit import mosquitto as kit
from vibration_testkit.mosquitto import Mosquitto, require_mosquitto
from vibration_testkit.net import free_port

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def test_a_port_taken_before_the_broker_binds_it_is_given_up_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # free_port releases the port before the broker binds it; another run's broker may take it
    # meanwhile. A probe connection would then reach that listener and the tests the wrong broker.
    require_mosquitto()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        handed = iter([port])
        monkeypatch.setattr(kit, "free_port", lambda: next(handed, None) or free_port())
        broker = Mosquitto(tmp_path)
        with broker:
            assert broker.port != port
            assert broker.running
            with socket.create_connection((broker.host, broker.port), timeout=2):
                pass
