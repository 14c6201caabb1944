"""Memory figures where Linux's /proc is not there: a Mac, a BSD, a sandbox.

The Linux path (`process.py`, `cgroup.py`) reads /proc and the cgroup files
and stays the first choice wherever they exist. Where they are missing, each
figure falls back in turn:

- host memory: psutil, else `sysconf(SC_PHYS_PAGES)`;
- a process's RSS and USS: psutil, where the platform gives them (PSS is
  Linux-only); for this process, else its peak RSS from `getrusage`, which
  never falls;
- a worker's own figure as it published it in the shared state, for a
  master that cannot read another process (`MemoryProbe`).

A figure none of these gives is None with the reason beside it, never 0.

psutil is imported only on this path, once, in the master (the plan reads the
host's memory before any fork), so Linux never loads it and every worker on a
Mac shares the master's copy.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from fitflix.memory.process import PAGE_BYTES, ProcessMemory, StatmReader, pid_alive, read_smaps_rollup

# getrusage's ru_maxrss is in KiB on Linux and the BSDs, in bytes on macOS.
MAXRSS_UNIT_BYTES = 1 if sys.platform == "darwin" else 1024

PEAK_NOTE = "peak RSS from getrusage: it never falls, so a worker recycles at its highest point, not its current size"


@dataclass(frozen=True)
class Fallbacks:
    """Where the portable figures come from; tests pass fakes.

    `psutil` is the module or None (not installed, or it cannot read this
    host); `phys_bytes` answers `sysconf` (None where it cannot); `peak_rss`
    answers getrusage for this process, in bytes.
    """

    psutil: ModuleType | object | None
    phys_bytes: object  # Callable[[], int | None]
    peak_rss: object  # Callable[[], int]


_psutil_cache: list[ModuleType | None] = []


def load_psutil() -> ModuleType | None:
    """psutil, imported once per process; None where it is missing or fails to import."""
    if not _psutil_cache:
        try:
            import psutil
        except Exception:  # missing, or a broken build: the last-resort figures still work
            psutil = None
        _psutil_cache.append(psutil)
    return _psutil_cache[0]


def sysconf_phys_bytes() -> int | None:
    try:
        pages, page_bytes = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return pages * page_bytes if pages > 0 and page_bytes > 0 else None


def getrusage_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * MAXRSS_UNIT_BYTES


def system_fallbacks() -> Fallbacks:
    return Fallbacks(load_psutil(), sysconf_phys_bytes, getrusage_peak_bytes)


def host_memory(root: Path = Path("/"), fallbacks: Fallbacks | None = None) -> tuple[int | None, str]:
    """The host's memory and where it came from: /proc/meminfo, else psutil, else sysconf."""
    from fitflix.memory.container import host_memory_bytes

    total = host_memory_bytes(root)
    if total is not None:
        return total, "/proc/meminfo"
    fallbacks = fallbacks or system_fallbacks()
    if fallbacks.psutil is not None:
        try:
            return int(fallbacks.psutil.virtual_memory().total), "psutil"
        except Exception:  # psutil on Linux reads /proc/meminfo too
            pass
    total = fallbacks.phys_bytes()
    if total is not None:
        return total, "sysconf"
    return None, "unknown (no /proc/meminfo, psutil or sysconf)"


def read_process_memory(
    pid: int | str, root: Path = Path("/"), fallbacks: Fallbacks | None = None
) -> ProcessMemory | None:
    """RSS, PSS and USS of `pid` from the best source this host has; None when the process is gone.

    Figures a source cannot give are None, with the reason in `unavailable`.
    """
    memory = read_smaps_rollup(pid, root)
    if memory is not None:
        return memory
    if proc_mounted(root):
        return statm_memory(pid, root)  # None when the process ended
    own = pid == "self" or int(pid) == os.getpid()
    number = os.getpid() if own else int(pid)
    if not pid_alive(number):
        return None
    fallbacks = fallbacks or system_fallbacks()
    reasons: list[tuple[str, str]] = []
    if fallbacks.psutil is not None:
        memory = _psutil_memory(fallbacks.psutil, number, reasons)
        if memory is not None:
            return memory
    else:
        reasons.append(("all", "no /proc/PID/smaps_rollup here, and psutil is not installed"))
    peak = fallbacks.peak_rss() if own else None
    why = "; ".join(reason for _figure, reason in reasons)
    missing = "this process's current RSS" if own else "another process's memory"
    return ProcessMemory(
        pid=number,
        rss_bytes=None,
        pss_bytes=None,
        uss_bytes=None,
        swap_bytes=None,
        source="getrusage peak" if own else "none",
        peak_rss_bytes=peak,
        unavailable=(
            ("rssBytes", f"{why}: {missing} cannot be read"),
            ("pssBytes", "PSS is read from /proc/PID/smaps_rollup (Linux only)"),
            ("ussBytes", f"{why}: {missing} cannot be read"),
        ),
    )


