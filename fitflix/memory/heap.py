"""glibc malloc's own view of this process's heap (`mallinfo2`), and `malloc_trim`.

Python has no V8 heap; the closest honest figures for the Node.js fields are
what glibc's allocator holds. Small Python objects live in pymalloc arenas
that glibc does not count, so these figures are a floor, not the whole story.
On a libc without these calls (musl, macOS) the figures are None.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _load_libc():
    try:
        # glibc's own soname first: find_library runs ldconfig in a subprocess (~4 ms).
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library  # only here: it imports subprocess and shutil (~2 ms)

        try:
            libc = ctypes.CDLL(find_library("c"), use_errno=True)
        except OSError:
            return None
    try:
        libc.mallinfo2.restype = _Mallinfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()


@dataclass(frozen=True)
class HeapFigures:
    used_bytes: int  # bytes handed out by malloc: small-block heap in use plus mmapped large blocks
    total_bytes: int  # bytes malloc holds from the kernel: its arenas plus mmapped large blocks


def read_heap() -> HeapFigures | None:
    if _LIBC is None:
        return None
    info = _LIBC.mallinfo2()
    return HeapFigures(used_bytes=info.uordblks + info.hblkhd, total_bytes=info.arena + info.hblkhd)


def malloc_trim() -> bool:
    """Give free heap pages back to the kernel; True when glibc released some."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False


# glibc's mallopt parameter for the most malloc arenas (malloc.h: M_ARENA_MAX -8).
M_ARENA_MAX = -8


def set_arena_max(arenas: int) -> bool:
    """Cap glibc's malloc arenas (each thread that contends gets one, up to 8 x cores, each up to 64 MB of
    address space). Set it before threads start: arenas already made stay. True when glibc took it."""
    return bool(_LIBC.mallopt(M_ARENA_MAX, arenas)) if _LIBC is not None and arenas > 0 else False
