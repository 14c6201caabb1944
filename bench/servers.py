"""The peers: plain gunicorn, uWSGI, granian, waitress and FitFlix, each started by pid in a memory cgroup of its own.

Everything started here is registered, so `stop_everything()` (called on the
way out, on success, error or Ctrl-C) ends our processes by pid and removes
our cgroups, processes first.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.plots import Trace
from fitflix.memory.container import MIB
from fitflix.memory.process import children_of, read_smaps_rollup
from harness.cgroups import MemoryCgroup
from harness.server import PROJECT, LiveServer, plain_gunicorn_command
from harness.wait import poll_until

log = logging.getLogger("bench")

UWSGI = Path(sys.executable).with_name("uwsgi")
GRANIAN = Path(sys.executable).with_name("granian")
WAITRESS = Path(sys.executable).with_name("waitress-serve")


@dataclass(frozen=True)
class Peer:
    """How to start one server: `kind` is plain (gunicorn, no config), uwsgi, granian, waitress or fitflix
    (gunicorn.conf.py)."""

    name: str
    kind: str
    app: str = "wsgi:app"
    workers: int = 2  # plain, uwsgi and granian (waitress is one process); fitflix sizes itself (WEB_CONCURRENCY)
    env: dict[str, str] = field(default_factory=dict)  # fitflix settings
    args: tuple[str, ...] = ()  # extra flags of a peer that is not fitflix
    limit_mb: int | None = 512  # the peer's own memory cgroup; None: none
    no_memory_limit: bool = False  # True: its own cgroup limits nothing (limit_mb unused) but counts usage and kills
    cpus: float | None = None  # a CPU quota on that cgroup (0.1: Render's free instance); None: none
    cpu_list: str | None = None  # pinned with `taskset -c` to these CPUs ("0"); None: not pinned
    prefix: tuple[str, ...] = ()  # fitflix: a command gunicorn runs under, such as NO_PROC (inside the cgroup)


class PeerServer(LiveServer):
    """A server of ours that is not gunicorn.conf.py (plain gunicorn or uWSGI): LiveServer's
    pipe-read log, readiness polling and stop-by-pid, with its own command line."""

    def __init__(self, peer: Peer, cgroup: MemoryCgroup | None) -> None:
        # gunicorn 27's control socket lives under $HOME: one home each, so peers never share it.
        self.home = tempfile.mkdtemp(prefix="fitflix-bench-home-")
        super().__init__({"HOME": self.home}, app=peer.app, cgroup=cgroup, prefix=pinned(peer))
        self.peer = peer

    def close(self) -> None:
        try:
            super().close()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


class PlainGunicorn(PeerServer):
    """`gunicorn -w N -c /dev/null`: sync workers, no preload, no hooks, no config file."""

    def server_command(self) -> list[str]:
        return plain_gunicorn_command("127.0.0.1:0", self.peer.workers, self.peer.app, self.peer.args)


class Uwsgi(PeerServer):
    """uWSGI from PyPI: master mode, N processes, --http-socket on a free 127.0.0.1 port."""

    def server_command(self) -> list[str]:
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

    def find_port(self, timeout_s: float) -> None:
        self.master_pid = self.process.pid  # `sh -c 'exec ...'` keeps the pid


class Granian(PeerServer):
    """granian from PyPI: its WSGI interface, N worker processes, on a free 127.0.0.1 port, no access log."""

    def server_command(self) -> list[str]:
        return [
            str(GRANIAN),
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.peer.workers),
            "--no-access-log",
            *self.peer.args,
            self.peer.app,
        ]

    def start(self, ready_timeout_s: float = 30.0) -> PeerServer:
        self.port = free_port()  # granian does not report a port it picked itself
        return super().start(ready_timeout_s)

    def find_port(self, timeout_s: float) -> None:
        self.master_pid = self.process.pid  # `sh -c 'exec ...'` keeps the pid


class Waitress(PeerServer):
    """waitress from PyPI: one process, its threads (4 unless --threads), on a free 127.0.0.1 port."""

    def server_command(self) -> list[str]:
        return [str(WAITRESS), "--listen", f"127.0.0.1:{self.port}", *self.peer.args, self.peer.app]

    def start(self, ready_timeout_s: float = 30.0) -> PeerServer:
        self.port = free_port()
        return super().start(ready_timeout_s)

    def find_port(self, timeout_s: float) -> None:
        self.master_pid = self.process.pid


def pinned(peer: Peer) -> tuple[str, ...]:
    """`taskset -c LIST`, which runs the server in place of itself (same pid), when the peer is pinned."""
    return ("taskset", "-c", peer.cpu_list) if peer.cpu_list is not None else ()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def peer_problem(kind: str) -> str | None:
    """Why a granian or waitress peer cannot run here (not installed), or None."""
    command = {"granian": GRANIAN, "waitress": WAITRESS}[kind]
    if not command.exists():
        return f"{kind} is not installed ({command} missing): pip install -r requirements-bench.txt"
    return None


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

    def exit_code(self) -> int | None:
        """The server's exit code once its main process has exited (granian leaves when a worker dies), else None."""
        process = self.server.process
        return process.poll() if process is not None else None

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


