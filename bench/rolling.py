"""Part 11: rolling restarts behind HAProxy: every instance replaced on its port under load, and what clients lost."""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
from collections import Counter
from dataclasses import dataclass

from bench import peers, plots
from bench.report import Part, Target
from bench.scale import Scale
from harness.balancer import (
    CLIENT_PATHS,
    SERVICE_WITH_LEAKS,
    Answer,
    Balancer,
    ClientLoad,
    Instance,
    RestartRounds,
    error_terminations,
    failure_kinds,
    free_port,
    haproxy_problem,
    rolling_restarts,
)
from harness.cgroups import MemoryCgroup

log = logging.getLogger("bench")

# Both peers serve the same app: the FitFlix app (so /health/ready) with the leaky
# app's /sleep beside it, so a stop always finds requests in flight.
APP = SERVICE_WITH_LEAKS
INSTANCES = ("a", "b")
CLIENTS = 8
BETWEEN_REQUESTS = 200  # answers through HAProxy before the first restart, between two, and after the last


@dataclass(frozen=True)
class Measured:
    answers: list[Answer]
    rounds: RestartRounds
    oom_kills: int
    terminations: Counter  # HAProxy's 5xx log lines by termination state


def bench_cgroup(limit_mb: int) -> MemoryCgroup:
    return MemoryCgroup.create(limit_mb, prefix="fitflix-bench")


def line_up() -> list[tuple[str, str, str]]:
    """(peer, instance kind, the command each instance runs)."""
    return [
        ("fitflix", "fitflix", f"`gunicorn -c gunicorn.conf.py {APP}` with no settings (DRAIN_S defaults to 5)"),
        (
            "plain",
            "plain",
            f"`gunicorn -w {peers.PLAIN_WORKERS} -c /dev/null -b 127.0.0.1:<port> {APP}` (sync workers, no drain)",
        ),
    ]


