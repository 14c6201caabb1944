"""Replace, then retire, with real gunicorn: the replacement serves while the old worker finishes.

The old worker is held in its drain by a slow request of its own, so each
test can look at the moment a plain recycle leaves the service without a
worker, and send signals while a replacement is under way.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from harness.fitflix_log import parse_recycles
from harness.load import run_load
from harness.wait import poll_until

SERVICE = "harness.apps.service_with_leaks:app"  # the FitFlix app, /health/memory included, and the leaky routes
SLOW_MS = 2500


class Slow(threading.Thread):
    """One slow request on a connection of its own: (status, pid, when it ended)."""

    def __init__(self, server, ms: int = SLOW_MS) -> None:
        super().__init__(daemon=True)
        self.server, self.ms = server, ms
        self.result: tuple[int, int, float] | None = None

    def run(self) -> None:
        status, _headers, body = self.server.request("GET", f"/sleep?ms={self.ms}", timeout_s=30)
        self.result = (status, json.loads(body)["pid"], time.monotonic())


def answer(server) -> tuple[int, int, int, float]:
    """(status, pid, sleeps in flight in that worker, when it ended) of one quick request, fresh connection."""
    status, _headers, body = server.request("GET", "/pid", timeout_s=30)
    document = json.loads(body)
    return status, document["pid"], document["sleeping"], time.monotonic()


def start_slow(server) -> tuple[int, Slow]:
    """A slow request in flight in the (only) worker, which MAX_REQUESTS=5 then recycles within a few requests."""
    slow = Slow(server)
    slow.start()
    status, pid, _sleeping, _ended = poll_until(
        lambda: (lambda a: a if a[2] == 1 else None)(answer(server)), 10, "the slow request in flight"
    )
    assert status == 200
    return pid, slow


def first_other_answer(server, old_pid: int, timeout_s: float = 10.0) -> tuple[int, int, float]:
    """Quick requests, one after another, until a worker other than `old_pid` answers: (status, pid, ended)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, pid, _sleeping, ended = answer(server)
        if pid != old_pid:
            return status, pid, ended
    pytest.fail(f"worker {old_pid} still answered after {timeout_s:.0f} s of requests (MAX_REQUESTS=5)")


def until_retiring(server, old_pid: int) -> None:
    """Quick requests until the master says it retires `old_pid` (its replacement serves)."""
    deadline = time.monotonic() + 10
    while f"retiring worker {old_pid}" not in server.log():
        if time.monotonic() > deadline:
            pytest.fail(f"the master did not retire worker {old_pid} in 10 s of requests:\n{server.log()[-3000:]}")
        assert answer(server)[0] == 200


def env(**extra: str) -> dict[str, str]:
    return {"MAX_REQUESTS": "5", "MAX_REQUESTS_JITTER": "0", "DRAIN_S": "0", **extra}


def test_a_recycled_worker_hands_over_before_it_leaves_so_new_requests_never_wait_for_its_drain(live_server):
    server = live_server(env(), app=SERVICE)
    old_pid, slow = start_slow(server)
    # The old worker reaches MAX_REQUESTS and drains its slow request; the replacement answers meanwhile.
    status, pid, ended = first_other_answer(server, old_pid)
    slow.join(30)
    assert slow.result is not None
    slow_status, slow_pid, slow_ended = slow.result
    assert (status, slow_status, slow_pid) == (200, 200, old_pid)
    assert ended < slow_ended, "the new request waited for the old worker's drain"
    log = poll_until(
        lambda: (lambda text: text if f"pid={old_pid} reason=max_requests" in text else None)(server.log()),
        10,
        "the old worker's recycle line",
    )
    assert log.index(f"Worker {pid} serves; retiring worker {old_pid}") < log.index(f"Recycling worker pid={old_pid}")


def test_without_replace_first_new_requests_wait_for_the_old_workers_drain(live_server):
    """The contrast: RECYCLE_REPLACE_FIRST=false is gunicorn's own order, and the test above would fail on it."""
    server = live_server(env(RECYCLE_REPLACE_FIRST="false"), app=SERVICE)
    old_pid, slow = start_slow(server)
    status, pid, ended = first_other_answer(server, old_pid)
    slow.join(30)
    assert slow.result is not None and status == 200 and pid != old_pid
    assert ended > slow.result[2], "with no replacement first, nothing else could have answered"
    assert "retiring worker" not in server.log()


def test_replace_first_under_steady_load_fails_nothing_and_keeps_the_planned_count(live_server):
    server = live_server({"MAX_REQUESTS": "40", "MAX_REQUESTS_JITTER": "0", "WEB_CONCURRENCY": "2"}, app=SERVICE)

    # A worker serves on while its replacement boots: with FitFlix's own worker that is up to a thousand
    # quick requests, so a fixed count may end before three recycles. Load in rounds of 300 until three
    # have left (bounded by the deadline), every answer a 200.
    def three_have_left() -> bool:
        result = run_load(server.port, "/pid", requests=300, clients=4, time_limit_s=30)
        assert result.statuses == {200: 300}
        return len(parse_recycles(server.log())) >= 3

    poll_until(three_have_left, 60, "three recycles under steady load")

    def settled():  # the process figures may be up to 1 s old (the probe's cache)
        clustering = server.get_json("/health/memory")[1]["clustering"]
        return clustering["replacingWorker"] is None and clustering["workers"] == 2 and clustering

    assert poll_until(settled, 15, "the last replacement to end")["plannedWorkers"] == 2
    log = server.log()
    recycled = [recycle.pid for recycle in parse_recycles(log)]
    assert len(recycled) >= 3, log[-3000:]
    for pid in recycled:  # each one left after its replacement served, none before
        assert log.index(f"retiring worker {pid}\n") < log.index(f"Recycling worker pid={pid} ")
    assert "Plan: " not in log.split("Worker budget:", 1)[1], "the surge's extra worker moved the plan"


@pytest.mark.parametrize(
    ("signum", "workers", "expected"),
    [(signal.SIGTTIN, "1", 2), (signal.SIGTTOU, "2", 1), (signal.SIGHUP, "1", 1)],
    ids=["TTIN", "TTOU", "HUP"],
)
def test_a_signal_while_the_old_worker_drains_ends_with_the_count_it_asks_for(live_server, signum, workers, expected):
    server = live_server(env(WEB_CONCURRENCY=workers, MAX_REQUESTS="8"), app=SERVICE)
    old_pid, slow = start_slow(server)
    until_retiring(server, old_pid)
    server.process.send_signal(signum)
    slow.join(30)
    assert slow.result is not None and slow.result[:2] == (200, old_pid)
    # No requests while it settles (each would count toward MAX_REQUESTS): the master's children.
    pids = poll_until(
        lambda: (lambda found: found if len(found) == expected and old_pid not in found else None)(
            server.worker_pids()
        ),
        20,
        f"{expected} worker process(es), the old one gone",
    )
    status, document = server.get_json("/health/memory")
    assert status == 200 and document["clustering"]["plannedWorkers"] == expected
    assert server.worker_pids() == pids, "a worker came or went after the count settled"


def test_sigterm_while_the_old_worker_drains_stops_cleanly_and_its_request_completes(live_server):
    server = live_server(env(), app=SERVICE)
    old_pid, slow = start_slow(server)
    until_retiring(server, old_pid)
    assert server.stop() == 0
    slow.join(30)
    assert slow.result is not None and slow.result[:2] == (200, old_pid)
