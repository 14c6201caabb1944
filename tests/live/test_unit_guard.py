"""tests/unit/conftest.py's guard: a unit test that starts a process or opens a socket fails, whichever way it tries.

A copy of the guard runs a small folder of unit tests in a pytest of its own (a
process, so this test lives here): each tries one way out, one swallows the
failure with `except Exception`, one does it in a fixture, and one stays inside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

GUARD = Path(__file__).resolve().parents[1] / "unit" / "conftest.py"

TESTS = textwrap.dedent(
    """
    import multiprocessing
    import os
    import socket
    import subprocess

    import pytest


    def test_a_socket():
        socket.create_connection(("127.0.0.1", 9))


    def test_a_socketpair():
        socket.socketpair()


    def test_subprocess_run():
        subprocess.run(["true"])


    def test_a_fork():
        pid = os.fork()
        if pid == 0:
            os._exit(0)


    def test_os_system():
        os.system("true")


    def test_multiprocessing_spawn():
        process = multiprocessing.get_context("spawn").Process(target=print)
        process.start()


    def test_a_swallowed_refusal():
        try:
            subprocess.check_output(["true"])
        except Exception:
            pass


    @pytest.fixture
    def server():
        with socket.socket() as listener:
            yield listener


    def test_a_fixture_that_opens_a_socket(server):
        pass


    def test_one_that_stays_inside(tmp_path):
        (tmp_path / "file").write_text("no process, no socket")
        assert os.getpid() > 0
    """
)

CAUGHT = {
    "test_a_socket": "opened a socket",
    "test_a_socketpair": "opened a socket",
    "test_subprocess_run": "started a process (subprocess)",
    "test_a_fork": "forked (os.fork)",
    "test_os_system": "started a shell (os.system)",
    "test_multiprocessing_spawn": "started a process (fork_exec)",
    "test_a_swallowed_refusal": "started a process (subprocess)",
    "test_a_fixture_that_opens_a_socket": "opened a socket",
}


def test_the_guard_fails_each_way_out_and_passes_a_test_that_stays_inside(tmp_path):
    unit = tmp_path / "unit"
    unit.mkdir()
    shutil.copy(GUARD, unit / "conftest.py")
    (unit / "test_ways_out.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # this folder's own rootdir, not the project's settings
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfE", "-q", "unit"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},  # the summary lines whole, messages and all
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    failed = {line.split("::")[1].split(" ")[0] for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))}
    assert failed == set(CAUGHT), output
    for test, what in CAUGHT.items():
        summary = next(line for line in output.splitlines() if f"::{test} " in line)
        assert f"this unit test {what}" in summary and "move this test to tests/live/" in summary, summary
    assert f"{len(CAUGHT) - 1} failed, 1 passed, 1 error" in output, output
