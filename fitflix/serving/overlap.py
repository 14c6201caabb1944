"""The overlap of replace-then-retire, as pure decisions: what it will cost, and what to do past that.

Replace, then retire (`surge.py`) keeps two workers alive for a while where
there was one: while the replacement boots, the old worker serves on and grows
at the rate it grew; once the replacement serves it takes the old worker's
load and grows about as fast, while the old worker finishes what it has and
exits. A fresh worker is not 16 MB for long under a leak of small Python
objects: at about 180 MB a second (1 MB of dicts a request, 4 clients), old
plus new plus master passed 512 MB within a second of every handover, and
the kernel's OOM killer acted (issue 32).

So the master:

1. admits a replacement only when the forecast of the whole overlap fits
   under the critical level (`forecast`): usage now, the old worker's growth
   while its replacement boots, a fresh worker, the replacement's growth while
   the old one drains and exits (both at the rate the old worker says it grew,
   or the container's, whichever is faster), and the old worker's requests in
   flight; otherwise the old worker retires first, as gunicorn does it;
2. watches the overlap it admitted, every `WATCH_INTERVAL_S`, on the cheapest
   figure there is (the cgroup's usage), and acts before the critical level
   (`OverlapWatch`): while the replacement still boots, the old worker retires
   at once (it stops taking requests); once it is retiring, every other worker
   holds new requests until it is gone (they wait, none is refused), and the old
   worker leaves without its report of what grew.

The forecast keeps replace-first where it fits; the watch is what makes the
promise hold where a forecast was wrong: a slow request keeping the old worker,
a leak that speeds up, a host slower than the last boot said.
"""

from __future__ import annotations

from dataclasses import dataclass

from fitflix.memory.container import MIB, format_mb

# How often the master looks at the container's usage while two workers overlap: a cgroup read costs
# tens of microseconds, and an overlap lasts a fraction of a second (a few a minute at most).
WATCH_INTERVAL_S = 0.02
# From the watch's look to its action taking hold: the look's own period, a signal, and the next request
# boundary in the workers (a request past pre_request runs to its end: `in flight`, counted apart).
REACTION_S = 0.05
# The watch's own rate spans at least this long: from one look to the next it is noise.
RATE_SPAN_S = 0.1
# The least the watch keeps between usage and the critical level, whatever the rates say.
MIN_MARGIN_BYTES = 4 * MIB
# What the old worker's drain and exit take before the first handover is measured: its last answers
# and an os._exit (32 ms for a 385 MB heap of small objects, against 416 ms for a full interpreter
# teardown: `python -m bench.exit_cost`). Measured here, one worker under the small-object leak at a
# whole CPU: 0.13-0.17 s (SIGTERM to reaped, its report left out). Too low a figure costs a hold, never
# an OOM kill: the watch catches what the forecast missed.
DEFAULT_HANDOVER_S = 0.15
# What a replacement's boot takes before one is measured, over the last boot a worker published (fork to
# ready, where it ran): the replacement boots beside a worker that keeps serving, and the master's loop
# must notice it. Measured here: 10-20 ms from spawn to serving, at a whole CPU.
BOOT_CONTENTION = 2.0
MIN_BOOT_S = 0.02
# The forecast uses the slowest of this many measured boots and handovers, each for this long.
TIMINGS_KEPT = 4
TIMINGS_TTL_S = 60.0

RETIRE_NOW, HOLD, RELEASE = "retire-now", "hold", "release"


@dataclass(frozen=True)
class Forecast:
    """The whole overlap's peak, part by part, against the critical level."""

    used_bytes: int
    old_growth_bytes: float  # the old worker, serving on while its replacement boots
    fresh_bytes: int  # the replacement as it boots
    new_growth_bytes: float  # the replacement, serving while the old worker drains and exits
    in_flight_bytes: float  # the old worker's requests in flight when it is retired
    critical_bytes: int
    rate_bytes_per_s: float
    boot_s: float
    handover_s: float

    @property
    def peak_bytes(self) -> float:
        return self.used_bytes + self.old_growth_bytes + self.fresh_bytes + self.new_growth_bytes + self.in_flight_bytes

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.critical_bytes

    def text(self) -> str:
        """For the master's log line: each part, so a refusal says what did not fit."""
        return (
            f"{format_mb(self.used_bytes)}MB used + {format_mb(self.fresh_bytes)}MB for a fresh worker + "
            f"{format_mb(self.old_growth_bytes + self.new_growth_bytes)}MB of growth at "
            f"{format_mb(self.rate_bytes_per_s)}MB/s over a {self.boot_s:.2f}s boot and a "
            f"{self.handover_s:.2f}s handover + {format_mb(self.in_flight_bytes)}MB in flight = "
            f"{format_mb(self.peak_bytes)}MB, {'within' if self.fits else 'past'} the critical level of "
            f"{format_mb(self.critical_bytes)}MB"
        )