def haproxy_or_reason() -> str | None:
    """None when HAProxy runs here; installs it from Debian once if it is missing and this is root."""
    problem = haproxy_problem()
    if problem is not None and os.geteuid() == 0 and shutil.which("apt-get"):
        log.info("part 11: haproxy is not installed: trying apt-get install -y haproxy")
        try:
            subprocess.run(["apt-get", "install", "-y", "haproxy"], capture_output=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
        problem = haproxy_problem()
    return problem


def drill(kind: str, rounds: int, time_limit_s: float) -> Measured:
    """Two instances of `kind` behind HAProxy, 8 clients through it, `rounds` rolling restarts of both."""
    fleet: list[Instance] = []
    try:
        for name in INSTANCES:
            instance = Instance(
                name,
                free_port(),
                kind=kind,
                app=APP,
                limit_mb=peers.LIMIT_MB,
                plain_workers=peers.PLAIN_WORKERS,
                cgroup_factory=bench_cgroup,
            )
            fleet.append(instance)
            instance.start()
        with Balancer({instance.name: instance.port for instance in fleet}) as balancer:
            balancer.wait_until_up(INSTANCES)
            with ClientLoad(balancer.port, clients=CLIENTS, time_limit_s=time_limit_s) as load:
                done = rolling_restarts(balancer, fleet, rounds, load, between=BETWEEN_REQUESTS)
                load.wait_for_more(BETWEEN_REQUESTS)
        terminations = error_terminations(balancer.log())  # once HAProxy has stopped: its whole log is read
        return Measured(load.answers(), done, sum(instance.oom_kills() for instance in fleet), terminations)
    finally:
        for instance in fleet:
            instance.close()


def failed_per_restart(measured: Measured) -> list[int]:
    """Failed answers from each SIGTERM to the next one (the last: to the end of the run)."""
    starts = [restart.sigterm_at for restart in measured.rounds.restarts]
    counts = [0] * len(starts)
    for answer in measured.answers:
        if answer.ok:
            continue
        index = sum(start <= answer.end_s for start in starts) - 1
        if index >= 0:
            counts[index] += 1
    return counts


def seconds(values: list[float], pick) -> str:
    return f"{pick(values):.2f}" if values else "-"


def run(scale: Scale) -> Part:
    commands = line_up()
    restarts = scale.rolling_rounds * len(INSTANCES)
    part = Part(
        11,
        "Rolling restarts behind HAProxy",
        f"Two instances of each peer, each in its own {peers.LIMIT_MB} MB memory cgroup on a fixed 127.0.0.1 port: "
        + "; ".join(f"{peer} = {command}" for peer, _kind, command in commands)
        + ". In front, Debian's HAProxy: round robin, `option httpchk GET /health/ready` every 250 ms "
        "(`fall 2 rise 2`), `retries 0` and no `option redispatch`, so every failure reaches the client; HAProxy "
        f"keeps its server connections alive. {CLIENTS} client threads send keep-alive GETs through HAProxy for the "
        f"whole run ({', '.join(CLIENT_PATHS)} in turn). {scale.rolling_rounds} round(s) of rolling restarts "
        f"({restarts} restarts): each instance in turn gets SIGTERM, its exit is awaited, a new one starts on the same "
        "port in a fresh cgroup, and HAProxy must show it UP before the next instance goes; "
        f"{BETWEEN_REQUESTS} answers come through before each restart and after the last. Failed = anything but a "
        "2xx: HAProxy's own 503 (no server would take the connection) or 502 (a server closed or reset it without "
        "an answer), or no HTTP answer at all (a connection error: HAProxy closes a kept-alive client's "
        "connection without an answer or a log line when a server resets a request that was not the connection's "
        "first, as a listen backlog reset does). SIGTERM to exit: until the old master exited; to UP: until HAProxy "
        "showed the replacement UP.",
        [
            "peer",
            "requests",
            "failed",
            "HAProxy 503",
            "HAProxy 502",
            "connection errors",
            "other",
            "failed per restart",
            "SIGTERM to exit median s",
            "max s",
            "SIGTERM to UP again median s",
            "OOM kills",
        ],
    )
    reason = haproxy_or_reason()
    target_text = f"fitflix: 0 failed requests through HAProxy over {restarts} rolling restarts"
    if reason is not None:
        part.notes.append(f"not run: {reason}")
        part.targets.append(Target(target_text, None, "HAProxy is not available"))
        return part
    failed_by_peer: dict[str, int] = {}
    per_restart: dict[str, list[int]] = {}
    for peer, kind, _command in commands:
        log.info("part 11: %s", peer)
        try:
            measured = drill(kind, scale.rolling_rounds, scale.rolling_time_limit_s)
        except Exception as error:
            log.exception("part 11: %s failed", peer)
            part.add(peer, f"failed: {str(error).splitlines()[0]}", *["-"] * 10)
            continue
        kinds = failure_kinds(measured.answers)
        failed = sum(kinds.values())
        failed_by_peer[peer] = failed
        per_restart[peer] = failed_per_restart(measured)
        connection_errors = sum(count for name, count in kinds.items() if name.startswith("connection error"))
        other = failed - kinds["HAProxy 503"] - kinds["HAProxy 502"] - connection_errors
        exits = measured.rounds.exit_s()
        ups = [restart.replace_s for restart in measured.rounds.restarts]
        part.add(
            peer,
            len(measured.answers),
            failed,
            kinds["HAProxy 503"],
            kinds["HAProxy 502"],
            connection_errors,
            other,
            f"{failed / len(measured.rounds.restarts):.1f}" if measured.rounds.restarts else "-",
            seconds(exits, statistics.median),
            seconds(exits, max),
            seconds(ups, statistics.median),
            measured.oom_kills,
        )
        part.notes.append(f"{peer}: {measured.rounds.summary()}")
        if connection_errors:
            errors = ", ".join(f"{name} x{count}" for name, count in kinds.items() if name.startswith("connection"))
            part.notes.append(f"{peer}: {errors}")
        if measured.terminations:
            states = ", ".join(f"{state} x{count}" for state, count in measured.terminations.most_common())
            part.notes.append(f"{peer}: HAProxy's 5xx by termination state: {states}")
    if per_restart:
        finding = "; ".join(f"{peer} {failed_by_peer[peer]:,} failed in all" for peer in per_restart)
        longest = max(len(counts) for counts in per_restart.values())
        part.pictures.append(
            plots.bars(
                "part11-rolling-restarts",
                f"Failed requests through HAProxy per rolling restart: {finding}",
                plots.Bars(
                    [f"restart {index}" for index in range(1, longest + 1)],
                    {peer: counts + [None] * (longest - len(counts)) for peer, counts in per_restart.items()},
                    "failed requests (from its SIGTERM to the next)",
                    horizontal=False,
                    digits=0,
                ),
                alt=f"Failed requests through HAProxy during each restart of a rolling restart, per peer: {finding}.",
            )
        )
    if "fitflix" in failed_by_peer:
        part.targets.append(Target(target_text, failed_by_peer["fitflix"] == 0, f"{failed_by_peer['fitflix']} failed"))
    else:
        part.targets.append(Target(target_text, None, "fitflix did not run"))
    return part
