"""The "what grew" report names the leak: each test leaks in this process and reads the report back."""

from __future__ import annotations

import ctypes
import gc
import inspect
import json
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from werkzeug.http import parse_list_header

from fitflix.memory.growth import (
    ARM_FRACTION,
    MAX_LINE_CHARS,
    MAX_REPORT_JSON_BYTES,
    NATIVE_MIN_BYTES,
    GrowthReport,
    GrowthWatch,
    Site,
    TypeGrowth,
    growth_verdict,
    relative_where,
    take_census,
    type_name,
)
from fitflix.memory.heap import malloc_trim
from fitflix.memory.process import read_smaps_rollup

pytestmark = pytest.mark.timeout(30)

MIB = 1024 * 1024
APP_ROOT = Path(__file__).resolve().parents[2]
THIS_FILE = "tests/unit/test_growth.py"
# Synthetic USS figures, for tests about what the report names rather than its verdict.
BOOT_USS_BYTES = 100 * MIB
THRESHOLD_BYTES = 400 * MIB
ARM_USS_BYTES = int(THRESHOLD_BYTES * ARM_FRACTION) + 1
REPORT_USS_BYTES = THRESHOLD_BYTES + 4 * MIB


@pytest.fixture
def tracing() -> Iterator[None]:
    """Start with tracemalloc off; stop it at teardown, whoever started it."""
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc was already tracing in this process (PYTHONTRACEMALLOC or -X tracemalloc)")
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """Freeze every object so far, as the gunicorn master does before fork; unfreeze at teardown."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def uss() -> Callable[[], int]:
    """This process's USS from /proc/self/smaps_rollup (Private_Clean + Private_Dirty); skip without it."""
    if read_smaps_rollup("self") is None:
        pytest.skip("no /proc/self/smaps_rollup here: the verdict needs the real USS")

    def read() -> int:
        memory = read_smaps_rollup("self")
        assert memory is not None and memory.uss_bytes is not None
        return memory.uss_bytes

    return read


@pytest.fixture
def libc() -> ctypes.CDLL:
    """glibc's malloc, memset and free, for a leak Python cannot see; skip elsewhere."""
    try:
        library = ctypes.CDLL("libc.so.6")
    except OSError as error:
        pytest.skip(f"no libc.so.6: {error}")
    library.malloc.restype = ctypes.c_void_p
    library.malloc.argtypes = [ctypes.c_size_t]
    library.memset.restype = ctypes.c_void_p
    library.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    library.free.restype = None
    library.free.argtypes = [ctypes.c_void_p]
    return library


def marker_line(function: Callable[..., object], marker: str) -> int:
    """The line number in this file of the line of `function` that holds `marker`."""
    lines, first_line = inspect.getsourcelines(function)
    matches = [first_line + offset for offset, text in enumerate(lines) if marker in text]
    assert len(matches) == 1, f"{marker} should mark one line of {function.__name__}"
    return matches[0]


def armed_watch(boot_uss_bytes: int = BOOT_USS_BYTES, arm_uss_bytes: int = ARM_USS_BYTES) -> GrowthWatch:
    watch = GrowthWatch(boot_uss_bytes, APP_ROOT)
    assert watch.maybe_arm(arm_uss_bytes, threshold_bytes=arm_uss_bytes)
    return watch


def leak_bytes(kept: list[bytes], blocks: int) -> None:
    for _ in range(blocks):
        kept.append(bytes(2000))  # LEAK-BYTES


class CacheHolder:
    def __init__(self) -> None:
        self.cache: dict[str, str] = {}


def fill_cache(holder: CacheHolder, entries: int) -> None:
    for index in range(entries):
        holder.cache[f"user:{index}"] = "x" * 300 + str(index)  # LEAK-CACHE


class Leaky:
    def __init__(self, index: int) -> None:
        self.index = index


def test_bytes_appended_at_a_line_are_named_by_that_line(tracing, frozen_heap):
    watch = armed_watch()
    kept: list[bytes] = []
    leak_bytes(kept, 20_000)

    report = watch.report(REPORT_USS_BYTES, "memory")

    assert report.sites[0].where == f"{THIS_FILE}:{marker_line(leak_bytes, 'LEAK-BYTES')}"
    assert report.sites[0].count >= 20_000
    assert report.sites[0].kb >= 20_000 * 2000 / 1024
    assert report.types[0].type_name == "bytes"
    assert report.types[0].count_growth >= 19_900  # net growth: a few bytes objects of the boot census are gone
    assert report.traced_bytes is not None and report.traced_bytes >= 20_000 * 2000
    assert not tracemalloc.is_tracing(), "the watch started tracing, so the report stops it"