def forecast(
    used_bytes: int,
    rate_bytes_per_s: float,
    per_request_bytes: float,
    threads: int,
    fresh_bytes: int,
    boot_s: float,
    handover_s: float,
    critical_bytes: int,
) -> Forecast:
    """The overlap's peak if the replacement is started now (`threads`: the old worker's requests in flight)."""
    rate = max(rate_bytes_per_s, 0.0)
    return Forecast(
        used_bytes=used_bytes,
        old_growth_bytes=rate * boot_s,
        fresh_bytes=fresh_bytes,
        new_growth_bytes=rate * handover_s,
        in_flight_bytes=max(per_request_bytes, 0.0) * max(threads, 1),
        critical_bytes=critical_bytes,
        rate_bytes_per_s=rate,
        boot_s=boot_s,
        handover_s=handover_s,
    )


def margin_bytes(rate_bytes_per_s: float, per_request_bytes: float, threads: int) -> int:
    """How far below the critical level the watch acts: what can still come before its action takes hold."""
    return max(
        MIN_MARGIN_BYTES, int(max(rate_bytes_per_s, 0.0) * REACTION_S + max(per_request_bytes, 0.0) * max(threads, 1))
    )


def expected_s(measured: list[tuple[float, float]], now: float, default_s: float) -> float:
    """The slowest of the last (when, seconds) measurements not older than TIMINGS_TTL_S, else the default."""
    recent = [seconds for when, seconds in measured[-TIMINGS_KEPT:] if now - when <= TIMINGS_TTL_S]
    return max(recent) if recent else default_s


def rate_between(earlier: tuple[float, int] | None, later: tuple[float, int], min_span_s: float = 0.2) -> float | None:
    """Bytes a second from (monotonic, bytes) samples; None when they are too close to say (or in the wrong order)."""
    if earlier is None or later[0] - earlier[0] < min_span_s:
        return None
    return max(later[1] - earlier[1], 0) / (later[0] - earlier[0])


class OverlapWatch:
    """One overlap: from the replacement's spawn until the old worker is reaped. Pure: it is told the usage.

    `step` says what to do on each look: RETIRE_NOW (the old worker is still
    serving and the critical level is near: stop it taking requests), HOLD
    (the old worker is retiring and the level is near: the others hold new
    requests until it is gone), RELEASE (usage fell back, or the overlap is
    over), or None.
    """

    def __init__(
        self,
        old_pid: int,
        critical_bytes: int,
        fresh_bytes: int,
        rate_bytes_per_s: float,
        per_request_bytes: float,
        threads: int,
    ) -> None:
        self.old_pid = old_pid
        self.critical_bytes = critical_bytes
        self.fresh_bytes = fresh_bytes
        self.rate_bytes_per_s = rate_bytes_per_s
        self.per_request_bytes = per_request_bytes
        self.threads = threads
        self.holding = False
        self.holds = 0
        self.peak_bytes = 0
        self._last: tuple[float, int] | None = None

    def level_bytes(self) -> int:
        """Where the watch acts: the critical level less what can still come after it acts."""
        return self.critical_bytes - margin_bytes(self.rate_bytes_per_s, self.per_request_bytes, self.threads)

    def observe_rate(self, now: float, used_bytes: int) -> None:
        """The usage's own growth, seen over the watch's looks: it raises the rate the margin allows for."""
        sample = (now, used_bytes)
        rate = rate_between(self._last, sample, min_span_s=RATE_SPAN_S)
        if rate is not None:
            self.rate_bytes_per_s = max(self.rate_bytes_per_s, rate)
            self._last = sample
        elif self._last is None:
            self._last = sample

    def step(
        self, now: float, used_bytes: int, booting: bool, retiring: bool, usage_bytes: int | None = None
    ) -> str | None:
        """`booting`: the replacement has not served yet; `retiring`: the old worker takes no more requests.

        `used_bytes` is the working set, or the cgroup's usage where that is below the level (`needs_working_set`);
        `usage_bytes`, the usage read at every look, is what the rate is measured on (one kind of figure from the
        first look to the last: the working set is below the usage by the inactive page cache).
        """
        self.peak_bytes = max(self.peak_bytes, used_bytes)
        self.observe_rate(now, used_bytes if usage_bytes is None else usage_bytes)
        level = self.level_bytes()
        coming = self.coming_bytes(used_bytes, booting)
        if not retiring:
            if coming >= level:
                return RETIRE_NOW  # asked again on the next look, a no-op: the surge retires once
            return None
        # The old worker takes no more requests; what grows now is every other worker.
        if not self.holding and coming >= level:
            self.holding = True
            self.holds += 1
            return HOLD
        if self.holding and coming < level - margin_bytes(self.rate_bytes_per_s, 0, 1):
            self.holding = False
            return RELEASE
        return None

    def coming_bytes(self, used_bytes: int, booting: bool) -> int:
        """What the watch judges: usage now, and a booting replacement's own memory, which is still to come."""
        return used_bytes + (self.fresh_bytes if booting else 0)

    def needs_working_set(self, usage_bytes: int, booting: bool) -> bool:
        """Whether a look must read the working set: the usage (page cache in it, so never below the working
        set) says everything while it and what is to come stay below the level, where nothing is done."""
        return self.coming_bytes(usage_bytes, booting) >= self.level_bytes()

    def room_bytes(self, used_bytes: int) -> int:
        """What is left below the critical level (what the old worker's report may take, at most)."""
        return self.critical_bytes - used_bytes
