"""The bench's own bookkeeping of the servers it starts (no servers needed)."""

from __future__ import annotations

from bench import servers


class Stoppable:
    def __init__(self) -> None:
        self.stops = 0

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
