"""The plan's table on a fake machine: the cgroup row names the file the limit came from.

tests/live/test_plan_cli.py runs `python -m fitflix plan` and `gunicorn --print-config`."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("limit_file", "max_mb", "says"),
    [
        ("memory.max", 512, "cgroup v2 memory.max"),
        (
            "memory.high",
            512,
            "cgroup v2 memory.high, below memory.max 512 MB: the kernel throttles there, so the plan is made for it",
        ),
        ("memory.high", None, "cgroup v2 memory.high, below no memory.max"),
        ("memory.limit_in_bytes", 384, "cgroup v1"),
    ],
)
def test_the_plans_cgroup_row_names_the_file_the_limit_came_from(limit_file, max_mb, says):
    from fitflix.__main__ import cgroup_limit_origin
    from fitflix.memory.container import MIB, Container

    version = 1 if limit_file == "memory.limit_in_bytes" else 2
    container = Container(
        384 * MIB,
        version,
        8192 * MIB,
        1.0,
        "CPU affinity",
        "/proc/meminfo",
        limit_file,
        max_mb * MIB if max_mb else None,
    )

    assert cgroup_limit_origin(container).startswith(says)
