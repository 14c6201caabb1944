"""A host without /proc and /sys, as a Mac is to the service: a private mount namespace hides them.

`NO_PROC` is a command prefix: `unshare -m` gives the command its own mounts,
empty tmpfs folders go over /proc and /sys there, and the shell `exec`s the
command, so the pid started is the command's own. Processes stay visible to
the test from outside (the pid namespace is shared), so the test still reads
their real /proc and cgroups to check what the service reports.
"""

from __future__ import annotations

import shutil
import subprocess

_HIDE = 'mount -t tmpfs -o size=1m fitflix-no-proc /proc && mount -t tmpfs -o size=1m fitflix-no-sys /sys && exec "$@"'
NO_PROC: tuple[str, ...] = ("unshare", "--mount", "--propagation", "private", "sh", "-c", _HIDE, "sh")


def no_proc_problem() -> str | None:
    """Why a no-/proc host cannot be played here; None when it can."""
    if shutil.which("unshare") is None:
        return "no unshare command (util-linux)"
    try:
        probe = subprocess.run(
            [*NO_PROC, "sh", "-c", "test ! -e /proc/self && test ! -e /sys/fs"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare failed: {error}"
    if probe.returncode != 0:
        why = probe.stderr.strip() or f"exit code {probe.returncode}"
        return f"cannot hide /proc in a private mount namespace (root needed): {why}"
    return None
