"""The bench's own bookkeeping of the servers it starts (no servers needed)."""

from __future__ import annotations

from bench import servers


class Stoppable:
    """Stands for a Running peer: its stops counted; `cgroup` None (v1 or none) unless a test gives one."""

    def __init__(self, cgroup=None) -> None:
        self.stops = 0
        self.cgroup = cgroup
        self.peer = servers.Peer("fitflix", "fitflix")

    def stop(self) -> None:
        self.stops += 1


def test_a_peer_stopped_by_ctrl_c_is_not_stopped_again_on_the_way_out():
    """Ctrl-C stops every server from its handler; `serving`'s own exit must then leave it alone (a second
    stop read the cgroup the first had removed, and its error swallowed the exit)."""
    running = Stoppable()
    servers._running.append(running)
    servers.stop_everything()  # the signal handler
    servers._stop(running)  # `serving`'s finally, as the SystemExit goes through it
    assert running.stops == 1
    assert running not in servers._running


class V2Cgroup:
    version = 2

    def events(self) -> dict[str, int]:
        return {"oom_kill": 0, "oom_group_kill": 0, "max": 4}

    def pressure(self):
        return None


def test_stopping_a_peer_on_v2_keeps_its_memory_events_for_the_v2_parts():
    servers.V2_READINGS.clear()
    running = Stoppable(V2Cgroup())
    servers._running.append(running)

    servers._stop(running)

    assert running.stops == 1
    assert servers.V2_READINGS == [("fitflix", {"oom_kill": 0, "oom_group_kill": 0, "max": 4}, None)]
    servers.V2_READINGS.clear()
