"""Part 17's pure helpers: reading a JSON log, knowing the answer from the source, judging a report."""

from __future__ import annotations

import json
import linecache

import pytest

from bench import growth
from bench.growth import Expected, judge


def report(**fields) -> dict:
    """A report as a worker logs it (the `growth` field), a Python leak unless `fields` say otherwise."""
    document = {
        "pid": 17797,
        "reason": "memory",
        "ussBytes": 176_136_192,
        "ussAtBootBytes": 4_243_456,
        "ussAtArmBytes": 140_201_984,
        "growthSinceBootBytes": 171_892_736,
        "growthSinceArmBytes": 35_934_208,
        "armedAfterS": 1.629,
        "tracedBytes": 34_647_643,
        "tracingOverheadBytes": 59_328,
        "pythonSharePercent": 96.4,
        "unaccountedBytes": 1_227_237,
        "verdict": "python",
        "sites": [
            {"where": "bench/growth_app.py:57", "kb": 33829.0, "count": 529},
            {"where": "fitflix/serving/logs.py:90", "kb": 1.8, "count": 32},
        ],
        "types": [{"type": "str", "countGrowth": 1445, "kbGrowth": 101.3}],
        "censusCutShort": False,
        "snapshotBlocks": 629,
        "reportMs": 9.05,
        "reportCpuMs": 8.69,
        "notes": [],
        "unavailable": {},
    }
    document.update(fields)
    return document


def record(message: str, **extra) -> str:
    return json.dumps({"time": "2025-01-01T00:00:00.000+00:00", "level": "INFO", "pid": 1, "message": message, **extra})


LOG = "\n".join(
    [
        "[2025-01-01 00:00:00 +0000] [1] [INFO] a text line before the JSON logger took over",
        record("Worker 17797: past 90% of its threshold; tracing allocations to say what grew"),
        record(
            "Recycling worker pid=17797 reason=memory rss=186.2MB uss=163.2MB budget=150MB threshold=148.5MB "
            "hard_cap=252MB requests=161 age=2.1s"
        ),
        record("What grew in worker 17797 (memory): uss 168.0MB", growth=report()),
        '{"a line cut short": ',
        "Traceback (most recent call last):",
        "[1, 2]",
        record("Worker 17900: past 90% of its threshold; tracing allocations to say what grew"),
    ]
)


def test_json_records_keeps_the_json_objects_and_leaves_out_every_other_line():
    records = growth.json_records(LOG)
    assert [entry["message"][:12] for entry in records] == [
        "Worker 17797",
        "Recycling wo",
        "What grew in",
        "Worker 17900",
    ]


def test_the_reports_the_armed_workers_and_the_recycles_are_read_from_the_records():
    records = growth.json_records(LOG)
    assert growth.growth_reports(records) == [report()]
    assert growth.armed_pids(records) == [17797, 17900]
    assert [(r.pid, r.reason, r.rss_mb, r.uss_mb, r.threshold_mb) for r in growth.recycles(records)] == [
        (17797, "memory", 186.2, 163.2, 148.5)
    ]


def test_no_report_in_a_log_without_one():
    assert growth.growth_reports(growth.json_records(record("Booting worker with pid: 3"))) == []


def test_marked_line_is_the_one_line_holding_the_marker():
    source = "a = 1\nb = [2]  # leak: list\nc = 3\n"
    assert growth.marked_line(source, "# leak: list") == 2
    assert growth.app_site("list", source) == "bench/growth_app.py:2"


@pytest.mark.parametrize("source", ["a = 1\n", "a  # leak: list\nb  # leak: list\n"])
def test_marked_line_refuses_a_marker_on_no_line_or_on_two(source):
    with pytest.raises(ValueError, match="not one"):
        growth.marked_line(source, "# leak: list")


def test_the_app_s_marked_lines_are_the_lines_that_leak():
    for marker, code in (("list", "_kept_bytes.append("), ("cache", "_cache[key] = ")):
        where = growth.app_site(marker)
        line = int(where.rpartition(":")[2])
        assert code in linecache.getline(str(growth.APP_SOURCE), line)


def test_every_leak_s_route_is_in_the_app():
    source = growth.APP_SOURCE.read_text()
    for leak in growth.known_leaks():
        assert f'"{leak.path.partition("?")[0]}": (' in source, leak.path


def test_the_library_leak_s_answer_is_the_json_decoder_line_that_calls_the_c_scanner():
    where = growth.json_decoder_site()
    assert where.startswith("<stdlib>/json/decoder.py:")
    import json.decoder

    assert "self.scan_once(" in linecache.getline(json.decoder.__file__, int(where.rpartition(":")[2]))


def test_leak_path_adds_the_pace():
    assert growth.leak_path("/grow/list?kb=64") == "/grow/list?kb=64&ms=20"
    assert growth.leak_path("/grow/native", 5) == "/grow/native?ms=5"


