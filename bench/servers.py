"""The peers: plain gunicorn, uWSGI and FitFlix, each started by pid inside a memory cgroup of its own.

Everything started here is registered, so `stop_everything()` (called on the
way out, on success, error or Ctrl-C) ends our processes by pid and removes
our cgroups, processes first.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fitflix.memory.process import children_of, read_smaps_rollup
from fitflix.serving.sizing import MIB
from tests.support.cgroups import MemoryCgroup
from tests.support.server import LISTENING, PROJECT, LiveServer, server_env
from tests.support.wait import Timeout, poll_until

log = logging.getLogger("bench")

UWSGI = Path(sys.executable).with_name("uwsgi")


@dataclass(frozen=True)
class Peer:
    """How to start one server: `kind` is plain (gunicorn, no config), uwsgi or fitflix (gunicorn.conf.py)."""

    name: str
    kind: str
    app: str = "wsgi:app"
    workers: int = 2  # plain and uwsgi; fitflix sizes itself (WEB_CONCURRENCY in env overrides)
    env: dict[str, str] = field(default_factory=dict)  # fitflix settings
    args: tuple[str, ...] = ()  # extra plain/uwsgi flags
    limit_mb: int | None = 512  # the peer's own memory cgroup; None: none


class PeerServer:
    """A server process of ours (plain gunicorn or uWSGI), its log read through a pipe.

    A pipe, not a file: a log file's page cache would be charged to the
    peer's own cgroup. Stopped by pid: SIGTERM, wait, SIGKILL; then anything
    left in its cgroup, which only our processes entered.
    """

    def __init__(self, peer: Peer, cgroup: MemoryCgroup | None) -> None:
        self.peer = peer
        self.cgroup = cgroup
        # gunicorn 27's control socket lives under $HOME: one home each, so peers never share it.
        self.home = tempfile.mkdtemp(prefix="fitflix-bench-home-")
        self.env = server_env({"HOME": self.home})
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.master_pid: int | None = None
        self._log_chunks: list[bytes] = []
        self._log_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def _spawn(self) -> None:
        command = self.command()
        if self.cgroup is not None:
            command = self.cgroup.wrap(command)
        self.process = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read_log, name=f"log-{self.peer.name}", daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        for line in iter(self.process.stdout.readline, b""):
            with self._log_lock:
                self._log_chunks.append(line)

    def log(self) -> str:
        with self._log_lock:
            return b"".join(self._log_chunks).decode(errors="replace")

    def _alive(self) -> None:
        if self.process.poll() is not None:
            raise Timeout(f"{self.peer.name} exited with code {self.process.returncode}")

    def _answers(self) -> bool:
        self._alive()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def start(self, ready_timeout_s: float = 30.0) -> PeerServer:
        self._spawn()
        try:
            self._find_port(ready_timeout_s)
            poll_until(self._answers, ready_timeout_s, "the first 200 from /health")
        except Timeout as error:
            self.close()
            raise Timeout(f"{error}\n--- {self.peer.name} log ---\n{self.log()[-3000:]}") from None
        return self

    def _find_port(self, timeout_s: float) -> None:
        raise NotImplementedError

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.cgroup is not None:
            for pid in self.cgroup.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            poll_until(lambda: not self.cgroup.pids(), 10, f"the cgroup of {self.peer.name} to empty")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self._reader is not None:
                self._reader.join(10)
            if self.process is not None and self.process.stdout is not None:
                self.process.stdout.close()
            shutil.rmtree(self.home, ignore_errors=True)


class PlainGunicorn(PeerServer):
    """`gunicorn -w N -c /dev/null`: sync workers, no preload, no hooks, no config file."""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "/dev/null",
            "-b",
            "127.0.0.1:0",
            "-w",
            str(self.peer.workers),
            *self.peer.args,
            self.peer.app,
        ]

    def _find_port(self, timeout_s: float) -> None:
        def listening():
            self._alive()
            return LISTENING.search(self.log())

        match = poll_until(listening, timeout_s, "gunicorn's 'Listening at' line")
        self.port, self.master_pid = int(match.group(1)), int(match.group(2))


class Uwsgi(PeerServer):
    """uWSGI from PyPI: master mode, N processes, --http-socket on a free 127.0.0.1 port."""

    def command(self) -> list[str]:
        return [
            str(UWSGI),
            "--master",
            "--processes",
            str(self.peer.workers),
            "--http-socket",
            f"127.0.0.1:{self.port}",
            "--module",
            self.peer.app,
            "--chdir",
            str(PROJECT),
            "--pythonpath",
            str(PROJECT),
            "--home",
            sys.prefix,
            "--die-on-term",
            "--need-app",
            "--disable-logging",
            # --http-socket serves one request per connection but does not say so on
            # HTTP/1.1 requests: without this header every keep-alive client (wrk,
            # http.client) sees a reset on its second request.
            "--add-header",
            "Connection: close",
            *self.peer.args,
        ]

    def start(self, ready_timeout_s: float = 30.0) -> PeerServer:
        self.port = free_port()  # uWSGI does not report a port it picked itself
        return super().start(ready_timeout_s)

    def _find_port(self, timeout_s: float) -> None:
        self.master_pid = self.process.pid  # `sh -c 'exec ...'` keeps the pid


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def uwsgi_problem() -> str | None:
    """Why the uwsgi peer cannot run here, or None."""
    if not UWSGI.exists():
        return f"uWSGI is not installed ({UWSGI} missing): pip install -r requirements-bench.txt"
    try:
        subprocess.run([str(UWSGI), "--version"], capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        return f"uWSGI does not run: {error}"
    return None


@dataclass(frozen=True)
class Footprint:
    workers: int
    usage_bytes: int | None
    working_set_bytes: int | None
    tree_pss_bytes: int
    tree_rss_bytes: int
    master_uss_bytes: int
    worker_uss_bytes: tuple[int, ...]


class Running:
    """A started peer: its server, its cgroup, its figures."""

    def __init__(self, peer: Peer, server: LiveServer | PeerServer, cgroup: MemoryCgroup | None) -> None:
        self.peer = peer
        self.server = server
        self.cgroup = cgroup

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def master_pid(self) -> int:
        return self.server.master_pid

    def worker_pids(self) -> list[int]:
        return children_of(self.master_pid)

    def footprint(self) -> Footprint:
        master = read_smaps_rollup(self.master_pid)
        workers = [memory for memory in map(read_smaps_rollup, self.worker_pids()) if memory is not None]
        tree = ([master] if master else []) + workers
        return Footprint(
            workers=len(workers),
            usage_bytes=self.cgroup.usage_bytes() if self.cgroup else None,
            working_set_bytes=self.cgroup.working_set_bytes() if self.cgroup else None,
            tree_pss_bytes=sum(memory.pss_bytes for memory in tree),
            tree_rss_bytes=sum(memory.rss_bytes for memory in tree),
            master_uss_bytes=master.uss_bytes if master else 0,
            worker_uss_bytes=tuple(memory.uss_bytes for memory in workers),
        )

    def wait_for_workers(self, count: int, timeout_s: float = 30.0) -> None:
        poll_until(lambda: len(self.worker_pids()) >= count, timeout_s, f"{count} worker(s) of {self.peer.name}")

    def oom_kills(self) -> int:
        return self.cgroup.oom_kills() if self.cgroup else 0

    def peak_bytes(self) -> int | None:
        return self.cgroup.peak_bytes() if self.cgroup else None

    def log(self) -> str:
        return self.server.log()

    def stop(self) -> None:
        try:
            self.server.close()
        finally:
            if self.cgroup is not None:
                self.cgroup.remove()
                self.cgroup = None


_running: list[Running] = []


def start(peer: Peer) -> Running:
    """Start `peer` inside a fresh memory cgroup of `peer.limit_mb`; raise with the log on failure."""
    cgroup = MemoryCgroup.create(peer.limit_mb, prefix="fitflix-bench") if peer.limit_mb else None
    if peer.kind == "plain":
        server: LiveServer | PeerServer = PlainGunicorn(peer, cgroup)
    elif peer.kind == "uwsgi":
        server = Uwsgi(peer, cgroup)
    elif peer.kind == "fitflix":
        server = LiveServer(peer.env, app=peer.app, cgroup=cgroup)
    else:
        raise ValueError(f"unknown peer kind {peer.kind!r}")
    running = Running(peer, server, cgroup)
    _running.append(running)
    try:
        server.start()
    except BaseException:
        _stop(running)
        raise
    return running


def _stop(running: Running) -> None:
    if running in _running:
        _running.remove(running)
    running.stop()


@contextmanager
def serving(peer: Peer) -> Iterator[Running]:
    running = start(peer)
    try:
        yield running
    finally:
        _stop(running)


def stop_everything() -> None:
    """End every server we started (by pid) and remove its cgroup."""
    for running in list(_running):
        try:
            _stop(running)
        except Exception:  # keep going: the others still need stopping
            log.exception("could not stop %s", running.peer.name)


def install_signal_handlers() -> None:
    """Ctrl-C or SIGTERM: stop our servers and remove our cgroups before leaving."""

    def leave(signum, _frame):
        stop_everything()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)


def mb(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value / MIB:.{digits}f}"