def test_a_python_leak_earns_the_python_verdict(tracing, frozen_heap, uss):
    malloc_trim()  # heap freed by earlier tests would take the leak without the USS growing
    watch = armed_watch(uss(), uss())
    kept: list[bytes] = []
    leak_bytes(kept, 20_000)

    report = watch.report(uss(), "memory")

    assert report.verdict == "python"
    assert report.python_share_percent is not None and report.python_share_percent >= 50
    assert "native memory or fragmentation" not in report.line()


def test_a_dict_cache_of_strings_is_named_by_its_line_and_str(tracing, frozen_heap):
    watch = armed_watch()
    holder = CacheHolder()
    fill_cache(holder, 20_000)

    report = watch.report(REPORT_USS_BYTES, "memory")

    assert report.sites[0].where == f"{THIS_FILE}:{marker_line(fill_cache, 'LEAK-CACHE')}"
    assert report.types[0].type_name == "str"
    assert report.types[0].count_growth >= 39_900  # a key and a value an entry, less a few gone since boot


def test_a_malloc_leak_is_native(tracing, uss, libc):
    watch = armed_watch(uss(), uss())
    size_bytes = 48 * MIB  # past glibc's largest mmap threshold (32 MB): fresh pages, never reused heap
    block = libc.malloc(size_bytes)
    assert block, "malloc failed"
    try:
        libc.memset(block, 1, size_bytes)  # touch every page, so that it counts in the USS
        report = watch.report(uss(), "memory")
    finally:
        libc.free(block)

    assert report.verdict == "native"
    assert report.python_share_percent is not None and report.python_share_percent < 20
    assert report.unaccounted_bytes is not None and report.unaccounted_bytes >= 40 * MIB
    assert "native memory or fragmentation" in report.line()


def test_fragmentation_with_nothing_leaked_is_not_blamed_on_a_python_site(tracing, uss):
    watch = armed_watch(uss(), uss())
    # 20 MB, not more: every server a later test starts inherits this process's peak RSS (ru_maxrss
    # survives fork and exec), and a server on getrusage's peak judges its budget by it.
    blocks = [bytes(100) for _ in range(150_000)]
    kept = blocks[::16]  # one block in 16 keeps each pymalloc pool, and so each arena, held
    del blocks

    report = watch.report(uss(), "memory")

    assert len(kept) == 150_000 // 16
    growth_bytes = report.growth_since_arm_bytes
    assert growth_bytes is not None and growth_bytes >= 8 * MIB, "the freed blocks should still hold their arenas"
    assert report.verdict == "native"
    assert report.python_share_percent is not None and report.python_share_percent < 25
    assert all(site.kb * 1024 < growth_bytes / 4 for site in report.sites)


def test_sites_in_libraries_come_out_relative(tracing, frozen_heap):
    watch = armed_watch()
    decoded = [json.loads(f'{{"name": "n{index}", "tags": ["a", "b"]}}') for index in range(5_000)]
    headers = [parse_list_header(f"a, b, c, d{index}") for index in range(5_000)]

    report = watch.report(REPORT_USS_BYTES, "memory")

    assert len(decoded) == len(headers) == 5_000
    assert report.snapshot_blocks is not None, report.unavailable
    wheres = [site.where for site in report.sites]
    assert any(where.startswith("<stdlib>/json/") for where in wheres), wheres
    assert any(where.startswith("site-packages/werkzeug/") for where in wheres), wheres
    for where in wheres:
        assert not where.startswith("/"), where
        assert str(APP_ROOT) not in where and sys.prefix not in where, where


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("/srv/app/myapp/models.py", "myapp/models.py:12"),
        ("/srv/app/.venv/lib/python3.11/site-packages/requests/models.py", "site-packages/requests/models.py:12"),
        ("/usr/lib/python3/dist-packages/yaml/nodes.py", "dist-packages/yaml/nodes.py:12"),
        ("/usr/lib/python3.11/json/decoder.py", "<stdlib>/json/decoder.py:12"),
        ("/usr/lib/python3.11/site-packages/flask/app.py", "site-packages/flask/app.py:12"),
        ("/home/someone/private/tool.py", "tool.py:12"),
        ("relative/thing.py", "thing.py:12"),
        ("<string>", "<string>:12"),
        ("/srv/application/other.py", "other.py:12"),  # shares a prefix with the app root, not under it
    ],
)
def test_relative_where(filename, expected):
    assert relative_where(filename, 12, "/srv/app", "/usr/lib/python3.11") == expected


