"""The suite tests the Python it was asked to: the servers it starts run the test runner's interpreter.

`FITFLIX_PYTHON=python3.13 bash scripts/test` runs pytest on 3.13; if a server were
started from another venv (a hard-coded `.venv/bin/gunicorn`, a bare `python3` that
pyenv answers), the live tests would quietly test that Python instead."""

from __future__ import annotations

import os
import platform
import sys


def interpreter_of(pid: int) -> str:
    """The interpreter binary a process runs, links resolved (`/proc/PID/exe`)."""
    return os.path.realpath(f"/proc/{pid}/exe")


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
