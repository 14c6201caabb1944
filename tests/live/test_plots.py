"""The benchmarks' drawing stays out of the service; the memory sampler reads a real cgroup (processes of their own)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import plots
from harness.server import PROJECT


@pytest.fixture(autouse=True)
def figures_in(tmp_path):
    plots.use_directory(tmp_path)
    yield tmp_path


def test_the_service_never_imports_matplotlib():
    code = "import sys, wsgi; print(sorted(name for name in sys.modules if name.startswith('matplotlib')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_memory_sampler_reads_a_real_cgroup_every_20_ms(memory_cgroup, memory_holder):
    """The samples behind the leak and spike figures: 50 ms or finer, the usage, and a process that joins."""
    from bench.servers import MemorySampler
    from harness.wait import poll_until

    cgroup = memory_cgroup(256)
    with MemorySampler(cgroup, every_s=0.02) as sampler:
        memory_holder(cgroup, 40)
        poll_until(lambda: sampler.usage_mb and sampler.usage_mb[-1] >= 38, 20, "the holder's 40 MB in the samples")
        poll_until(lambda: len(sampler.t_s) >= 20, 10, "20 samples")
    trace = sampler.trace("holder", 256)
    assert trace.median_interval_ms() <= 50
    assert len(trace.new_worker_s) == 1  # the holder: a process that appeared in the cgroup after the start
    assert trace.oom_kill_s == []
    assert max(trace.usage_mb) >= 38
