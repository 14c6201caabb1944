"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from fitflix import create_app
from fitflix.memory.report import MemoryProbe, measure_container
from fitflix.serving.sizing import make_plan
from fitflix.serving.state import RUNTIME, SharedState
from fitflix.settings import Settings
from fitflix.web.health import HealthContext
from harness.cgroups import CgroupUnavailable, MemoryCgroup
from harness.holder import MemoryHolder
from harness.server import LiveServer
from harness.wait import TIME_SCALE
from tests.fakes import MIB, make_cgroup_v1, make_cgroup_v2, make_meminfo, make_proc, smaps_rollup_text

REQUIRE_CGROUP = os.environ.get("FITFLIX_REQUIRE_CGROUP") == "1"


LIVE = Path(__file__).resolve().parent / "live"


def pytest_collection_modifyitems(items):
    """Every test in tests/live/ is marked `live` (by folder, so `-m "not live"` is tests/unit/).

    On a host known to be slow (FITFLIX_TIME_SCALE, the v2 guest) a test's own timeout stretches too.
    """
    for item in items:
        if LIVE in item.path.parents:
            item.add_marker(pytest.mark.live)
    if TIME_SCALE == 1:
        return
    for item in items:
        marker = item.get_closest_marker("timeout")
        if marker is not None and marker.args:
            item.add_marker(pytest.mark.timeout(marker.args[0] * TIME_SCALE), append=False)


@pytest.fixture(autouse=True)
def tracemalloc_left_off():
    """A recycler past 90% of its threshold starts tracemalloc in this process: stop it after each test."""
    tracing_before = tracemalloc.is_tracing()
    yield
    if not tracing_before and tracemalloc.is_tracing():
        tracemalloc.stop()


@pytest.fixture
def memory_cgroup():
    """Create child memory cgroups (limit in MB), removed at teardown; skip (fail with FITFLIX_REQUIRE_CGROUP=1)."""
    created: list[MemoryCgroup] = []

    def create(limit_mb: int, **options) -> MemoryCgroup:
        try:
            cgroup = MemoryCgroup.create(limit_mb, **options)
        except CgroupUnavailable as error:
            if REQUIRE_CGROUP:
                pytest.fail(f"FITFLIX_REQUIRE_CGROUP=1 but no memory cgroup could be made: {error}")
            pytest.skip(f"no memory cgroup could be made: {error}")
        created.append(cgroup)
        return cgroup

    yield create
    for cgroup in created:
        cgroup.remove()


@pytest.fixture
def live_server(memory_cgroup):
    """Start real gunicorn with gunicorn.conf.py: env overrides, app=, cgroup=; stopped at teardown."""
    # Depends on memory_cgroup so that servers stop before their cgroups are removed.
    started: list[LiveServer] = []

    def start(env: dict[str, str] | None = None, **options) -> LiveServer:
        server = LiveServer(env, **options)
        started.append(server)
        try:
            return server.start()
        except AssertionError as error:
            pytest.fail(str(error))

    yield start
    for server in started:
        server.close()


@pytest.fixture
def memory_holder(memory_cgroup):
    """Start processes that hold N MB inside a test cgroup (not the service); ended at teardown, before the cgroup."""
    holders: list[MemoryHolder] = []

    def start(cgroup: MemoryCgroup, megabytes: int) -> MemoryHolder:
        holder = MemoryHolder(cgroup, megabytes)
        holders.append(holder)
        return holder.start()

    yield start
    for holder in holders:
        holder.stop()


@pytest.fixture
def standalone_runtime(monkeypatch):
    """This process as the app sees it without gunicorn: standalone, no shared state, no worker."""
    monkeypatch.setattr(RUNTIME, "role", "standalone")
    monkeypatch.setattr(RUNTIME, "master_pid", os.getpid())
    monkeypatch.setattr(RUNTIME, "shared", None)
    monkeypatch.setattr(RUNTIME, "plan", None)
    monkeypatch.setattr(RUNTIME, "worker", None)


@pytest.fixture
def fake_machine_app(tmp_path):
    """Build an app whose MemoryProbe reads a fake 512 MB v1 (or v2) cgroup (usage as given) and fake smaps."""

    def build(settings: Settings, usage_bytes: int, inactive_file_bytes: int = 0, oom_kill: int = 0, v2=None):
        """`v2`: a cgroup v2 machine instead, with these make_cgroup_v2 arguments (memory_high, pressure...)."""
        if v2 is None:
            make_cgroup_v1(
                tmp_path,
                "/process_api/0123456789abcdef",
                limit_bytes=512 * MIB,
                usage=usage_bytes,
                inactive_file=inactive_file_bytes,
                oom_kill=oom_kill,
            )
        else:
            make_cgroup_v2(
                tmp_path,
                "/kubepods.slice/pod42/app",
                memory_max=512 * MIB,
                usage=usage_bytes,
                inactive_file=inactive_file_bytes,
                oom_kill=oom_kill,
                **v2,
            )
        make_meminfo(tmp_path, total_kb=8 * 1024 * 1024)
        make_proc(
            tmp_path,
            os.getpid(),
            os.getppid(),
            smaps_rollup=smaps_rollup_text(
                rss_kb=60 * 1024, pss_kb=40 * 1024, private_clean_kb=1024, private_dirty_kb=15 * 1024
            ),
        )
        plan = make_plan(settings, measure_container(tmp_path))
        app = create_app(settings)
        probe = MemoryProbe((plan.limit_mb, plan.limit_source), root=tmp_path)
        app.extensions["fitflix.health"] = HealthContext(settings, plan, probe)
        return app

    return build


@pytest.fixture
def client():
    """A test client of an app sized for 512 MB from the settings, on this machine."""
    return create_app(Settings(max_memory_mb=512)).test_client()


@pytest.fixture
def no_proc(tmp_path) -> Path:
    """A host whose /proc is empty (the namespace the live test makes) or absent (a Mac)."""
    (tmp_path / "proc").mkdir()
    return tmp_path


@pytest.fixture
def state(tmp_path):
    """A fresh SharedState, its backing file in tmp_path."""
    return SharedState(str(tmp_path))
