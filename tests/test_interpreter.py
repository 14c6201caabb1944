"""The suite tests the Python it was asked to: the servers it starts run the test runner's interpreter.

`FITFLIX_PYTHON=python3.13 bash scripts/test` runs pytest on 3.13; if a server were
started from another venv (a hard-coded `.venv/bin/gunicorn`, a bare `python3` that
pyenv answers), the live tests would quietly test that Python instead.
"""

from __future__ import annotations

import os
import platform
import sys

import pytest

# Set by scripts/test: the X.Y the run was asked for (3.11 by default, FITFLIX_PYTHON's otherwise).
EXPECTED_PYTHON = os.environ.get("FITFLIX_EXPECT_PYTHON")


def interpreter_of(pid: int) -> str:
    """The interpreter binary a process runs, links resolved (`/proc/PID/exe`)."""
    return os.path.realpath(f"/proc/{pid}/exe")


@pytest.mark.skipif(EXPECTED_PYTHON is None, reason="run by scripts/test, which says which Python it meant")
def test_the_suite_runs_the_python_scripts_test_asked_for():
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == EXPECTED_PYTHON, (
        f"scripts/test set the run up for Python {EXPECTED_PYTHON}, but pytest runs {platform.python_version()} "
        f"({sys.executable})"
    )


@pytest.mark.live
def test_the_live_server_runs_the_test_runners_interpreter(live_server):
    server = live_server()
    runner = os.path.realpath(sys.executable)
    workers = server.worker_pids()
    assert workers, "the server has no worker"
    for pid in (server.master_pid, *workers):
        assert interpreter_of(pid) == runner, (
            f"gunicorn process {pid} runs {interpreter_of(pid)}, the tests run Python {platform.python_version()} "
            f"({runner})"
        )
