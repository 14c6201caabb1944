"""The FitFlix log lines the parts count: the budget banner, each recycle, and how each replacement went.

Pure parsers of a server log's text (fitflix/serving/hooks.py's banner, recycler.py's recycle line,
surge.py's master lines), so the parts' tables say what the service itself reported.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from fitflix.serving.sizing import MIN_WORKER_LIFETIME_S

BUDGET_LINE = re.compile(r"Worker budget: (.+)")
PROFILE_CAP = re.compile(r"Memory profile: .*?\(recycle at (\d+) MB, cap (\d+) MB")
ABSOLUTE = re.compile(r"absolute (\d+) MB")
RELATIVE = re.compile(r"relative (\d+) MB \((\d+) x the app's (\d+) MB\)")
APPLIES = re.compile(r"(absolute|relative)(?: \d+ MB)? applies")
# recycler.py's WorkerRecycler.on_exit: one line per recycled worker; ` figures=SOURCE` only where the
# worker's figures did not come from /proc/self/statm (psutil, or getrusage-peak: the reader's source).
RECYCLE_LINE = re.compile(
    r"Recycling worker pid=(\d+) reason=([\w-]+) rss=([\d.]+)MB uss=([\d.]+)MB budget=(\d+)MB "
    r"threshold=([\d.]+)MB hard_cap=(\d+)MB requests=(\d+) age=([\d.]+)s(?: figures=([\w-]+))?"
)
# surge.py, in the master: asked, replaced first, retired without a replacement (no room), or the boot timed out.
REPLACING = re.compile(r"Replacing worker (\d+): its replacement boots first")
REPLACED = re.compile(r"Worker (\d+) serves; retiring worker (\d+)")
WITHOUT = re.compile(r"Retiring worker (\d+) without a replacement first: (.+)")
TIMED_OUT = re.compile(r"No replacement booted in [\d.]+ s; retiring worker (\d+) anyway")
# The master's overlap watch (fitflix.serving.monitor): the old worker retired before its replacement served,
# and the other workers holding new requests until it was gone.
RETIRED_EARLY = re.compile(r"Overlap: .*? while worker (\d+)'s replacement boots: retiring worker \d+ now")
HELD = re.compile(r"Overlap: .*? while worker (\d+) drains: the other workers hold new requests")


@dataclass(frozen=True)
class Budget:
    """The banner's 'Worker budget:' line: both budgets and which one applies."""

    text: str  # the line after 'Worker budget: '
    absolute_mb: int | None
    relative_mb: int | None  # None: off, or the app not measured yet
    multiple: int | None
    app_mb: int | None  # the app's size at start (the master's USS after preloading), as the banner rounds it
    applies: str | None  # "absolute" or "relative"

    @property
    def worker_budget_mb(self) -> int | None:
        return self.relative_mb if self.applies == "relative" else self.absolute_mb

    def short(self) -> str:
        """'relative 94 MB (3 x 31 MB)' or 'absolute 19,236 MB': the budget that applies."""
        if self.applies == "relative" and self.relative_mb is not None:
            return f"relative {self.relative_mb:,} MB ({self.multiple} x {self.app_mb} MB)"
        return f"absolute {self.absolute_mb:,} MB" if self.absolute_mb is not None else self.text


def parse_budget(log_text: str) -> Budget | None:
    """The first 'Worker budget:' line of a log (the boot's), or None."""
    match = BUDGET_LINE.search(log_text)
    if match is None:
        return None
    text = match.group(1).strip()
    absolute, relative, applies = ABSOLUTE.search(text), RELATIVE.search(text), APPLIES.search(text)
    return Budget(
        text,
        int(absolute.group(1)) if absolute else None,
        int(relative.group(1)) if relative else None,
        int(relative.group(2)) if relative else None,
        int(relative.group(3)) if relative else None,
        applies.group(1) if applies else None,
    )