def proc_mounted(root: Path = Path("/")) -> bool:
    """Whether `root`/proc has anything in it: then /proc is the source of truth, and nothing falls back."""
    try:
        with os.scandir(root / "proc") as entries:
            return next(entries, None) is not None
    except OSError:
        return False


def statm_memory(pid: int | str, root: Path = Path("/")) -> ProcessMemory | None:
    """RSS alone from /proc/PID/statm, where /proc has no smaps_rollup (Linux before 4.14, some sandboxes)."""
    try:
        fields = (root / f"proc/{pid}/statm").read_text().split()
    except OSError:
        return None  # the process ended
    no_rollup = "no /proc/PID/smaps_rollup on this kernel (Linux 4.14 and later have it)"
    return ProcessMemory(
        pid=os.getpid() if pid == "self" else int(pid),
        rss_bytes=int(fields[1]) * PAGE_BYTES,
        pss_bytes=None,
        uss_bytes=None,
        swap_bytes=None,
        source="statm",
        unavailable=(("pssBytes", no_rollup), ("ussBytes", no_rollup)),
    )


def own_rss_bytes() -> int | None:
    """This process's RSS, or its peak where nothing else can be read."""
    memory = read_process_memory("self")
    if memory is None:
        return None
    return memory.rss_bytes if memory.rss_bytes is not None else memory.peak_rss_bytes


def own_private_bytes() -> int | None:
    """This process's USS, or its RSS where there is no USS (the peak where nothing else can be read)."""
    memory = read_process_memory("self")
    if memory is None:
        return None
    for value in (memory.uss_bytes, memory.rss_bytes, memory.peak_rss_bytes):
        if value is not None:
            return value
    return None


def _psutil_memory(psutil, pid: int, reasons: list[tuple[str, str]]) -> ProcessMemory | None:
    """psutil's figures for `pid`; None (and a reason) where psutil cannot read them here."""
    try:
        process = psutil.Process(pid)
        info = process.memory_info()
    except psutil.NoSuchProcess:  # the caller saw it alive: psutil on Linux without /proc says so of every pid
        reasons.append(("all", "psutil cannot read processes here (no /proc)"))
        return None
    except Exception as error:  # AccessDenied, ZombieProcess, a platform psutil does not cover
        reasons.append(("all", f"psutil: {type(error).__name__}"))
        return None
    unavailable = [("pssBytes", f"PSS is Linux-only; psutil on {sys.platform} gives RSS and USS")]
    uss = pss = swap = None
    try:
        full = process.memory_full_info()
        uss = getattr(full, "uss", None)
        pss = getattr(full, "pss", None)
        swap = getattr(full, "swap", None)
    except Exception as error:  # AccessDenied for another user's process on macOS
        unavailable.append(("ussBytes", f"psutil memory_full_info: {type(error).__name__}"))
    if pss is not None:
        unavailable = [item for item in unavailable if item[0] != "pssBytes"]
    return ProcessMemory(
        pid=pid,
        rss_bytes=int(info.rss),
        pss_bytes=pss,
        uss_bytes=uss,
        swap_bytes=swap,
        source="psutil",
        unavailable=tuple(unavailable),
    )


class PsutilReader:
    """This process's RSS (and data size where psutil has it) per request, from psutil."""

    source = "psutil"
    is_peak = False

    def __init__(self, psutil) -> None:
        self._process = psutil.Process()
        self.read()  # fail here, at start, not on a request

    def read(self) -> tuple[int, int | None]:
        info = self._process.memory_info()
        return int(info.rss), getattr(info, "data", None)


class PeakReader:
    """The last resort: getrusage's peak RSS. No data-segment figure, so no backstop."""

    source = "getrusage peak"
    is_peak = True

    def __init__(self, peak_rss) -> None:
        self._peak_rss = peak_rss

    def read(self) -> tuple[int, int | None]:
        return self._peak_rss(), None


def self_memory_reader(root: Path = Path("/"), fallbacks: Fallbacks | None = None):
    """The cheapest per-request reader of this process's memory this host allows.

    `/proc/self/statm` on Linux (a kept fd); else psutil; else getrusage's
    peak. Each has `read() -> (rss bytes, data bytes or None)`, `source`, and
    `is_peak`.
    """
    try:
        return StatmReader(root)
    except OSError:
        pass
    fallbacks = fallbacks or system_fallbacks()
    if fallbacks.psutil is not None:
        try:
            return PsutilReader(fallbacks.psutil)
        except Exception:  # psutil on Linux without /proc
            pass
    return PeakReader(fallbacks.peak_rss)