SITE = Expected("site", "bench/growth_app.py:57")
STR = Expected("type", "str")
NATIVE = Expected("native")
FRAGMENTATION = Expected("fragmentation")
NATIVE_REPORT = {"verdict": "native", "pythonSharePercent": 0.0, "sites": [{"where": "x.py:1", "kb": 1.3, "count": 1}]}
SMALL_SITES = [{"where": "bench/growth_app.py:79", "kb": 3072.0, "count": 11725}]  # 3 MB of 35 MB since arming


@pytest.mark.parametrize(
    ("expected", "fields", "right", "why"),
    [
        (SITE, {}, True, "top site bench/growth_app.py:57"),
        (SITE, {"sites": [{"where": "bench/growth_app.py:58", "kb": 1.0, "count": 1}]}, False, "growth_app.py:58"),
        (
            SITE,
            {"sites": [], "unavailable": {"sites": "snapshot skipped: tracemalloc holds 9.0MB"}},
            False,
            "no sites: snapshot skipped",
        ),
        # str +101 KB of 164 MB grown: the census's everyday str, not the cache.
        (STR, {}, False, "not the leak"),
        (STR, {"types": [{"type": "str", "countGrowth": 126372, "kbGrowth": 129126.0}]}, True, "top type str"),
        (STR, {"types": [{"type": "list", "countGrowth": 136, "kbGrowth": 129126.0}]}, False, "top type list"),
        (STR, {"types": []}, False, "no types"),
        (NATIVE, NATIVE_REPORT, True, "verdict native"),
        (NATIVE, {}, False, "verdict python"),
        (FRAGMENTATION, NATIVE_REPORT, True, "verdict native"),
        (FRAGMENTATION, {"verdict": "unknown", "pythonSharePercent": 9.0, "sites": SMALL_SITES}, True, "no big"),
        (FRAGMENTATION, {"verdict": "python", "pythonSharePercent": 60.0}, False, "over 25%"),
        (FRAGMENTATION, {"verdict": "unknown", "pythonSharePercent": 20.0}, False, "big live site"),
        (FRAGMENTATION, {"verdict": "unknown", "pythonSharePercent": None}, False, "no Python share"),
    ],
)
def test_judge(expected, fields, right, why):
    judgement = judge(expected, report(**fields))
    assert judgement.right is right
    assert why in judgement.why


def test_judge_refuses_an_unknown_kind_of_answer():
    with pytest.raises(ValueError):
        judge(Expected("colour", "red"), report())


def test_describe_says_the_top_site_the_top_type_the_verdict_and_the_share():
    assert growth.describe(report()) == (
        "site bench/growth_app.py:57 33.0 MB x529; type str +1445 (101.3 KB); python, Python 96%"
    )
    skipped = report(sites=[], types=[], pythonSharePercent=None, unavailable={"sites": "snapshot skipped"})
    assert growth.describe(skipped) == "no sites (snapshot skipped); no types; python, Python ?"


def test_snapshot_text_says_whether_the_snapshot_was_taken():
    assert growth.snapshot_text(report()) == "snapshot taken (629 blocks copied)"
    skipped = report(snapshotBlocks=None, unavailable={"sites": "snapshot skipped: over the 8.0MB cap"})
    assert growth.snapshot_text(skipped) == "snapshot skipped: over the 8.0MB cap"


def test_ratio():
    assert growth.ratio(50.0, 100.0) == 0.5
    assert growth.ratio(None, 100.0) is None
    assert growth.ratio(50.0, 0.0) is None


def test_rounds_text():
    rounds = growth.Rounds(rps=[1000.0, 1200.0, 1100.0], cpu_us=[500.0, 400.0, 450.0])
    assert rounds.text() == "1100 req/s (rounds 1000-1200), 450 us worker CPU/req"
    assert growth.Rounds().text() == "not measured"


def test_a_site_or_type_answer_is_right_by_either():
    either = Expected("site-or-type", "bench/growth_app.py:63|str")
    by_line = {"sites": [{"where": "bench/growth_app.py:63", "kb": 16000, "count": 3}], "types": []}
    by_type = {
        "sites": [{"where": "bench/growth_app.py:99", "kb": 10, "count": 1}],
        "types": [{"type": "str", "countGrowth": 500, "kbGrowth": 90000}],
        "growthSinceBootBytes": 100 * 1024 * 1024,
    }
    neither = {
        "sites": [{"where": "x.py:1", "kb": 1, "count": 1}],
        "types": [{"type": "dict", "countGrowth": 1, "kbGrowth": 1}],
    }
    assert judge(either, by_line).right and judge(either, by_type).right
    assert not judge(either, neither).right
