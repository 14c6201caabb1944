"""HAProxy in front of instances of a server on fixed ports, for the rolling-restart drill and its benchmark.

What an operator runs: Debian's HAProxy, round robin over the instances,
`/health/ready` checked every 250 ms, no retries and no redispatch, so every
request a restart costs reaches the client. Each instance serves on a port of
its own that outlives it: `Instance.replace()` stops it with SIGTERM, waits
for it to exit and starts the next one on the same port, in a fresh memory
cgroup. `ClientLoad` sends keep-alive requests through HAProxy from a fixed
number of threads and records every answer.

Everything is on 127.0.0.1; every process is ended by its pid, every cgroup
removed, every wait polled against a deadline.
"""

from __future__ import annotations

import csv
import http.client
import io
import itertools
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.cgroups import MemoryCgroup
from harness.pipe import LogPipe, end
from harness.server import LiveServer, plain_gunicorn_command
from harness.wait import Timeout, poll_until

HOST = "127.0.0.1"
BACKEND = "service"
SERVICE_WITH_LEAKS = "harness.apps.service_with_leaks:app"
READY_PATH = "/health/ready"
# What the clients ask for: mostly /health, and a request that is in flight for 20 ms
# (so a stop always finds some), from the leaky app every drill instance serves.
CLIENT_PATHS = ("/health", "/health", "/health", "/sleep?ms=20")
# Debian's package; /usr/local first for a hand-built one.
HAPROXY_CANDIDATES = ("/usr/local/sbin/haproxy", "/usr/sbin/haproxy")
STATS_POLL_S = 0.02  # how often the harness reads HAProxy's stats while it waits for a state
# SIGTERM to exit: DRAIN_S (5 s) + graceful_timeout (20 s) at most, with room to spare.
EXIT_TIMEOUT_S = 40.0
# HAProxy's own error pages (503, 502, 504) are HTML; the service answers JSON.
BALANCER_PAGE = b"<html><body><h1>"


def haproxy_path() -> str | None:
    """HAProxy's executable, or None."""
    found = shutil.which("haproxy")
    if found:
        return found
    return next((path for path in HAPROXY_CANDIDATES if os.access(path, os.X_OK)), None)


