"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

import pytest

from tests.support.cgroups import CgroupUnavailable, MemoryCgroup
from tests.support.server import LiveServer

REQUIRE_CGROUP = os.environ.get("FITFLIX_REQUIRE_CGROUP") == "1"


@pytest.fixture
def memory_cgroup():
    """Create child memory cgroups (limit in MB); removed at teardown. Skips, or fails under FITFLIX_REQUIRE_CGROUP=1."""
    created: list[MemoryCgroup] = []

    def create(limit_mb: int) -> MemoryCgroup:
        try:
            cgroup = MemoryCgroup.create(limit_mb)
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
    """Start real gunicorn with gunicorn.conf.py: call it with env overrides (and app=, cgroup=); stopped at teardown."""
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
