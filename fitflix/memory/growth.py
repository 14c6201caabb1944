"""What grew in a worker recycled for memory: allocation sites, types, and the share Python holds.

`GrowthWatch` lives in one worker. At boot it takes a type census of the
objects the worker made; once the worker's USS passes `ARM_FRACTION` of its
recycle threshold, `maybe_arm` starts `tracemalloc` with one frame; when the
worker is recycled, `report` names the allocation sites still alive, the types
that grew, and how much of the USS growth Python objects account for. The
rest is native memory (C extensions, glibc) or fragmentation: pymalloc arenas
and malloc heap held by a few live blocks.

The census only walks what `gc.get_objects()` returns. The gunicorn master
calls `gc.freeze()` before each fork, so in a worker that is the objects the
worker made, plus the untracked objects (str, bytes, int, float) those point
at. Frozen objects are never walked, at boot or at report: touching them writes
their refcounts and unshares copy-on-write pages. What that misses: items
added after fork to a container made before it (a module-level list or dict
cache) are seen only when they are containers themselves; the str or bytes
appended to a frozen list are not. Nor is a dict that holds only str, bytes
or numbers, wherever it was made: CPython's gc does not track such a dict, so
nothing tracked leads to it (a module-level `{str: str}` cache of 148 MB
showed as `str +1372`, BENCHMARKS.md part 17). tracemalloc's sites cover
those cases, as they cover every allocation made while tracing.

Untracked referents are found with `gc.get_referents`, and the str keys of
dicts (which gc does not visit) by walking the keys. Each untracked object is
counted once: one that a single container holds is met once, so only those
with more holders go through a set of ids. `gc.get_referents` does increment
the refcount of each referent it returns, frozen ones included (the types and
module-level objects the worker's objects point at): the same writes a
request makes when it uses those objects.

Costs, measured on Python 3.11: the boot census of a frozen worker (68 objects)
takes 0.2 ms and adds 256 KiB to the forked worker's USS the first time (its
code warming up; 24 KiB a second time); with 100,000 unfrozen objects it takes
about 110 ms (0.4-1 us an object). `maybe_arm` when not arming costs about
100 ns a call. A report of 40,000 live blocks takes about 0.2 s.

Reports name files (relative, see `relative_where`) and type names, never
values: tracemalloc gives file:line only, and the census counts by type.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

_MIB = 1024 * 1024

# Tracing starts at this share of the recycle threshold. Tracing is dear even
# with one frame (measured, Python 3.11): a Flask JSON request 5.5x slower
# (1,000 test-client GETs, 159 -> 879 ms), json.dumps of a 50-key dict 12-17x, and
# about 53 bytes of tracemalloc's own a live block, which count in the USS.
# From 0.75 a steadily leaking worker would spend a quarter of its life traced
# (about 2x its CPU over that life); from 0.9 a tenth (about 1.45x). The last
# tenth still holds tens of MB of a leak's blocks, enough to rank its line first.
ARM_FRACTION = 0.9

# The verdict is "native" when what Python does not account for is at least
# this share of the USS growth since tracing began, and at least this much.
NATIVE_SHARE_PERCENT = 50.0
NATIVE_MIN_BYTES = 4 * _MIB

# take_snapshot copies every trace into Python tuples and grouping them by
# line takes about 3 us a block; neither can be cut short. Measured: 0.39 s and
# +7.5 MiB peak RSS at 100,000 live blocks (tracemalloc held ~5 MiB), 1.2 s and
# +67 MiB at 400,000 (20 MiB): up to 3.3x tracemalloc's own memory, in a worker
# already near its limit. 8 MiB (about 130,000 live blocks since arming) keeps
# the snapshot near 0.5 s and 10-25 MiB; a caller that knows its room can pass
# a quarter of it instead. Above the cap the report keeps its other figures.
DEFAULT_MAX_TRACEMALLOC_BYTES = 8 * _MIB
# The report's whole budget: gunicorn gives an exiting worker `graceful_timeout` (30 s by default).
DEFAULT_REPORT_TIME_LIMIT_S = 1.0
# The boot census must not delay the worker's first request.
DEFAULT_BOOT_TIME_LIMIT_S = 0.25
# Bounds the census's working set (the referent lists and the set of shared ids).
MAX_CENSUS_OBJECTS = 2_000_000

TOP_SITES = 5
TOP_TYPES = 5

# The service keeps the last reports in shared memory as JSON: `GrowthReport.as_dict()`
# never serialises to more than this (json.dumps, ASCII; UTF-8 output is never longer).
MAX_REPORT_JSON_BYTES = 2000
# One log line stays under this.
MAX_LINE_CHARS = 600
_MAX_WHERE_CHARS = 64
_MAX_TYPE_CHARS = 56
_MAX_REASON_CHARS = 40
_MAX_NOTE_CHARS = 110
_MAX_NOTES = 3
_CENSUS_CHECK_EVERY = 1024  # objects between two looks at the clock
# gc.get_objects() holds a pointer an object; pymalloc's blocks are the objects' upper bound (untracked included).
CENSUS_LIST_BYTES_PER_BLOCK = 8


@dataclass(frozen=True)
class Site:
    """One allocation line with blocks still alive."""

    where: str  # file:line, relative (see relative_where)
    kb: float
    count: int


@dataclass(frozen=True)
class TypeGrowth:
    type_name: str  # builtins by name, others as module.qualname
    count_growth: int
    kb_growth: float


@dataclass(frozen=True, slots=True)
class Census:
    """Count and approximate size (sys.getsizeof) of the unfrozen objects, by type name."""

    counts: dict[str, int]
    sizes_bytes: dict[str, int]
    objects_seen: int
    shared_seen: int  # untracked objects with more than one holder, deduplicated through a set of ids
    cut_short: bool  # stopped at the time limit or the object limit: the figures are low
    elapsed_s: float


# What a census of a freshly forked worker finds: gunicorn's master froze its whole heap before the
# fork (hooks.pre_fork: gc.freeze), and a census never walks frozen objects.
FORK_CENSUS = Census({}, {}, 0, 0, False, 0.0)


@dataclass(frozen=True)
class GrowthReport:
    """What one worker's report found; `as_dict` is its JSON, `line` its log line."""

    pid: int
    reason: str
    uss_bytes: int
    uss_at_boot_bytes: int
    uss_at_arm_bytes: int | None  # None: tracing never began (see `unavailable`)
    armed_after_s: float | None
    traced_bytes: int | None  # what tracemalloc traces now, less what it traced at arming
    tracing_overhead_bytes: int | None  # tracemalloc's own memory grown since arming (it is in the USS too)
    python_share_percent: float | None  # traced_bytes over the USS growth since arming, at most 100
    unaccounted_bytes: int | None  # USS growth since arming less traced bytes and tracing overhead
    verdict: str  # "python" | "native" | "unknown"
    sites: tuple[Site, ...]
    types: tuple[TypeGrowth, ...]
    census_cut_short: bool
    snapshot_blocks: int | None  # traces the snapshot copied; None when no snapshot was taken
    report_ms: float
    report_cpu_ms: float
    notes: tuple[str, ...] = ()
    unavailable: tuple[tuple[str, str], ...] = ()  # (JSON name of a figure or group, why it is None or empty)

    @property
    def growth_since_boot_bytes(self) -> int:
        return self.uss_bytes - self.uss_at_boot_bytes

    @property
    def growth_since_arm_bytes(self) -> int | None:
        return None if self.uss_at_arm_bytes is None else self.uss_bytes - self.uss_at_arm_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; its json.dumps is at most MAX_REPORT_JSON_BYTES long whatever the fields hold."""
        sites = [{"where": _clip_left(s.where, _MAX_WHERE_CHARS), "kb": s.kb, "count": s.count} for s in self.sites]
        types = [
            {"type": _clip_left(t.type_name, _MAX_TYPE_CHARS), "countGrowth": t.count_growth, "kbGrowth": t.kb_growth}
            for t in self.types
        ]
        notes = [_clip_right(note, _MAX_NOTE_CHARS) for note in self.notes[:_MAX_NOTES]]
        unavailable = {
            _clip_right(name, 24): _clip_right(why, _MAX_NOTE_CHARS) for name, why in self.unavailable[:_MAX_NOTES]
        }
        document = {
            "pid": self.pid,
            "reason": _clip_right(self.reason, _MAX_REASON_CHARS),
            "ussBytes": self.uss_bytes,
            "ussAtBootBytes": self.uss_at_boot_bytes,
            "ussAtArmBytes": self.uss_at_arm_bytes,
            "growthSinceBootBytes": self.growth_since_boot_bytes,
            "growthSinceArmBytes": self.growth_since_arm_bytes,
            "armedAfterS": self.armed_after_s,
            "tracedBytes": self.traced_bytes,
            "tracingOverheadBytes": self.tracing_overhead_bytes,
            "pythonSharePercent": self.python_share_percent,
            "unaccountedBytes": self.unaccounted_bytes,
            "verdict": self.verdict,
            "sites": sites[:TOP_SITES],
            "types": types[:TOP_TYPES],
            "censusCutShort": self.census_cut_short,
            "snapshotBlocks": self.snapshot_blocks,
            "reportMs": self.report_ms,
            "reportCpuMs": self.report_cpu_ms,
            "notes": notes,
            "unavailable": unavailable,
        }
        # The clips above keep a report within the bound; this is the guarantee for any field values.
        # What goes first is what says least: notes, then the smallest types and sites.
        while len(json.dumps(document)) > MAX_REPORT_JSON_BYTES:
            for key in ("notes", "types", "sites"):
                if document[key]:
                    document[key].pop()
                    break
            else:
                document["reason"] = document["reason"][:8]
                document["unavailable"] = {}
                break
        return document

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> GrowthReport:
        """Read back what `as_dict` wrote (the service's shared-memory copy)."""
        return cls(
            pid=document["pid"],
            reason=document["reason"],
            uss_bytes=document["ussBytes"],
            uss_at_boot_bytes=document["ussAtBootBytes"],
            uss_at_arm_bytes=document["ussAtArmBytes"],
            armed_after_s=document["armedAfterS"],
            traced_bytes=document["tracedBytes"],
            tracing_overhead_bytes=document["tracingOverheadBytes"],
            python_share_percent=document["pythonSharePercent"],
            unaccounted_bytes=document["unaccountedBytes"],
            verdict=document["verdict"],
            sites=tuple(Site(s["where"], s["kb"], s["count"]) for s in document["sites"]),
            types=tuple(TypeGrowth(t["type"], t["countGrowth"], t["kbGrowth"]) for t in document["types"]),
            census_cut_short=document["censusCutShort"],
            snapshot_blocks=document["snapshotBlocks"],
            report_ms=document["reportMs"],
            report_cpu_ms=document["reportCpuMs"],
            notes=tuple(document["notes"]),
            unavailable=tuple(document["unavailable"].items()),
        )

    def line(self) -> str:
        """One log line, at most MAX_LINE_CHARS long."""
        parts = [f"uss {_mb(self.uss_bytes)}, {_mb(self.growth_since_boot_bytes, signed=True)} since boot"]
        since_arm = self.growth_since_arm_bytes
        if since_arm is not None and self.uss_at_arm_bytes is not None:
            parts[0] += f", {_mb(since_arm, signed=True)} since tracing began at {_mb(self.uss_at_arm_bytes)}"
        sections = [f"What grew in worker {self.pid} ({_clip_right(self.reason, _MAX_REASON_CHARS)}): {parts[0]}"]
        unavailable = dict(self.unavailable)
        if self.traced_bytes is None:
            sections.append(unavailable.get("tracing", "no tracemalloc figures"))
        else:
            share = "" if self.python_share_percent is None else f" ({self.python_share_percent:.0f}%)"
            sections.append(f"Python holds {_mb(self.traced_bytes)} of that{share}")
            if self.verdict == "native" and self.unaccounted_bytes is not None and since_arm:
                rest_percent = 100.0 * self.unaccounted_bytes / since_arm
                sections.append(
                    f"the rest, {_mb(self.unaccounted_bytes)} ({rest_percent:.0f}%), "
                    "is native memory or fragmentation (not Python objects)"
                )
        if self.sites:
            sites = ", ".join(f"{s.where} {_size(s.kb * 1024)} x{s.count}" for s in self.sites[:3])
            sections.append(f"top sites: {sites}")
        elif "sites" in unavailable:
            sections.append(f"no sites: {unavailable['sites']}")
        if "types" in unavailable:
            sections.append(f"no types: {unavailable['types']}")
        if self.types or self.census_cut_short:
            types = ", ".join(
                f"{t.type_name} {t.count_growth:+d} ({_size(t.kb_growth * 1024)})" for t in self.types[:3]
            )
            cut = " (census cut short)" if self.census_cut_short else ""
            sections.append(f"top types{cut}: {types or 'none seen'}")
        return _clip_right("; ".join(sections), MAX_LINE_CHARS)


def _mb(value_bytes: float, *, signed: bool = False) -> str:
    return f"{value_bytes / _MIB:+.1f}MB" if signed else f"{value_bytes / _MIB:.1f}MB"


def _size(value_bytes: float) -> str:
    """MB from one up, KB below: a small site still shows a figure."""
    return _mb(value_bytes) if abs(value_bytes) >= _MIB else f"{value_bytes / 1024:.1f}KB"


def _clip_right(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _clip_left(text: str, max_chars: int) -> str:
    """Keep the end: a path's file name and line say most."""
    return text if len(text) <= max_chars else "..." + text[-(max_chars - 3) :]


def relative_where(filename: str, lineno: int, app_root: str, stdlib_dir: str) -> str:
    """file:line with no absolute path: site-packages/..., <stdlib>/..., relative to app_root, or the base name."""
    if filename.startswith("<"):  # <string>, <unknown>: no path to hide
        return f"{filename}:{lineno}"
    if not os.path.isabs(filename):
        return f"{os.path.basename(filename)}:{lineno}"
    parts = filename.split(os.sep)
    # The last packages folder wins: a venv's site-packages can sit under the app or the stdlib.
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] in ("site-packages", "dist-packages"):
            return f"{'/'.join(parts[index:])}:{lineno}"
    for root, label in ((stdlib_dir, "<stdlib>"), (app_root, None)):
        root = root.rstrip(os.sep)
        if root and filename.startswith(root + os.sep):
            rest = filename[len(root) + 1 :].replace(os.sep, "/")
            return f"{label}/{rest}:{lineno}" if label else f"{rest}:{lineno}"
    return f"{os.path.basename(filename)}:{lineno}"


def type_name(kind: type) -> str:
    """The name a report gives a type: `bytes` for builtins, `myapp.models.User` for the rest."""
    qualname = getattr(kind, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = getattr(kind, "__name__", "?")
    module = getattr(kind, "__module__", None)
    return qualname if module == "builtins" or not isinstance(module, str) else f"{module}.{qualname}"


def _sole_referent_refcount() -> int:
    """What getrefcount says, inside a loop shaped like the census's, of an object one container alone holds."""
    owner = {str(time.perf_counter_ns()) + ".": None}  # a key made here, not interned: only `owner` holds it
    containers: list[object] = [owner]  # `owner` stays alive, as `objects` keeps each walked container alive
    while containers:
        container = containers.pop()
        referents = gc.get_referents(container)
        if isinstance(container, dict):
            referents.extend(dict.keys(container))
        for referent in referents:
            if referent is not None:
                return sys.getrefcount(referent)
    raise AssertionError("a one-key dict has one key")


def take_census(
    time_limit_s: float, max_objects: int = MAX_CENSUS_OBJECTS, exclude_ids: frozenset[int] = frozenset()
) -> Census:
    """Count the unfrozen objects gc tracks and the untracked objects they point at, by type.

    Untracked referents are counted once each: one that a single container
    holds is met once, so only those with more references go through a set of
    ids (a set of every id would cost ~60 bytes an object, near the limit).
    The list gc.get_objects() builds costs 8 bytes an unfrozen object.
    """
    started_s = time.perf_counter()
    deadline_s = started_s + time_limit_s
    sole_refcount = _sole_referent_refcount()
    objects = gc.get_objects()
    # Made after the list above, so the census does not count its own tallies.
    tallies: dict[type, list[int]] = {}  # type: [count, bytes]
    shared_ids: set[int] = set()
    containers: list[object] = []  # the object being walked, then the untracked containers met in it
    get_referents, is_tracked, getrefcount, getsizeof = gc.get_referents, gc.is_tracked, sys.getrefcount, sys.getsizeof
    dict_keys = dict.keys  # the C method: a dict subclass's own keys() is never called
    seen = 0
    cut_short = False
    for index, obj in enumerate(objects):
        if not index % _CENSUS_CHECK_EVERY and (seen >= max_objects or time.perf_counter() > deadline_s):
            cut_short = True
            break
        if id(obj) in exclude_ids:
            continue
        kind = type(obj)
        tally = tallies.get(kind)
        if tally is None:
            tally = tallies[kind] = [0, 0]
        tally[0] += 1
        try:
            tally[1] += getsizeof(obj, 0)
        except Exception:  # a __sizeof__ of the app's own that fails: count the object, size unknown
            pass
        seen += 1
        containers.append(obj)
        while containers:
            container = containers.pop()
            referents = get_referents(container)
            if isinstance(container, dict):
                # gc does not visit the str keys of a dict (they cannot make a cycle): a {str: ...} cache's keys.
                referents.extend(dict_keys(container))
            for referent in referents:
                if is_tracked(referent):  # walked on its own, or frozen
                    continue
                if getrefcount(referent) > sole_refcount:
                    referent_id = id(referent)
                    if referent_id in shared_ids:
                        continue
                    shared_ids.add(referent_id)
                kind = type(referent)
                tally = tallies.get(kind)
                if tally is None:
                    tally = tallies[kind] = [0, 0]
                tally[0] += 1
                tally[1] += getsizeof(referent, 0)
                seen += 1
                # gc untracks tuples and dicts that hold only atomic objects (a {str: str} cache): walk into them.
                if kind is tuple or kind is dict:
                    containers.append(referent)
    del objects
    names_counts: dict[str, int] = {}
    names_sizes: dict[str, int] = {}
    for kind, (count, size_bytes) in tallies.items():
        name = type_name(kind)
        names_counts[name] = names_counts.get(name, 0) + count
        names_sizes[name] = names_sizes.get(name, 0) + size_bytes
    return Census(names_counts, names_sizes, seen, len(shared_ids), cut_short, time.perf_counter() - started_s)


def type_growth(before: Census, after: Census, limit: int = TOP_TYPES) -> tuple[TypeGrowth, ...]:
    """The types that grew most, by size growth, then count growth."""
    grown = []
    for name, count in after.counts.items():
        count_growth = count - before.counts.get(name, 0)
        size_growth_bytes = after.sizes_bytes.get(name, 0) - before.sizes_bytes.get(name, 0)
        if count_growth > 0 or size_growth_bytes > 0:
            grown.append((size_growth_bytes, count_growth, name))
    grown.sort(reverse=True)
    return tuple(TypeGrowth(name, count, round(size / 1024, 1)) for size, count, name in grown[:limit])


def growth_verdict(uss_growth_bytes: int, traced_bytes: int, tracing_overhead_bytes: int) -> str:
    """`native` when most of the growth is not Python's, `python` when most is, else `unknown`."""
    if uss_growth_bytes < NATIVE_MIN_BYTES:
        return "unknown"  # too little growth since tracing began to tell
    rest_bytes = uss_growth_bytes - traced_bytes - tracing_overhead_bytes
    if rest_bytes >= NATIVE_MIN_BYTES and 100.0 * rest_bytes / uss_growth_bytes >= NATIVE_SHARE_PERCENT:
        return "native"
    if 100.0 * rest_bytes / uss_growth_bytes < NATIVE_SHARE_PERCENT:
        return "python"
    return "unknown"


@dataclass
class _Arming:
    stdlib_dir: str
    uss_bytes: int
    monotonic_s: float
    traced_bytes: int
    tracemalloc_bytes: int
    started_tracing: bool  # False: someone else's tracemalloc, used as is and never stopped here


class GrowthWatch:
    """One worker's baseline, its tracing switch, and its report. Make it in the worker, after fork."""

    def __init__(
        self,
        uss_bytes: int,
        app_root: str | Path,
        *,
        boot_time_limit_s: float = DEFAULT_BOOT_TIME_LIMIT_S,
        max_census_objects: int = MAX_CENSUS_OBJECTS,
        boot_census: Census | None = None,
    ) -> None:
        """`boot_census`: the baseline the type growth is counted from, if not a census taken now (the
        recycler passes FORK_CENSUS: the heap at fork, all frozen and never counted, so a boot costs no
        walk; the worker's own init objects, about a thousand, then count as growth)."""
        self.uss_at_boot_bytes = uss_bytes
        self.app_root = os.path.abspath(os.fspath(app_root))
        self.booted_monotonic_s = time.monotonic()
        self.arming: _Arming | None = None
        self.notes: list[str] = []  # said once, in every report
        self._armed = False
        self._lock = threading.Lock()
        self.boot_census = take_census(boot_time_limit_s, max_census_objects) if boot_census is None else boot_census
        if self.boot_census.cut_short:
            self.notes.append(
                f"boot census cut short after {self.boot_census.objects_seen} objects: type growth is overstated"
            )

    def maybe_arm(self, uss_bytes: int, threshold_bytes: int) -> bool:
        """Start tracing once USS passes ARM_FRACTION of the threshold; True when it armed on this call."""
        if self._armed or uss_bytes < threshold_bytes * ARM_FRACTION:
            return False
        return self._arm(uss_bytes)

    def _arm(self, uss_bytes: int) -> bool:
        # Here, once, and before tracing starts, so that their module data is not reported as a site:
        # tracemalloc imports pickle and linecache (~20 ms), not worth it in every worker.
        import sysconfig
        import tracemalloc

        with self._lock:  # two request threads may cross the line together
            if self._armed:
                return False
            stdlib_dir = sysconfig.get_paths()["stdlib"]  # its first call loads _sysconfigdata: not a site
            started_tracing = not tracemalloc.is_tracing()
            if started_tracing:
                tracemalloc.start(1)  # one frame: the line that allocated, the cheapest tracing there is
            else:
                self.notes.append("tracemalloc was already tracing: used as it was and left running")
            self.arming = _Arming(
                stdlib_dir=stdlib_dir,
                uss_bytes=uss_bytes,
                monotonic_s=time.monotonic(),
                traced_bytes=tracemalloc.get_traced_memory()[0],
                tracemalloc_bytes=tracemalloc.get_tracemalloc_memory(),
                started_tracing=started_tracing,
            )
            self._armed = True
            return True

    def report(
        self,
        uss_bytes: int,
        reason: str,
        *,
        time_limit_s: float = DEFAULT_REPORT_TIME_LIMIT_S,
        max_tracemalloc_bytes: int = DEFAULT_MAX_TRACEMALLOC_BYTES,
        max_census_objects: int = MAX_CENSUS_OBJECTS,
        max_census_list_bytes: int | None = None,
    ) -> GrowthReport:
        """What grew; call it in the worker after its last request. Stops tracing if `maybe_arm` started it.

        `max_census_list_bytes`: the census's first step, `gc.get_objects()`, is a list of 8 bytes an object,
        made in one go; past this estimate (from `sys.getallocatedblocks()`) the census is skipped.
        """
        started_s, started_cpu_s = time.perf_counter(), time.process_time()
        notes = list(self.notes)
        unavailable: list[tuple[str, str]] = []
        arming = self.arming
        traced_bytes = overhead_bytes = share_percent = unaccounted_bytes = snapshot_blocks = None
        verdict = "unknown"
        sites: tuple[Site, ...] = ()
        if arming is None:
            unavailable.append(
                ("tracing", f"tracing never began: USS stayed under {ARM_FRACTION:.0%} of the recycle threshold")
            )
        else:
            import tracemalloc

            if not tracemalloc.is_tracing():
                unavailable.append(("tracing", "tracemalloc was not tracing at report time (stopped elsewhere)"))
            else:
                traced_bytes = tracemalloc.get_traced_memory()[0] - arming.traced_bytes
                tracemalloc_bytes = tracemalloc.get_tracemalloc_memory()
                overhead_bytes = tracemalloc_bytes - arming.tracemalloc_bytes
                uss_growth_bytes = uss_bytes - arming.uss_bytes
                unaccounted_bytes = uss_growth_bytes - traced_bytes - overhead_bytes
                if uss_growth_bytes > 0:
                    share_percent = round(min(100.0, max(0.0, 100.0 * traced_bytes / uss_growth_bytes)), 1)
                verdict = growth_verdict(uss_growth_bytes, traced_bytes, overhead_bytes)
                if tracemalloc_bytes > max_tracemalloc_bytes:
                    unavailable.append(
                        (
                            "sites",
                            f"snapshot skipped: tracemalloc holds {_mb(tracemalloc_bytes)}, "
                            f"over the {_mb(max_tracemalloc_bytes)} cap",
                        )
                    )
                else:
                    sites, snapshot_blocks = _top_sites(tracemalloc, self.app_root, arming.stdlib_dir)
                if arming.started_tracing:
                    tracemalloc.stop()  # frees its tables before the census builds its list
        deadline_s = started_s + time_limit_s
        list_bytes = CENSUS_LIST_BYTES_PER_BLOCK * sys.getallocatedblocks()
        if max_census_list_bytes is not None and list_bytes > max_census_list_bytes:
            census = None
            unavailable.append(
                ("types", f"census skipped: its list (~{_mb(list_bytes)}) needs more than {_mb(max_census_list_bytes)}")
            )
        else:
            census = take_census(
                max(0.0, deadline_s - time.perf_counter()),
                max_census_objects,
                exclude_ids=frozenset(
                    map(id, (self.boot_census, self.boot_census.counts, self.boot_census.sizes_bytes))
                ),
            )
            if census.cut_short:
                notes.append(f"census cut short after {census.objects_seen} objects: type figures are low")
        return GrowthReport(
            pid=os.getpid(),
            reason=reason,
            uss_bytes=uss_bytes,
            uss_at_boot_bytes=self.uss_at_boot_bytes,
            uss_at_arm_bytes=None if arming is None else arming.uss_bytes,
            armed_after_s=None if arming is None else round(arming.monotonic_s - self.booted_monotonic_s, 3),
            traced_bytes=traced_bytes,
            tracing_overhead_bytes=overhead_bytes,
            python_share_percent=share_percent,
            unaccounted_bytes=unaccounted_bytes,
            verdict=verdict,
            sites=sites,
            types=() if census is None else type_growth(self.boot_census, census),
            census_cut_short=census is not None and census.cut_short,
            snapshot_blocks=snapshot_blocks,
            report_ms=round(1000 * (time.perf_counter() - started_s), 2),
            report_cpu_ms=round(1000 * (time.process_time() - started_cpu_s), 2),
            notes=tuple(notes),
            unavailable=tuple(unavailable),
        )


def _top_sites(tracemalloc: ModuleType, app_root: str, stdlib_dir: str) -> tuple[tuple[Site, ...], int]:
    """The lines with the most live bytes, leaving out tracemalloc, importlib, frozen modules and this module."""
    importlib_dir = os.path.join(stdlib_dir, "importlib") + os.sep
    own_files = {tracemalloc.__file__, __file__}
    snapshot = tracemalloc.take_snapshot()
    blocks = len(snapshot.traces)
    # With one frame, grouping by line and then dropping lines is the same as filter_traces, without its copy.
    statistics = snapshot.statistics("lineno")
    del snapshot
    sites = []
    for statistic in statistics:
        frame = statistic.traceback[0]
        filename = frame.filename
        if filename in own_files or filename.startswith(("<frozen ", importlib_dir)):
            continue
        where = _clip_left(relative_where(filename, frame.lineno, app_root, stdlib_dir), _MAX_WHERE_CHARS)
        sites.append(Site(where, round(statistic.size / 1024, 1), statistic.count))
        if len(sites) == TOP_SITES:
            break
    return tuple(sites), blocks
