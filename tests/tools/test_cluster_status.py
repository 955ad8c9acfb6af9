"""The e2e tests' wait for a cluster that `.ci/run` sets up beside the other tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from vibration_testkit.cluster_status import ENV, PID_ENV, READY, read_status, running

ROOT = Path(__file__).resolve().parents[2]


def test_the_wait_ends_when_the_set_up_writes_its_word(tmp_path: Path) -> None:
    status = tmp_path / "status"
    heard: list[str] = []
    writer = threading.Timer(0.3, lambda: status.write_text("ready\n"))
    writer.start()
    try:
        assert read_status(status, timeout_s=30, say=heard.append) == READY
    finally:
        writer.cancel()
    assert heard[0] == f"e2e: waiting for the cluster's set-up to finish ({status})"
    assert heard[1].startswith("e2e: the cluster's set-up says 'ready' after ")


def test_a_failed_set_up_is_read_whole_and_a_missing_word_is_named(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(
        "failed (exit 2) after 40 s; the last lines of build/ci-cluster.log:\nimages.sh: no space\n"
    )
    said = read_status(status, timeout_s=1, say=lambda _: None)
    assert said.startswith("failed (exit 2)")
    assert said.endswith("images.sh: no space")
    missing = tmp_path / "never"
    assert read_status(missing, timeout_s=0.2, say=lambda _: None) == (
        f"no word from its set-up in 0.2 s ({missing} does not exist)"
    )
    (tmp_path / "empty").write_text("")
    assert (
        read_status(tmp_path / "empty", timeout_s=1, say=lambda _: None) == f"{tmp_path / 'empty'} is empty"
    )


def test_a_set_up_gone_without_a_word_ends_the_wait_and_one_still_running_is_waited_for(
    tmp_path: Path,
) -> None:
    status = tmp_path / "status"
    # Killed, as by the OOM killer: no word will come, and the wait says so at once, not in an hour.
    killed = subprocess.Popen(["sleep", "60"])
    killed.kill()
    killed.wait()
    said = read_status(status, timeout_s=30, say=lambda _: None, pid=killed.pid)
    assert said == f"its set-up (pid {killed.pid}) ended without a word ({status} does not exist): killed?"
    # Still at work: its word is waited for.
    with subprocess.Popen(["sleep", "60"]) as working:
        writer = threading.Timer(0.5, lambda: status.write_text("ready\n"))
        writer.start()
        try:
            assert read_status(status, timeout_s=30, say=lambda _: None, pid=working.pid) == READY
        finally:
            writer.cancel()
            working.kill()


def test_a_process_that_exited_and_was_not_reaped_yet_is_not_running() -> None:
    with subprocess.Popen(["sleep", "60"]) as child:
        assert running(child.pid)
        child.kill()
        deadline = 50
        while running(child.pid) and deadline:  # a zombie until wait(): exited all the same
            threading.Event().wait(0.1)
            deadline -= 1
        assert not running(child.pid)
        child.wait()
    assert running(os.getpid())


SUITE = """
import pytest

@pytest.mark.e2e
def test_story_step_1(): pass

def test_plain(): pass

@pytest.mark.e2e
def test_story_step_2(): pass
"""


def _pytest(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A pytest of its own on `SUITE`, with the project's tests/conftest.py as a plugin."""
    (tmp_path / "test_suite.py").write_text(SUITE)
    argv = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
            "-o", "addopts=", "-o", "markers=e2e", "-o", "asyncio_default_fixture_loop_scope=function",
            "--rootdir", str(tmp_path), *args, str(tmp_path / "test_suite.py")]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if k not in {ENV, PID_ENV, "KUBECONFIG"}}
    return subprocess.run(argv, cwd=tmp_path, env={**clean, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip


def _order(output: str) -> list[str]:
    return [line.split("::")[1].split()[0] for line in output.splitlines() if "test_suite.py::" in line]


def test_the_e2e_tests_run_last_in_their_own_order(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "--collect-only", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _order(done.stdout) == ["test_plain", "test_story_step_1", "test_story_step_2"]


def test_the_e2e_tests_wait_for_the_set_up_and_fail_with_its_words(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(
        "failed (exit 1) after 9 s; the last lines of build/ci-cluster.log:\nup.sh: etcd refused\n"
    )
    done = _pytest(tmp_path, "-v", **{ENV: str(status), "KUBECONFIG": str(tmp_path / "kubeconfig")})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "test_suite.py::test_plain PASSED" in done.stdout
    assert "test_suite.py::test_story_step_1 ERROR" in done.stdout
    assert "test_suite.py::test_story_step_2 ERROR" in done.stdout
    assert "the cluster for the e2e tests did not come up: failed (exit 1)" in done.stdout
    assert "up.sh: etcd refused" in done.stdout
    assert "e2e: the cluster's set-up says 'failed (exit 1)" in done.stdout

    status.write_text("ready\n")
    done = _pytest(tmp_path, "-v", **{ENV: str(status), "KUBECONFIG": str(tmp_path / "kubeconfig")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert _order(done.stdout) == ["test_plain", "test_story_step_1", "test_story_step_2"]

    # A set-up killed before its word: the e2e tests fail at once, naming it.
    status.unlink()
    gone = subprocess.Popen(["true"])
    gone.wait()
    env = {ENV: str(status), PID_ENV: str(gone.pid), "KUBECONFIG": str(tmp_path / "kubeconfig")}
    done = _pytest(tmp_path, "-v", **env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"did not come up: its set-up (pid {gone.pid}) ended without a word" in done.stdout
