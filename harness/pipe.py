"""A child process's output, read through a pipe on a thread of its own; ending it by its pid.

Servers under test write their logs here, never to a file: a file would be
page cache charged to the server's own memory cgroup.
"""

from __future__ import annotations

import signal
import subprocess
import threading


class LogPipe:
    def __init__(self, process: subprocess.Popen, name: str) -> None:
        """Read `process.stdout` (opened with stdout=PIPE) until it closes."""
        self.process = process
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=name, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in iter(self.process.stdout.readline, b""):
            with self._lock:
                self._chunks.append(line)

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode(errors="replace")

    def close(self, timeout_s: float = 10.0) -> None:
        """After the process ended: the last lines read, the pipe closed."""
        self._reader.join(timeout_s)
        if self.process.stdout is not None:
            self.process.stdout.close()


def end(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM a process we started, by its pid; SIGKILL if it has not gone within `timeout_s`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
