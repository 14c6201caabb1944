"""The package, installed: a wheel built from this checkout, in a fresh venv, serving an app from elsewhere.

The wheel is built from a copy of what it needs (pyproject.toml, README.md, fitflix/), so the
checkout is never written to; it installs into a new venv with its dependencies from PyPI (or
pip's cache), once for the module. gunicorn then runs from that venv in a folder outside the
checkout, with nothing of the checkout on sys.path, as `-c python:fitflix.gunicorn_conf`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.server import PROJECT, server_env
from harness.wait import poll_until

PACKAGE_CONFIG = "python:fitflix.gunicorn_conf"
OUTSIDE_APP = '''\
"""An app that is not in the FitFlix repository: a bare WSGI callable behind fitflix.wrap."""

import fitflix


def hello(environ, start_response):
    body = fitflix.__file__.encode() if environ["PATH_INFO"] == "/where" else b"hello from outside"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


application = fitflix.wrap(hello)
'''
NO_DRAIN = {"DRAIN_S": "0"}


def run(*command: str, cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the python of a fresh venv it is installed in)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, source / name)
    shutil.copytree(PROJECT / "fitflix", source / "fitflix", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path_factory.mktemp("wheels")
    built = run(sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(wheels), cwd=source)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("fitflix-*.whl")

    venv = tmp_path_factory.mktemp("venv")
    made = run(sys.executable, "-m", "venv", str(venv), cwd=venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    install = run(str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(wheel), cwd=venv)
    if install.returncode != 0 and "NewConnectionError" in install.stdout + install.stderr:
        pytest.skip(f"PyPI cannot be reached for the wheel's dependencies: {install.stderr[-300:]}")
    assert install.returncode == 0, install.stdout + install.stderr
    return wheel, python


@pytest.fixture
def outside(tmp_path) -> Path:
    """A project folder of someone else's: their app, and whatever .env the test gives it."""
    folder = tmp_path / "their-project"
    folder.mkdir()
    (folder / "outside_app.py").write_text(OUTSIDE_APP)
    assert PROJECT not in folder.parents
    return folder


def test_the_wheel_holds_the_package_and_nothing_else_of_the_repository(installed):
    wheel, _python = installed
    names = zipfile.ZipFile(wheel).namelist()

    assert {"fitflix/gunicorn_conf.py", "fitflix/web/wrapper.py", "fitflix/serving/hooks.py"} <= set(names)
    top = {name.split("/")[0] for name in names if not name.startswith("fitflix-")}
    assert top == {"fitflix"}, top  # no tests/, bench/, harness/, wsgi.py or gunicorn.conf.py


def test_gunicorn_from_the_venv_serves_an_app_from_elsewhere_with_the_packages_config(installed, outside, live_server):
    _wheel, python = installed
    (outside / ".env").write_text("MAX_MEMORY_MB=300\n")  # the working folder's .env
    server = live_server(
        NO_DRAIN, python=str(python), project=outside, config=PACKAGE_CONFIG, app="outside_app:application"
    )

    status, health = server.get_json("/health")
    assert status == 200 and health["service"] == "fitflix-backend"
    assert server.get_json("/health/memory")[1]["memory"]["limit"] == 300
    assert server.request("GET", "/")[2] == b"hello from outside"
    where = Path(server.request("GET", "/where")[2].decode())
    assert python.parents[1] in where.parents and PROJECT not in where.parents, where
    assert "FitFlix Backend Server running on port" in server.log()  # the hooks ran


def test_a_config_of_ones_own_starts_from_the_packages_and_overrides_it(installed, outside, live_server):
    _wheel, python = installed
    (outside / "own.conf.py").write_text("from fitflix.gunicorn_conf import *  # noqa: F403\n\nthreads = 2\n")
    server = live_server(
        NO_DRAIN,
        python=str(python),
        project=outside,
        config=str(outside / "own.conf.py"),
        app="outside_app:application",
    )

    assert server.get_json("/health/memory")[1]["clustering"]["threads"] == 2
    assert "FitFlix Backend Server running on port" in server.log()


def test_sighup_reads_the_working_folders_env_again_under_the_packages_config(installed, outside, live_server):
    _wheel, python = installed
    dotenv = outside / ".env"
    dotenv.write_text("THREADS=4\n")
    server = live_server(
        NO_DRAIN, python=str(python), project=outside, config=PACKAGE_CONFIG, app="outside_app:application"
    )
    assert server.get_json("/health/memory")[1]["clustering"]["threads"] == 4

    dotenv.write_text("THREADS=2\n")
    os.kill(server.master_pid, signal.SIGHUP)

    poll_until(lambda: "SIGHUP: THREADS 4 -> 2" in server.log(), 15, "the change logged")
    poll_until(lambda: server.get_json("/health/memory")[1]["clustering"]["threads"] == 2, 20, "a worker with 2")


def test_the_plan_cli_of_the_installed_package_loads_the_app_it_is_given(installed, outside):
    _wheel, python = installed
    result = subprocess.run(
        [str(python), "-m", "fitflix", "plan", "outside_app:application"],
        cwd=outside,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "worker baseline" in result.stdout
