"""A real Mosquitto broker for tests: Debian's ``/usr/sbin/mosquitto`` on a free loopback port.

`Mosquitto` writes a config into a temporary directory and runs the broker
in the foreground as a child process:

- ``listener PORT 127.0.0.1``: loopback only, on a port asked from the kernel;
- ``allow_anonymous true``: tests only; the chart's broker refuses anonymous clients
  (with `auth`, a password file and an ACL file, this one does too);
- ``set_tcp_nodelay true``: without it a 16 KB message waits for Nagle (about 6 ms);
- persistence in the temporary directory, so a QoS 1 persistent session and
  its queued messages survive `restart` (the broker writes its database on a
  clean stop; no periodic autosave, which rewrites the whole database and
  stalls the broker for as long as that takes under a flood of messages);
- no per-client queue or in-flight limit: a test that floods thousands of
  QoS 1 windows must not lose any to the broker's default cap of 1000.

`require_mosquitto` is the one place that skips a test when the broker (or
``mosquitto_passwd``) is not installed; the fixtures in ``tests/conftest.py``
call it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

import pytest

from vibration_testkit.net import free_port
from vibration_testkit.processes import stop as stop_process

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

MOSQUITTO = Path("/usr/sbin/mosquitto")
START_TIMEOUT_S = 10.0
_START_ATTEMPTS = 3


def mosquitto_path(program: str = "mosquitto") -> Path | None:
    """A program of Mosquitto's (the broker, ``mosquitto_passwd``): Debian's, else one on PATH, else None."""
    for debian in (MOSQUITTO.parent / program, Path("/usr/bin") / program):
        if debian.exists():
            return debian
    found = shutil.which(program)
    return Path(found) if found else None


class Mosquitto:
    """One broker process with a generated config; `start`, `stop`, `restart`."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        binary: Path | None = None,
        auth: tuple[Path, Path] | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        """`auth`: a (passwordfile, aclfile) pair; then anonymous clients are refused.

        `extra`: config lines appended last (a repeated option's last value wins; listener
        options such as ``certfile`` apply to the one listener).
        """
        self.binary = binary or mosquitto_path() or MOSQUITTO
        self.workdir = workdir
        self.port = port or free_port()
        self._chose_port = port is None
        self.host = "127.0.0.1"
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    *(
                        [f"password_file {auth[0]}", f"acl_file {auth[1]}", "allow_anonymous false"]
                        if auth
                        else ["allow_anonymous true"]
                    ),
                    # As root the broker would switch to the user "mosquitto", which cannot
                    # write to a test's temporary directory; as anyone else this is ignored.
                    f"user {pwd.getpwuid(os.geteuid()).pw_name}",
                    "set_tcp_nodelay true",
                    "persistence true",
                    f"persistence_location {workdir / 'data'}/",
                    "max_queued_messages 0",
                    "max_inflight_messages 0",
                    "max_keepalive 65535",
                    f"log_dest file {self.log}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    *extra,
                    "",
                ]
            ),
            encoding="utf-8",
        )

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections, itself.

        A port from `free_port` may be taken again before the broker binds it (another test
        run's broker, say): a connection would then reach the other listener. The broker's
        own log must show the probe's connection; otherwise, on a port it chose, it tries
        another.
        """
        if self.running:
            return
        for _ in range(_START_ATTEMPTS):
            if self._start_once():
                return
            if not self._chose_port:
                break
            old, self.port = self.port, free_port()
            self.config.write_text(
                self.config.read_text().replace(f"listener {old} ", f"listener {self.port} ", 1)
            )
        raise RuntimeError(f"mosquitto could not listen on port {self.port} (taken by another listener)")

    def _start_once(self) -> bool:
        """Start the process; whether it listens on `port` itself (False: another listener has it)."""
        offset = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the log
        process = self._process = subprocess.Popen(
            [str(self.binary), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                if "Address already in use" in err + log:
                    self.stop()
                    return False
                raise RuntimeError(f"mosquitto exited with {process.returncode}: {err} {log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2) as probe,
            ):
                said = f"New connection from 127.0.0.1:{probe.getsockname()[1]} on port {self.port}."
                until = time.monotonic() + 2.0
                while time.monotonic() < until:
                    if self.log.exists() and said in self.log.read_bytes()[offset:].decode(errors="replace"):
                        return True
                    time.sleep(0.02)
                self.stop()
                return False
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {START_TIMEOUT_S} s")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker: SIGTERM (it saves its database) or, with `kill`, SIGKILL."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process, timeout_s=10, kill=kill)
        if process.stderr is not None:
            process.stderr.close()

    def restart(self, *, down_s: float = 0.0, kill: bool = False) -> None:
        """Stop, stay down `down_s` seconds, start again on the same port with the same data."""
        self.stop(kill=kill)
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def require_mosquitto(program: str = "mosquitto") -> Path:
    """`program` (the broker by default), or skip the test saying how to install it."""
    found = mosquitto_path(program)
    if found is None:
        pytest.skip(f"{program} is not installed: run tools/ensure-test-deps.sh (make test does)")
    return found
