"""tests/unit/ starts no process and opens no socket, so the whole folder runs in well under a minute.

While a unit test's setup, call and teardown run (its fixtures included), every way this
interpreter starts a process (subprocess, fork, posix_spawn, os.system, multiprocessing) or
opens a socket fails the test with what it tried and where the test belongs: tests/live/.
The guard fails the test with pytest's own outcome, which `except Exception` does not
swallow. tests/live/test_unit_guard.py shows each way caught.
"""

from __future__ import annotations

import _posixsubprocess
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

MOVE_IT = "tests/unit/ runs no process and opens no socket: move this test to tests/live/"

# (owner, attribute, what a test that calls it does). subprocess.Popen._execute_child is where every
# Popen (run, check_output, asyncio's) starts its child, by fork_exec or posix_spawn alike;
# multiprocessing's spawn and forkserver call _posixsubprocess.fork_exec, its fork start method os.fork.
GUARDED: tuple[tuple[object, str, str], ...] = (
    (subprocess.Popen, "_execute_child", "started a process (subprocess)"),
    (_posixsubprocess, "fork_exec", "started a process (fork_exec)"),
    (os, "fork", "forked (os.fork)"),
    (os, "forkpty", "forked (os.forkpty)"),
    (os, "posix_spawn", "started a process (os.posix_spawn)"),
    (os, "posix_spawnp", "started a process (os.posix_spawnp)"),
    (os, "system", "started a shell (os.system)"),
    (socket.socket, "__init__", "opened a socket"),
)


def refusal(what: str) -> Callable[..., None]:
    def refuse(*_args, **_kwargs) -> None:
        pytest.fail(f"this unit test {what}; {MOVE_IT}", pytrace=True)

    return refuse


def guarded() -> ExitStack:
    """Every entry of GUARDED replaced by a refusal until the stack closes."""
    stack = ExitStack()
    for owner, name, what in GUARDED:
        if hasattr(owner, name):  # os.forkpty and posix_spawn are not on every platform
            original = getattr(owner, name)
            setattr(owner, name, refusal(what))
            stack.callback(setattr, owner, name, original)
    return stack


def pytest_collection_finish(session) -> None:
    """Load matplotlib before the first test when a collected test draws (its module imports bench.plots).

    On its first import on a machine, matplotlib lists the fonts by running fc-list and caches the list
    (~/.cache/matplotlib, or MPLCONFIGDIR): that is a process, and inside a test the guard would fail it.
    Loaded here, outside every test, it happens once before the run, as on every later import.
    """
    plots = sys.modules.get("bench.plots")
    if plots is not None:
        plots._pyplot()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item) -> Iterator[None]:
    with guarded():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item) -> Iterator[None]:
    with guarded():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem) -> Iterator[None]:
    with guarded():
        return (yield)
