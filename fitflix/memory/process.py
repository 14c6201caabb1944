"""Per-process memory figures from /proc.

`StatmReader` is the cheap per-request signal (one `pread` on a kept fd);
`read_smaps_rollup` is the exact one (PSS and USS, about 0.4 ms a call).
Readers take `root` so tests run them against fake /proc trees.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessMemory:
    """One process's figures; None where this host cannot give one, with the reason in `unavailable`."""

    pid: int
    rss_bytes: int | None
    pss_bytes: int | None
    uss_bytes: int | None  # Private_Clean + Private_Dirty: what ending the process gives back
    swap_bytes: int | None
    source: str = "smaps_rollup"  # or psutil, getrusage peak, or a worker's own report
    peak_rss_bytes: int | None = None  # the most it ever held (getrusage), where the current RSS cannot be had
    unavailable: tuple[tuple[str, str], ...] = ()  # (JSON name of a figure, why it is None)

    def private_bytes(self) -> int | None:
        """The best figure for what ending it gives back: USS, else RSS, else its peak (both too high)."""
        for value in (self.uss_bytes, self.rss_bytes, self.peak_rss_bytes):
            if value is not None:
                return value
        return None


class StatmReader:
    """RSS and data-segment size of this process from a kept `/proc/self/statm` fd.

    Open it in the process it measures (a gunicorn worker opens its own after
    fork): an fd opened in the master keeps reading the master. `os.pread`
    releases the GIL for the syscall; in a worker with busy request threads
    that hand-off costs more than the read (about 20 us of worker CPU,
    measured), which is why the recycler reads it only as often as the room
    below the threshold requires (`recycle.requests_to_skip`).
    """

    source = "statm"
    is_peak = False

    def __init__(self, root: Path = Path("/")) -> None:
        # os.path, not pathlib's `/`: in a fork's child pathlib's first use costs 0.3 ms of CPU (its pages are
        # the master's, each written one a copy), out of a replacement's boot.
        self._fd = os.open(os.path.join(root, "proc/self/statm"), os.O_RDONLY | os.O_CLOEXEC)

    def read(self) -> tuple[int, int]:
        """(resident bytes, data+stack bytes)."""
        fields = os.pread(self._fd, 256, 0).split()
        return int(fields[1]) * PAGE_BYTES, int(fields[5]) * PAGE_BYTES

    def close(self) -> None:
        os.close(self._fd)


def parse_smaps_rollup(pid: int, text: str) -> ProcessMemory:
    kib: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            kib[key] = int(fields[0])
    return ProcessMemory(
        pid=pid,
        rss_bytes=kib.get("Rss", 0) * 1024,
        pss_bytes=kib.get("Pss", 0) * 1024,
        uss_bytes=(kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)) * 1024,
        swap_bytes=kib.get("Swap", 0) * 1024,
    )


def read_smaps_rollup(pid: int | str, root: Path = Path("/")) -> ProcessMemory | None:
    """RSS, PSS and USS of `pid`; None when the process is gone or unreadable."""
    try:
        text = (root / f"proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    return parse_smaps_rollup(os.getpid() if pid == "self" else int(pid), text)


def faulted_bytes() -> int:
    """What the pages this process faulted in since it began (a fork's child: since the fork) would hold.

    A forked worker starts with every page shared with its master; each page it has made its own since
    (a copy on write, a new page of heap or stack) came with a page fault. So in a fork's child this
    bounds its USS from above without walking its pages as smaps does (about 1 ms of CPU at a worker's
    boot): faults that map a file's shared page count too (a fresh worker: 5.3 MB against a USS of
    5.0, measured). Not where a fault can bring a huge page (`huge_pages_always`).
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_minflt + usage.ru_majflt) * PAGE_BYTES


def huge_pages_always(root: Path = Path("/")) -> bool:
    """Whether transparent huge pages are on for every mapping: then one fault can bring 512 pages."""
    try:
        text = (root / "sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False  # no THP in this kernel (or no /sys): a fault is a page
    return "[always]" in text


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (signal 0; one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parent_pid(stat_text: str) -> int:
    """The ppid field of /proc/PID/stat; the command name may hold spaces and parentheses."""
    return int(stat_text.rpartition(")")[2].split()[1])


def children_of(pid: int, root: Path = Path("/")) -> list[int]:
    """Pids whose parent is `pid`, in ascending order.

    One read of /proc/PID/task/PID/children (children forked by the main
    thread, which is where gunicorn forks) when the kernel has it; else a scan
    of every /proc/N/stat, about 1 ms with 100 processes.
    """
    proc = root / "proc"
    try:
        return sorted(int(child) for child in (proc / str(pid) / "task" / str(pid) / "children").read_text().split())
    except FileNotFoundError:
        pass
    except OSError:
        return []
    children = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat_text = (proc / entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        if parent_pid(stat_text) == pid:
            children.append(int(entry))
    return sorted(children)
