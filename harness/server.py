"""Real gunicorn, started with the project's gunicorn.conf.py, for live tests and benchmarks.

Binds 127.0.0.1:0, reads the real port from gunicorn's `Listening at:` line,
polls readiness against a deadline, and stops by pid: SIGTERM, wait, SIGKILL.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from harness.pipe import LogPipe, end
from harness.wait import Timeout, poll_until

PROJECT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+) \((\d+)\)")

# The environment a test server starts from: only what the test chooses, so a
# developer's .env or shell never changes a test's outcome.
BASE_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def server_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: os.environ[key] for key in BASE_ENV_KEEP if key in os.environ}
    env.update({"HOST": "127.0.0.1", "PORT": "0", "PYTHONUNBUFFERED": "1"})
    env.update(overrides or {})
    return env


class LiveServer:
    def __init__(
        self,
        env: dict[str, str] | None = None,
        app: str | None = None,
        cgroup=None,
        extra_args: tuple[str, ...] = (),
        python: str = sys.executable,
        project: Path = PROJECT,
        prefix: tuple[str, ...] = (),
        ready_path: str = "/health",
        config: str | None = None,
    ) -> None:
        """`project`: the folder with gunicorn.conf.py (a `project_copy` for a test's own .env), and the
        server's working folder.

        `config`: what `-c` gets in place of the project's gunicorn.conf.py (`python:fitflix.gunicorn_conf`).

        `prefix`: a command that runs gunicorn in place of itself (`exec`), such as
        `harness.noproc.NO_PROC`: the pid started is still gunicorn's master.
        `ready_path`: the first 200 there means the server is up (an app without /health has another).
        """
        self.env = server_env(env)
        self.prefix = prefix
        self.project = project
        self.app = app
        self.cgroup = cgroup
        self.extra_args = extra_args
        self.python = python
        self.ready_path = ready_path
        self.config = config
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.master_pid: int | None = None
        self._log: LogPipe | None = None  # never a file: see harness/pipe.py

    def server_command(self) -> list[str]:
        """gunicorn with the project's gunicorn.conf.py (the benchmarks' peers start other servers).

        The `gunicorn` command, as the Procfile has it: under `python -m gunicorn` a SIGUSR2
        upgrade re-executes gunicorn/__main__.py as a script, whose folder then shadows the
        standard library's `http` and the new master dies on its first import of http.server.
        """
        script = Path(self.python).with_name("gunicorn")
        launcher = [str(script)] if script.exists() else [self.python, "-m", "gunicorn"]
        config = self.config or str(self.project / "gunicorn.conf.py")
        command = [*launcher, "-c", config, *self.extra_args]
        return command + [self.app] if self.app else command

    def command(self) -> list[str]:
        command = [*self.prefix, *self.server_command()]
        return self.cgroup.wrap(command) if self.cgroup is not None else command

    def start(self, ready_timeout_s: float = 30.0) -> LiveServer:
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.project,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._log = LogPipe(self.process, "live-server-log")
        try:
            self.find_port(ready_timeout_s)
            poll_until(self._answers, ready_timeout_s, f"the first 200 from {self.ready_path}")
        except Timeout as error:
            self.stop()
            raise Timeout(f"{error}\n--- server log ---\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self._log.text() if self._log is not None else ""

    def find_port(self, timeout_s: float) -> None:
        """The port and master pid from gunicorn's `Listening at:` line."""
        match = poll_until(self._listening, timeout_s, "gunicorn's 'Listening at' line")
        self.port, self.master_pid = int(match.group(1)), int(match.group(2))

    def ensure_running(self) -> None:
        if self.process.poll() is not None:
            raise Timeout(f"the server exited with code {self.process.returncode}")

    def _listening(self):
        self.ensure_running()
        return LISTENING.search(self.log())

    def _answers(self) -> bool:
        self.ensure_running()
        try:
            return self.request("GET", self.ready_path, timeout_s=2)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def request(
        self, method: str, path: str, headers: dict | None = None, body: bytes | None = None, timeout_s: float = 10
    ):
        """(status, headers, body bytes) from one request on a fresh connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def get_json(self, path: str, timeout_s: float = 10):
        status, _headers, body = self.request("GET", path, timeout_s=timeout_s)
        return status, json.loads(body)

    def worker_pids(self) -> list[int]:
        from fitflix.memory.process import children_of

        return children_of(self.master_pid)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the process we started, wait, SIGKILL if it will not go; return its exit code."""
        if self.process is None:
            return None
        end(self.process, timeout_s)
        if self.cgroup is not None:
            self._kill_leftovers()
        return self.process.returncode

    def close(self) -> None:
        """Stop the server and close the log pipe."""
        self.stop()
        if self._log is not None:
            self._log.close()

    def _kill_leftovers(self) -> None:
        """Workers of ours that outlived their master, found in our own cgroup."""
        for pid in self.cgroup.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        poll_until(lambda: not self.cgroup.pids(), 10, "the test cgroup to empty")


def plain_gunicorn_command(bind: str, workers: int, app: str, args: tuple[str, ...] = ()) -> list[str]:
    """The peer the benchmarks and the drill compare against: `gunicorn -c /dev/null`, no config, no hooks."""
    return [sys.executable, "-m", "gunicorn", "-c", "/dev/null", "-b", bind, "-w", str(workers), *args, app]


def run_to_exit(
    *command: str, env: dict[str, str] | None = None, timeout_s: float = 60, cwd: Path = PROJECT
) -> subprocess.CompletedProcess:
    """Run `command` (in the project folder) with a test environment until it exits (gunicorn that must refuse)."""
    return subprocess.run(
        command, cwd=cwd, env=server_env(env), capture_output=True, text=True, timeout=timeout_s, check=False
    )


def project_copy(folder: Path) -> Path:
    """A project folder of the test's own, so a test can give it a `.env` without touching the real one.

    gunicorn.conf.py and wsgi.py are copied (each finds `.env` beside itself); the package is linked.
    """
    for name in ("gunicorn.conf.py", "wsgi.py"):
        (folder / name).write_bytes((PROJECT / name).read_bytes())
    (folder / "fitflix").symlink_to(PROJECT / "fitflix")
    return folder


GUNICORN = (sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py")