def test_leaked_instances_are_named_by_module_and_class(tracing, frozen_heap):
    watch = armed_watch()
    kept = [Leaky(index) for index in range(5_000)]

    report = watch.report(REPORT_USS_BYTES, "memory")

    assert len(kept) == 5_000
    growth = {t.type_name: t.count_growth for t in report.types}
    assert growth.get("tests.unit.test_growth.Leaky", 0) >= 5_000, report.types
    assert type_name(bytes) == "bytes"
    assert type_name(Leaky) == "tests.unit.test_growth.Leaky"


def test_a_big_tracemalloc_skips_the_snapshot_and_says_so(tracing, frozen_heap):
    watch = armed_watch()
    kept: list[bytes] = []
    leak_bytes(kept, 1_000)

    report = watch.report(REPORT_USS_BYTES, "memory", max_tracemalloc_bytes=1)

    assert report.sites == ()
    assert report.snapshot_blocks is None
    assert "snapshot skipped" in dict(report.unavailable)["sites"]
    assert "snapshot skipped" in report.line()
    assert report.traced_bytes is not None and report.traced_bytes >= 1_000 * 2000, "the cheap figures remain"
    assert not tracemalloc.is_tracing()


@pytest.mark.parametrize(("time_limit_s", "max_census_objects"), [(0.0, 2_000_000), (10.0, 1)])
def test_a_census_past_its_bounds_is_marked_cut_short(tracing, time_limit_s, max_census_objects):
    watch = armed_watch()
    kept: list[bytes] = []
    leak_bytes(kept, 5_000)

    report = watch.report(REPORT_USS_BYTES, "memory", time_limit_s=time_limit_s, max_census_objects=max_census_objects)

    assert report.census_cut_short
    assert any("census cut short" in note for note in report.notes)
    assert "census cut short" in report.line()


def test_a_census_in_bounds_is_not_cut_short(frozen_heap):
    census = take_census(10.0)
    assert not census.cut_short


def test_maybe_arm_arms_past_the_share_and_only_once(tracing):
    watch = GrowthWatch(BOOT_USS_BYTES, APP_ROOT)
    just_below_bytes = int(THRESHOLD_BYTES * ARM_FRACTION) - 1

    assert not watch.maybe_arm(just_below_bytes, THRESHOLD_BYTES)
    assert not tracemalloc.is_tracing()
    assert watch.maybe_arm(just_below_bytes + 1, THRESHOLD_BYTES)
    assert tracemalloc.is_tracing()
    assert not watch.maybe_arm(THRESHOLD_BYTES, THRESHOLD_BYTES), "armed already"

    report = watch.report(REPORT_USS_BYTES, "memory")

    assert report.uss_at_arm_bytes == just_below_bytes + 1
    assert report.armed_after_s is not None and report.armed_after_s >= 0
    assert not tracemalloc.is_tracing()


def test_a_tracemalloc_the_caller_started_is_used_and_left_running(tracing, frozen_heap):
    tracemalloc.start(1)
    watch = GrowthWatch(BOOT_USS_BYTES, APP_ROOT)

    assert watch.maybe_arm(ARM_USS_BYTES, THRESHOLD_BYTES)
    kept: list[bytes] = []
    leak_bytes(kept, 2_000)
    report = watch.report(REPORT_USS_BYTES, "memory")

    assert tracemalloc.is_tracing()
    assert any("already tracing" in note for note in report.notes)
    assert report.sites[0].where == f"{THIS_FILE}:{marker_line(leak_bytes, 'LEAK-BYTES')}"


def test_without_arming_the_tracing_figures_are_none_with_a_reason(tracing, frozen_heap):
    watch = GrowthWatch(BOOT_USS_BYTES, APP_ROOT)
    kept: list[bytes] = []
    leak_bytes(kept, 2_000)

    report = watch.report(REPORT_USS_BYTES, "memory")

    assert report.verdict == "unknown"
    assert report.uss_at_arm_bytes is report.traced_bytes is report.python_share_percent is None
    assert report.unaccounted_bytes is None and report.sites == ()
    assert "tracing never began" in dict(report.unavailable)["tracing"]
    assert "tracing never began" in report.line()
    assert report.types[0].type_name == "bytes", "the census works without tracing"


def test_the_watch_never_unfreezes_or_walks_frozen_objects(tracing, frozen_heap):
    frozen_count = gc.get_freeze_count()
    assert frozen_count > 10_000, "pytest and flask alone make more than this"

    watch = armed_watch()
    watch.report(REPORT_USS_BYTES, "memory")

    assert gc.get_freeze_count() == frozen_count
    assert watch.boot_census.objects_seen < frozen_count / 10


