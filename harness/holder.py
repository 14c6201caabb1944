"""A process that is not the service, holding memory inside the service's cgroup.

What a laptop's editor and browser are to a systemd scope, or a sidecar to a
pod: memory the kernel charges to the same cgroup that the service cannot
give back by recycling its workers.
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys

from harness.wait import poll_until

# Writes one byte per page so every page is resident, says so, then waits for stdin to close.
_HOLD = (
    "import sys; block = bytearray(int(sys.argv[1]) << 20); "
    "block[::4096] = b'x' * (len(block) // 4096); print('ready', flush=True); sys.stdin.read()"
)


class MemoryHolder:
    def __init__(self, cgroup, megabytes: int) -> None:
        self.cgroup = cgroup
        self.megabytes = megabytes
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> MemoryHolder:
        """Start it inside the cgroup and return once every page it holds is resident."""
        command = self.cgroup.wrap([sys.executable, "-c", _HOLD, str(self.megabytes)])
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        poll_until(self._ready, timeout_s, f"a holder of {self.megabytes} MB to touch every page")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the memory holder exited with code {self.process.returncode}")
        readable, _, _ = select.select([self.process.stdout], [], [], 0)
        return bool(readable) and self.process.stdout.readline().strip() == b"ready"

    def stop(self) -> None:
        """End the process we started, by its pid: close its stdin, then SIGKILL if it lingers."""
        if self.process is None:
            return
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process.stdout.close()