class MemorySampler:
    """A cgroup's usage, OOM-kill count and processes, read every `every_s` on a thread of its own.

    Times are seconds since `started` (time.monotonic()); a process that appears in the
    cgroup after the start is a new worker; the thread stops at `time_limit_s` by itself.
    """

    def __init__(self, cgroup: MemoryCgroup, every_s: float = 0.02, time_limit_s: float = 900.0) -> None:
        self.cgroup = cgroup
        self.every_s = every_s
        self.time_limit_s = time_limit_s
        self.started = 0.0
        self.t_s: list[float] = []
        self.usage_mb: list[float] = []
        self.oom_kill_s: list[float] = []
        self.new_worker_s: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._known = set(self.cgroup.pids())
        self._kills = self.cgroup.oom_kills()
        self.started = time.monotonic()
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sampling (before the server stops, so its exit is not in the figure)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def since(self, monotonic_s: float) -> float:
        return monotonic_s - self.started

    def _read(self) -> None:
        t = time.monotonic() - self.started
        try:
            usage, kills, pids = self.cgroup.usage_bytes(), self.cgroup.oom_kills(), set(self.cgroup.pids())
        except OSError:  # the cgroup went away under us: the run is ending
            return
        self.t_s.append(t)
        self.usage_mb.append(usage / MIB)
        self.oom_kill_s += [t] * max(kills - self._kills, 0)
        self.new_worker_s += [t] * len(pids - self._known)
        self._kills = kills
        self._known |= pids

    def _run(self) -> None:
        while not self._stop.wait(self.every_s) and time.monotonic() - self.started < self.time_limit_s:
            self._read()

    def trace(self, peer: str, limit_mb: float) -> Trace:
        return Trace(peer, limit_mb, self.t_s, self.usage_mb, self.oom_kill_s, self.new_worker_s)


_running: list[Running] = []

# Options every peer's memory cgroup is made with (bench/cgroup_v2.py sets memory.oom.group=1 on v2), and
# what v2 said of each peer's cgroup as it stopped: (peer name, memory.events, memory.pressure).
CGROUP_OPTIONS: dict[str, object] = {}
V2_READINGS: list[tuple[str, dict[str, int], dict | None]] = []

PLACEHOLDER_LIMIT_MB = 512  # what an unlimited cgroup is created with, lifted before anything runs in it


def unlimited_cgroup(prefix: str = "fitflix-bench", cpus: float | None = None, cpu_accounting: bool = False):
    """A memory cgroup of our own with no limit (v1 `-1`, v2 `max`): the service reads no limit there (v1 shows
    the largest page-aligned value, which fitflix/memory/cgroup.py takes for none) unless a parent has one, and
    the kernel still counts its usage, its peak and its OOM kills."""
    cgroup = MemoryCgroup.create(PLACEHOLDER_LIMIT_MB, prefix=prefix, cpus=cpus, cpu_accounting=cpu_accounting)
    limit_file, no_limit = ("memory.limit_in_bytes", "-1") if cgroup.version == 1 else ("memory.max", "max")
    try:
        (cgroup.directory / limit_file).write_text(no_limit)
    except BaseException:
        cgroup.remove()
        raise
    return cgroup


def start(peer: Peer) -> Running:
    """Start `peer` inside a fresh memory cgroup of `peer.limit_mb`; raise with the log on failure."""
    accounting = peer.cpu_list is not None
    if peer.no_memory_limit:
        cgroup = unlimited_cgroup(cpus=peer.cpus, cpu_accounting=accounting)
    elif peer.limit_mb:
        cgroup = MemoryCgroup.create(
            peer.limit_mb, prefix="fitflix-bench", cpus=peer.cpus, cpu_accounting=accounting, **CGROUP_OPTIONS
        )
    else:
        cgroup = None
    if peer.kind == "plain":
        server: LiveServer | PeerServer = PlainGunicorn(peer, cgroup)
    elif peer.kind == "uwsgi":
        server = Uwsgi(peer, cgroup)
    elif peer.kind == "granian":
        server = Granian(peer, cgroup)
    elif peer.kind == "waitress":
        server = Waitress(peer, cgroup)
    elif peer.kind == "fitflix":
        server = LiveServer(peer.env, app=peer.app, cgroup=cgroup, prefix=pinned(peer) + peer.prefix)
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
    """Stop `running` once. A Ctrl-C stops everything from its handler, and then `serving`'s own way out
    comes here again: a second stop read the cgroup the first had removed, and its FileNotFoundError
    replaced the SystemExit, so the part went on to its next peer instead of leaving."""
    if running not in _running:
        return
    _running.remove(running)
    if running.cgroup is not None and running.cgroup.version == 2:
        try:
            V2_READINGS.append((running.peer.name, running.cgroup.events(), running.cgroup.pressure()))
        except OSError:  # the cgroup went away under us: nothing to read
            pass
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
