"""Which of a worker's private pages are copies of the master's (written after fork) and which are new.

    .venv/bin/python -m bench.pagemap MASTER_PID WORKER_PID    (as root: /proc/PID/pagemap's frame numbers)

For every present page of the worker's writable private mappings: PFN from /proc/PID/pagemap; the same
virtual address in the master: mapped (VMA in master's maps) and its PFN. Same PFN: still shared.
Different PFN at an address the master also has mapped and present: a copy-on-write copy (or a page the
worker freed and reused). Address not present in the master: new.
"""

from __future__ import annotations

import collections
import struct
import sys

PAGE = 4096


def vmas(pid):
    out = []
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        a, b = (int(x, 16) for x in f[0].split("-"))
        out.append((a, b, f[1], f[5] if len(f) > 5 else "[anon]"))
    return out


def pfns(pid, a, b):
    with open(f"/proc/{pid}/pagemap", "rb") as fh:
        fh.seek(a // PAGE * 8)
        data = fh.read((b - a) // PAGE * 8)
    for i in range(len(data) // 8):
        (entry,) = struct.unpack_from("<Q", data, i * 8)
        present = entry >> 63 & 1
        yield a + i * PAGE, (entry & ((1 << 55) - 1)) if present else None, entry >> 56 & 1  # exclusive bit


def private_pages(master: int, worker: int) -> collections.Counter:
    """Pages of `worker`'s writable private mappings not shared with `master`, by (mapping, copy or new)."""
    master_vmas = vmas(master)
    cache: dict[tuple[int, int], dict[int, int | None]] = {}

    def master_pfn(addr: int) -> int | None:
        for a, b, _perm, _name in master_vmas:
            if a <= addr < b:
                if (a, b) not in cache:
                    cache[(a, b)] = {v: p for v, p, _ in pfns(master, a, b)}
                return cache[(a, b)].get(addr)
        return None

    tally: collections.Counter = collections.Counter()
    for a, b, perm, name in vmas(worker):
        if "w" not in perm or "s" in perm:
            continue
        label = name if name.startswith("[") else name.rsplit("/", 1)[-1]
        label = label if label in ("[anon]", "[heap]", "[stack]") or "libpython" in label else "other"
        for addr, pfn, _exclusive in pfns(worker, a, b):
            if pfn is None:
                continue
            in_master = master_pfn(addr)
            if in_master == pfn:
                continue  # still shared with the master
            tally[(label, "copy of a master page" if in_master is not None else "new (not in the master)")] += 1
    return tally


def main(argv: list[str]) -> int:
    master, worker = int(argv[0]), int(argv[1])
    for (label, kind), pages in sorted(private_pages(master, worker).items(), key=lambda item: -item[1]):
        print(f"{label:<24} {kind:<26} {pages * PAGE / 2**20:6.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