def test_the_census_counts_a_shared_object_once_and_needs_no_set_for_sole_ones(frozen_heap):
    before = take_census(10.0)
    unique = [f"unique-{index}" for index in range(5_000)]
    shared = "shared-" + "y" * 50
    holders = [[shared] for _ in range(5_000)]
    after = take_census(10.0)

    assert len(unique) == len(holders) == 5_000
    str_growth = after.counts["str"] - before.counts.get("str", 0)
    # Net growth, so a few strings of the first census may be gone; counted a holder each, it would be ~10,000.
    assert 4_950 <= str_growth < 5_200, "each unique string once, the shared one once"
    assert after.shared_seen - before.shared_seen < 500, "strings one list alone holds skip the id set"


@pytest.mark.parametrize(
    ("uss_growth_bytes", "traced_bytes", "overhead_bytes", "verdict"),
    [
        (80 * MIB, 78 * MIB, 1 * MIB, "python"),
        (80 * MIB, 5 * MIB, 1 * MIB, "native"),
        (80 * MIB, 40 * MIB, 0, "native"),  # the rest is exactly half
        (80 * MIB, 50 * MIB, 0, "python"),
        (80 * MIB, 10 * MIB, 60 * MIB, "python"),  # tracemalloc's own tables are not a native leak
        (NATIVE_MIN_BYTES - 1, 0, 0, "unknown"),  # too little growth to tell
        (6 * MIB, 0, 3 * MIB, "unknown"),  # the rest is half, but under the native minimum
        (0, 0, 0, "unknown"),
    ],
)
def test_growth_verdict(uss_growth_bytes, traced_bytes, overhead_bytes, verdict):
    assert growth_verdict(uss_growth_bytes, traced_bytes, overhead_bytes) == verdict


def make_report(**changes) -> GrowthReport:
    fields = dict(
        pid=1234,
        reason="memory",
        uss_bytes=360 * MIB,
        uss_at_boot_bytes=40 * MIB,
        uss_at_arm_bytes=280 * MIB,
        armed_after_s=812.5,
        traced_bytes=78 * MIB,
        tracing_overhead_bytes=1 * MIB,
        python_share_percent=97.5,
        unaccounted_bytes=1 * MIB,
        verdict="python",
        sites=(Site("app.py:12", 79_872.0, 40_000),),
        types=(TypeGrowth("bytes", 40_000, 79_800.0),),
        census_cut_short=False,
        snapshot_blocks=41_000,
        report_ms=120.5,
        report_cpu_ms=110.25,
    )
    fields.update(changes)
    return GrowthReport(**fields)


def test_line_says_native_only_for_the_native_verdict():
    python_line = make_report().line()
    native_line = make_report(
        traced_bytes=4 * MIB, python_share_percent=5.0, unaccounted_bytes=75 * MIB, verdict="native"
    ).line()

    assert "native memory or fragmentation" not in python_line
    assert "Python holds 78.0MB of that (98%)" in python_line
    assert "app.py:12 78.0MB x40000" in python_line
    assert "the rest, 75.0MB (94%), is native memory or fragmentation (not Python objects)" in native_line


def test_as_dict_round_trips_through_json(tracing, frozen_heap):
    watch = armed_watch()
    kept: list[bytes] = []
    leak_bytes(kept, 2_000)
    report = watch.report(REPORT_USS_BYTES, "memory")

    text = json.dumps(report.as_dict())

    assert GrowthReport.from_dict(json.loads(text)) == report
    assert len(text) <= MAX_REPORT_JSON_BYTES
    assert "ussAtArmBytes" in text and "pythonSharePercent" in text


def test_json_and_line_stay_bounded_whatever_the_fields_hold():
    long_path = "site-packages/" + "deep/" * 100 + "module.py:1"
    report = make_report(
        reason="memory " * 50,
        sites=tuple(Site(long_path + str(index), 1.5, 3) for index in range(50)),
        types=tuple(TypeGrowth("package." * 40 + f"Kind{index}", 10, 1.5) for index in range(200)),
        notes=tuple("note " * 100 for _ in range(20)),
        unavailable=tuple((f"figure{index}", "why " * 100) for index in range(20)),
    )

    document = report.as_dict()

    assert len(json.dumps(document)) <= MAX_REPORT_JSON_BYTES
    assert len(report.line()) <= MAX_LINE_CHARS
    assert document["sites"] and document["types"], "the clips keep the lists, shorter"
    assert all(len(site["where"]) < 100 for site in document["sites"])
    assert GrowthReport.from_dict(document).sites[0].where.endswith("module.py:10")