def haproxy_problem() -> str | None:
    """Why HAProxy cannot run here, or None."""
    path = haproxy_path()
    if path is None:
        return (
            "haproxy is not installed (not on PATH, nor at " + " or ".join(HAPROXY_CANDIDATES) + "): "
            "apt-get install haproxy, or run bash scripts/test as root"
        )
    try:
        subprocess.run([path, "-v"], capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        return f"{path} does not run: {error}"
    return None


def free_port() -> int:
    """A port nothing listens on now (another process could take it before we bind: unlikely on loopback)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def haproxy_config(frontend_port: int, stats_port: int, servers: dict[str, int]) -> str:
    """The configuration: one frontend, one round-robin backend of `servers` (name -> port), a CSV stats page."""
    server_lines = "\n".join(f"    server {name} {HOST}:{port}" for name, port in servers.items())
    return f"""\
global
    # -db keeps HAProxy in the foreground: its log goes to stdout, read through a pipe.
    log stdout format raw local0 info
    maxconn 4096

defaults
    mode http
    log global
    # No second attempt and no other server: every failed request reaches the client.
    retries 0
    timeout connect 2s
    timeout client 30s
    # Longer than any request, and than a stop's graceful timeout (25 s): HAProxy never cuts one first.
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout check 2s
    # Connections to the servers are kept alive and reused (HAProxy's default, http-reuse safe).

frontend clients
    bind {HOST}:{frontend_port}
    option httplog
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET {READY_PATH}
    http-check expect status 200
    # A check every 250 ms: two failures in a row take a server out of rotation, 0.25 to 0.5 s
    # after it starts failing (plus up to `timeout check` for a check that hangs); two
    # successes in a row put it back. Requests sent before then still go to it.
    default-server check inter 250ms fall 2 rise 2
{server_lines}

frontend stats
    bind {HOST}:{stats_port}
    no log
    stats enable
    stats uri /stats
"""


@dataclass(frozen=True)
class ServerState:
    """One server's line of HAProxy's CSV stats."""

    status: str  # UP, DOWN, "UP 1/2" (one check failed), "DOWN 1/2", MAINT, no check
    check_status: str  # L7OK, L7STS (wrong status), L4CON (refused), ...
    down_transitions: int  # chkdown: UP -> DOWN transitions since HAProxy started
    sessions: int  # scur: connections open to it now

    @property
    def up(self) -> bool:
        return self.status == "UP"

    @property
    def down(self) -> bool:
        return self.status.startswith("DOWN")


def parse_stats_csv(text: str, backend: str = BACKEND) -> dict[str, ServerState]:
    """Server name -> state, for the servers of `backend` in HAProxy's `/stats;csv` page."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("# ")))
    states = {}
    for row in reader:
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        states[row["svname"]] = ServerState(
            status=row.get("status", ""),
            check_status=row.get("check_status", ""),
            down_transitions=int(row.get("chkdown") or 0),
            sessions=int(row.get("scur") or 0),
        )
    return states


# An `option httplog` line: ... status bytes cookie-in cookie-out termination-state ...
HTTPLOG_END = re.compile(r" (\d{3}) \d+ \S+ \S+ ([A-Za-z-]{4}) ")


def error_terminations(log: str) -> Counter:
    """'502 SH--'-style counts of HAProxy's log lines for 5xx answers (the termination state says why)."""
    counts: Counter = Counter()
    for match in HTTPLOG_END.finditer(log):
        if match.group(1).startswith("5"):
            counts[f"{match.group(1)} {match.group(2)}"] += 1
    return counts


class Balancer:
    """HAProxy in the foreground (`haproxy -f cfg -db`) as our subprocess, its log read through a pipe."""

    def __init__(self, servers: dict[str, int]) -> None:
        self.servers = dict(servers)
        self.port = free_port()
        self.stats_port = free_port()
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None
        self._log: LogPipe | None = None

    def start(self, ready_timeout_s: float = 15.0) -> Balancer:
        """Start HAProxy and return once its stats page lists every server (UP or not)."""
        haproxy = haproxy_path()
        if haproxy is None:
            raise RuntimeError(haproxy_problem())
        self.folder = Path(tempfile.mkdtemp(prefix="fitflix-haproxy-"))
        config = self.folder / "haproxy.cfg"
        config.write_text(haproxy_config(self.port, self.stats_port, self.servers))
        self.process = subprocess.Popen(
            [haproxy, "-f", str(config), "-db"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._log = LogPipe(self.process, "haproxy-log")
        try:
            poll_until(lambda: set(self.states()) == set(self.servers), ready_timeout_s, "HAProxy's stats page")
        except Timeout as error:
            self.stop()
            raise Timeout(f"{error}\n--- haproxy log ---\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self._log.text() if self._log is not None else ""

    def states(self) -> dict[str, ServerState]:
        """Every server's state now; {} while the stats page does not answer."""
        if self.process.poll() is not None:
            raise Timeout(f"haproxy exited with code {self.process.returncode}\n--- haproxy log ---\n{self.log()}")
        connection = http.client.HTTPConnection(HOST, self.stats_port, timeout=2)
        try:
            connection.request("GET", "/stats;csv")
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            return {}
        finally:
            connection.close()
        return parse_stats_csv(body.decode()) if response.status == 200 else {}

    def state(self, name: str) -> ServerState | None:
        return self.states().get(name)

    def wait_until_up(self, names: Iterable[str], timeout_s: float = 15.0) -> None:
        wanted = list(names)

        def all_up() -> bool:
            states = self.states()
            return all(name in states and states[name].up for name in wanted)

        poll_until(all_up, timeout_s, f"HAProxy to show {', '.join(wanted)} UP", STATS_POLL_S)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (HAProxy's hard stop) the process we started, wait, SIGKILL if it will not go."""
        if self.process is None:
            return None
        end(self.process, timeout_s)
        if self._log is not None:
            self._log.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> Balancer:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


class PlainGunicornOnPort(LiveServer):
    """`gunicorn -w N -c /dev/null -b 127.0.0.1:<port> APP`: sync workers, no config, so no drain."""

    def __init__(self, port: int, workers: int, env: dict[str, str], app: str, cgroup: MemoryCgroup | None) -> None:
        super().__init__(env, app=app, cgroup=cgroup)
        self.fixed_port = port
        self.workers = workers

    def server_command(self) -> list[str]:
        return plain_gunicorn_command(f"{HOST}:{self.fixed_port}", self.workers, self.app)


@dataclass(frozen=True)
class Restart:
    """One instance replaced on its port: monotonic times from the SIGTERM to HAProxy showing it UP again."""

    name: str
    old_master: int
    new_master: int
    exit_code: int
    sigterm_at: float
    down_at: float | None  # HAProxy first showed it DOWN (None: never seen DOWN)
    exited_at: float
    ready_at: float  # the new one answered /health/ready with 200
    up_at: float  # HAProxy showed the new one UP

    @property
    def exit_s(self) -> float:
        """SIGTERM to the old master's exit."""
        return self.exited_at - self.sigterm_at

    @property
    def down_s(self) -> float | None:
        """SIGTERM to HAProxy taking it out of rotation."""
        return None if self.down_at is None else self.down_at - self.sigterm_at

    @property
    def start_s(self) -> float:
        """The old one's exit to the new one's first ready answer."""
        return self.ready_at - self.exited_at

    @property
    def replace_s(self) -> float:
        """SIGTERM to the new one UP in HAProxy."""
        return self.up_at - self.sigterm_at


def default_cgroup(limit_mb: int) -> MemoryCgroup:
    return MemoryCgroup.create(limit_mb, prefix="fitflix-drill")


class Instance:
    """One server on a fixed 127.0.0.1 port, replaced on that port; each generation in a memory cgroup of its own.

    A new cgroup per generation, as a platform gives the replacement a new
    container: the new server gets the whole limit (none of it charged to
    pages the old one left behind) and its own OOM counter. The old cgroup's
    OOM kills are read once its processes are gone, then it is removed, so
    `oom_kills()` covers every generation.

    `kind` "fitflix": gunicorn.conf.py with `env` (PORT set to the port);
    "plain": `gunicorn -w 2 -c /dev/null`, no drain.
    """

    def __init__(
        self,
        name: str,
        port: int,
        kind: str = "fitflix",
        app: str = SERVICE_WITH_LEAKS,
        env: dict[str, str] | None = None,
        limit_mb: int = 512,
        plain_workers: int = 2,
        cgroup_factory: Callable[[int], MemoryCgroup] = default_cgroup,
    ) -> None:
        if kind not in ("fitflix", "plain"):
            raise ValueError(f"unknown instance kind {kind!r}: fitflix or plain")
        self.name = name
        self.port = port
        self.kind = kind
        self.app = app
        self.env = dict(env or {})
        self.limit_mb = limit_mb
        self.plain_workers = plain_workers
        self.cgroup_factory = cgroup_factory
        self.server: LiveServer | None = None
        self.cgroup: MemoryCgroup | None = None
        self.home: str | None = None
        self.masters: list[int] = []
        self.retired_logs: list[str] = []
        self.retired_oom_kills = 0

    def _new_server(self) -> LiveServer:
        # gunicorn 27's control socket lives under $HOME: one home per generation, never shared.
        env = {"PORT": str(self.port), "HOME": self.home, **self.env}
        if self.kind == "plain":
            return PlainGunicornOnPort(self.port, self.plain_workers, env, self.app, self.cgroup)
        return LiveServer(env, app=self.app, cgroup=self.cgroup)

    def start(self, ready_timeout_s: float = 30.0) -> Instance:
        """Start a generation and return once it answers /health/ready with 200 on its port."""
        self.cgroup = self.cgroup_factory(self.limit_mb)
        self.home = tempfile.mkdtemp(prefix="fitflix-drill-home-")
        self.server = self._new_server()
        try:
            self.server.start(ready_timeout_s)
            if self.server.port != self.port:
                raise Timeout(f"{self.name} listens on {self.server.port}, not on its port {self.port}")
            poll_until(self.ready, ready_timeout_s, f"{self.name}'s first 200 from {READY_PATH}")
        except BaseException:
            self._retire()
            raise
        self.masters.append(self.server.master_pid)
        return self

    def ready(self) -> bool:
        try:
            return self.server.request("GET", READY_PATH, timeout_s=2)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    @property
    def master_pid(self) -> int:
        return self.server.master_pid

    def log(self) -> str:
        """Every generation's log, oldest first."""
        return "".join(self.retired_logs) + (self.server.log() if self.server is not None else "")

    def oom_kills(self) -> int:
        """OOM kills in every cgroup this instance has had."""
        return self.retired_oom_kills + (self.cgroup.oom_kills() if self.cgroup is not None else 0)

    def replace(self, balancer: Balancer, exit_timeout_s: float = EXIT_TIMEOUT_S, up_timeout_s: float = 30.0):
        """SIGTERM the master, wait for its exit, start the next generation on the port, wait for HAProxy's UP."""
        old = self.server
        old_master = old.master_pid
        down_before = balancer.state(self.name).down_transitions
        down_at = None

        def seen_down() -> float | None:
            state = balancer.state(self.name)
            if state is not None and (state.down or state.down_transitions > down_before):
                return time.monotonic()
            return None

        def exited() -> bool:
            nonlocal down_at
            if down_at is None:  # HAProxy's DOWN is caught on the way, while the old one drains
                down_at = seen_down()
            return old.process.poll() is not None

        sigterm_at = time.monotonic()
        old.process.send_signal(signal.SIGTERM)
        poll_until(exited, exit_timeout_s, f"{self.name} (master {old_master}) to exit after SIGTERM", STATS_POLL_S)
        exited_at = time.monotonic()
        exit_code = old.process.returncode
        self._retire()
        self.start()
        ready_at = time.monotonic()

        def up() -> bool:
            nonlocal down_at
            state = balancer.state(self.name)
            if down_at is None and state is not None and state.down_transitions > down_before:
                down_at = time.monotonic()  # seen DOWN and back between two polls: the time is a bound
            return state is not None and state.up

        poll_until(up, up_timeout_s, f"HAProxy to show {self.name} UP again", STATS_POLL_S)
        return Restart(
            self.name,
            old_master,
            self.master_pid,
            exit_code,
            sigterm_at,
            down_at,
            exited_at,
            ready_at,
            time.monotonic(),
        )

    def _retire(self) -> None:
        """Stop this generation (if it still runs), keep its log and OOM count, remove its cgroup and home."""
        server, cgroup, home = self.server, self.cgroup, self.home
        self.server = self.cgroup = self.home = None
        try:
            if server is not None:
                server.close()
                self.retired_logs.append(server.log())
        finally:
            if cgroup is not None:
                self.retired_oom_kills += cgroup.oom_kills()
                cgroup.remove()
            if home is not None:
                shutil.rmtree(home, ignore_errors=True)

    def close(self) -> None:
        self._retire()


@dataclass(frozen=True)
class Answer:
    """What one request through HAProxy got."""

    start_s: float
    end_s: float
    path: str
    status: int | None  # None: no HTTP answer at all
    error: str | None  # the exception's class name when status is None
    from_balancer: bool  # the answer is HAProxy's own error page, not the service's

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def kind(self) -> str:
        if self.ok:
            return "ok"
        if self.status is None:
            return f"connection error ({self.error})"
        return f"HAProxy {self.status}" if self.from_balancer else f"{self.status} from the service"


class ClientLoad:
    """`clients` threads, each on a keep-alive connection to 127.0.0.1:`port` (what browsers and HAProxy do).

    Paths cycle through `paths`. Every request's answer is kept. It runs
    until `stop()`, `max_requests` or `time_limit_s`, whichever comes first;
    a connection that fails or is closed is replaced by a fresh one, and the
    failed request is not sent again: every failure counts.

    On a kept-alive client connection, HAProxy answers a server that closed or
    reset its connection before any answer (a reset listen backlog) not with
    502 but by closing the client's connection without a word or a log line
    (`abort_keep_alive` in its http_ana.c: the client is to retry, as after a
    keep-alive race). Here that is a connection error (RemoteDisconnected).
    """

    def __init__(
        self,
        port: int,
        clients: int = 8,
        paths: tuple[str, ...] = CLIENT_PATHS,
        max_requests: int = 200_000,
        time_limit_s: float = 150.0,
        timeout_s: float = 30.0,
    ) -> None:
        self.port = port
        self.clients = clients
        self.paths = paths
        self.max_requests = max_requests
        self.time_limit_s = time_limit_s
        self.timeout_s = timeout_s
        self._stopping = threading.Event()
        self._counter = itertools.count()
        self._counter_lock = threading.Lock()
        self._answers: list[list[Answer]] = [[] for _ in range(clients)]
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0

    def start(self) -> ClientLoad:
        self._deadline = time.monotonic() + self.time_limit_s
        self._threads = [
            threading.Thread(target=self._client, args=(slot,), name=f"drill-client-{slot}", daemon=True)
            for slot in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _next_index(self) -> int | None:
        with self._counter_lock:
            index = next(self._counter)
        if index >= self.max_requests or time.monotonic() > self._deadline or self._stopping.is_set():
            return None
        return index

    def _client(self, slot: int) -> None:
        connection: http.client.HTTPConnection | None = None
        answers = self._answers[slot]
        while (index := self._next_index()) is not None:
            path = self.paths[index % len(self.paths)]
            if connection is None:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout_s)
            started = time.monotonic()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                status, error = response.status, None
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                status, error, body = None, type(exc).__name__, b""
                connection.close()
                connection = None
            from_balancer = status is not None and body.startswith(BALANCER_PAGE)
            answers.append(Answer(started, time.monotonic(), path, status, error, from_balancer))
        if connection is not None:
            connection.close()

    def count(self) -> int:
        return sum(len(answers) for answers in self._answers)

    def wait_for_more(self, requests: int, timeout_s: float = 30.0) -> None:
        """Until `requests` more answers are in: the load is flowing."""
        target = self.count() + requests
        poll_until(lambda: self.count() >= target, timeout_s, f"{requests} more answers through HAProxy")

    def stop(self) -> list[Answer]:
        """Stop the clients (each finishes the request it has in flight) and return every answer in time order."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
        return self.answers()

    def answers(self) -> list[Answer]:
        return sorted((answer for answers in self._answers for answer in answers), key=lambda answer: answer.end_s)

    def __enter__(self) -> ClientLoad:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


def failure_kinds(answers: Iterable[Answer]) -> Counter:
    return Counter(answer.kind for answer in answers if not answer.ok)


def failures_by_phase(answers: Iterable[Answer], phases: list[tuple[float, str]]) -> Counter:
    """Failed answers counted under the last phase (start time, label) that began before each failed."""
    ordered = sorted(phases)
    counts: Counter = Counter()
    for answer in answers:
        if answer.ok:
            continue
        label = "before the first phase"
        for started, name in ordered:
            if started <= answer.end_s:
                label = name
        counts[label] += 1
    return counts


@dataclass
class RestartRounds:
    restarts: list[Restart] = field(default_factory=list)

    def phases(self) -> list[tuple[float, str]]:
        return [
            (restart.sigterm_at, f"restart {index} ({restart.name})") for index, restart in enumerate(self.restarts, 1)
        ]

    def exit_s(self) -> list[float]:
        return [restart.exit_s for restart in self.restarts]

    def summary(self) -> str:
        if not self.restarts:
            return "no restarts"
        exits = self.exit_s()
        starts = [restart.start_s for restart in self.restarts]
        replaces = [restart.replace_s for restart in self.restarts]
        downs = [restart.down_s for restart in self.restarts if restart.down_s is not None]
        down_text = f"{statistics.median(downs):.2f} s median" if downs else "never seen"
        return (
            f"{len(self.restarts)} restarts: SIGTERM to DOWN in HAProxy {down_text}; to exit "
            f"{statistics.median(exits):.2f} s median, {max(exits):.2f} s max; exit to the new one ready "
            f"{statistics.median(starts):.2f} s median; SIGTERM to UP again "
            f"{statistics.median(replaces):.2f} s median, {max(replaces):.2f} s max"
        )


def rolling_restarts(
    balancer: Balancer, instances: list[Instance], rounds: int, load: ClientLoad | None = None, between: int = 200
) -> RestartRounds:
    """Each instance in turn, `rounds` times: replaced on its port, UP in HAProxy before the next one goes.

    With `load`, `between` more answers come through HAProxy before each restart, so each starts under load.
    """
    done = RestartRounds()
    for _round in range(rounds):
        for instance in instances:
            if load is not None:
                load.wait_for_more(between)
            done.restarts.append(instance.replace(balancer))
    return done
