"""SIGTERM in the master: stop being ready, keep serving while balancers notice, then gunicorn's stop.

gunicorn closes its listening sockets the moment SIGTERM arrives, so requests
already on their way to this instance are refused before any balancer or
Kubernetes (which removes a terminating pod from its endpoints seconds after
the SIGTERM) can notice. `Drain` replaces the arbiter's `handle_term`:

1. at once, every worker's `/health/ready` answers 503 "draining" (a flag in
   the shared state) and the service keeps accepting and serving;
2. after DRAIN_S seconds, a SIGTERM put on the arbiter's own signal queue runs
   `handle_term` again, which now stops as gunicorn does: listeners closed,
   workers sent SIGTERM, in-flight requests given the graceful timeout. Each
   worker first accepts what waits in the listen backlog
   (`HeadFirstWorker.set_accept_enabled`), so nothing queued is reset.

DRAIN_S=0 stops at once. A second SIGTERM while draining changes nothing;
SIGINT and SIGQUIT are gunicorn's own fast shutdown, draining or not.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


class Drain:
    def __init__(self, server, drain_s: Callable[[], int], shared) -> None:
        """`drain_s` is read when SIGTERM comes: a SIGHUP may have changed DRAIN_S since the start."""
        self.server = server
        self.drain_s = drain_s
        self.shared = shared
        self.timer: threading.Timer | None = None
        self.drained = False

    def handle_term(self) -> None:
        """The arbiter's SIGTERM handler (it runs on the arbiter's main loop, never in a signal handler)."""
        drain_s = self.drain_s()
        if self.shared is not None:
            self.shared.set_draining()  # also tells the workers to take the listen backlog when they stop
        if self.drained or drain_s <= 0:
            raise StopIteration  # what gunicorn's own handle_term does: the arbiter halts
        if self.timer is not None:
            self.server.log.info("Already draining: the service stops when the drain ends")
            return
        self.server.log.info(
            "Draining: /health/ready answers 503 and the service keeps serving for %s s (DRAIN_S), "
            "then stops accepting and gives in-flight requests %s s",
            drain_s,
            self.server.cfg.graceful_timeout,
        )
        self.timer = threading.Timer(drain_s, self.end)
        self.timer.daemon = True
        self.timer.start()

    def end(self) -> None:
        """Timer thread: hand the stop back to the arbiter's loop, as a SIGTERM of its own."""
        self.drained = True
        self.server.SIG_QUEUE.put_nowait(signal.SIGTERM)