def parse_hard_cap_mb(log_text: str) -> int | None:
    """The worker's hard cap from the banner's 'Memory profile:' line ('recycle at 69 MB, cap 21646 MB'), or None."""
    match = PROFILE_CAP.search(log_text)
    return int(match.group(2)) if match else None


@dataclass(frozen=True)
class Recycle:
    """One worker's 'Recycling worker' line (fitflix/serving/recycler.py, WorkerRecycler.on_exit).

    `reason`: memory, backstop, timeout, max_requests or guard. The figures are the worker's when the
    decision was made; `figures` is None where they came from /proc/self/statm, else the reader's
    source ('psutil', 'getrusage-peak').
    """

    pid: int
    reason: str
    rss_mb: float
    uss_mb: float
    budget_mb: int
    threshold_mb: float
    hard_cap_mb: int
    requests: int
    age_s: float
    figures: str | None = None


def parse_recycles(log_text: str, reason: str | None = None) -> list[Recycle]:
    """Every 'Recycling worker' line of a log (only those for `reason`, if given), in log order."""
    recycles = [
        Recycle(
            int(match.group(1)),
            match.group(2),
            float(match.group(3)),
            float(match.group(4)),
            int(match.group(5)),
            float(match.group(6)),
            int(match.group(7)),
            int(match.group(8)),
            float(match.group(9)),
            match.group(10),
        )
        for match in RECYCLE_LINE.finditer(log_text)
    ]
    return [recycle for recycle in recycles if reason is None or recycle.reason == reason]


def recycle_summary(recycles: list[Recycle], min_lifetime_s: float = MIN_WORKER_LIFETIME_S) -> str:
    """'45 recycles (memory x45), median age 0.4 s, 45 younger than 2 s': how old workers were when they left
    (the minimum lifetime holds back only a worker born near its threshold, fitflix.serving.recycle)."""
    if not recycles:
        return "0 recycles"
    reasons: dict[str, int] = {}
    for recycle in recycles:
        reasons[recycle.reason] = reasons.get(recycle.reason, 0) + 1
    young = sum(1 for recycle in recycles if recycle.age_s < min_lifetime_s)
    return (
        f"{len(recycles)} recycle{'s' if len(recycles) != 1 else ''} "
        f"({', '.join(f'{reason} x{count}' for reason, count in reasons.items())}), median age "
        f"{statistics.median(recycle.age_s for recycle in recycles):.1f} s, {young} younger than {min_lifetime_s:g} s"
    )


@dataclass(frozen=True)
class SurgeCounts:
    """How the master handled the recycles it was asked for (surge.py's lines)."""

    asked: int  # 'Replacing worker OLD: its replacement boots first'
    replaced: int  # 'Worker NEW serves; retiring worker OLD': the replacement served first
    without: int  # 'Retiring worker OLD without a replacement first': no room for one more worker
    timed_out: int  # 'No replacement booted in 30 s; retiring worker OLD anyway'
    retired_early: int = 0  # the overlap watch retired the old worker before its replacement served
    held: int = 0  # the overlap watch held the other workers' new requests until the old worker was gone

    def text(self) -> str:
        """'49 replaced first, 0 without a replacement' (timeouts and the watch's actions only when there are some)."""
        text = f"{self.replaced} replaced first, {self.without} without a replacement"
        text += f", {self.timed_out} replacement boots timed out" if self.timed_out else ""
        text += f", {self.retired_early} retired early by the overlap watch" if self.retired_early else ""
        return text + (f", {self.held} held by the overlap watch" if self.held else "")


def surge_counts(log_text: str) -> SurgeCounts:
    return SurgeCounts(
        len(REPLACING.findall(log_text)),
        len(REPLACED.findall(log_text)),
        len(WITHOUT.findall(log_text)),
        len(TIMED_OUT.findall(log_text)),
        len(RETIRED_EARLY.findall(log_text)),
        len(HELD.findall(log_text)),
    )


def without_reasons(log_text: str) -> list[str]:
    """Why each recycle went without a replacement first (the master's words)."""
    return [match.group(2).strip() for match in WITHOUT.finditer(log_text)]
