"""What grew, with real gunicorn: a worker recycled for memory says which line or what kind of memory grew.

The leaks are the test app's own (harness/apps/leaky.py): bytearrays kept at a
known line, and C-level malloc no Python figure sees.
"""

from __future__ import annotations

import json
import re

from harness.apps import leaky
from harness.load import run_load
from harness.wait import poll_until

SERVICE = "harness.apps.service_with_leaks:app"
# The budget is small so that a few dozen 2 MB requests reach it; tracing starts at 90% of the threshold.
BUDGET = {"WORKER_MAX_MEMORY_MB": "120", "MAX_REQUESTS": "0"}
REPORT_LINE = re.compile(r"What grew in worker (\d+) \(memory\): (.*)")


def leak_until_reported(server, path: str) -> tuple[int, str]:
    """Leak (1 MB a request, 20 ms each: a worker younger than 2 s is not recycled below its hard cap)
    until a worker's report of what grew is in the log: (its pid, the rest of the line)."""
    for _round in range(30):
        result = run_load(server.port, path, requests=20, clients=2, time_limit_s=60)
        assert result.failed == 0, result.statuses
        found = REPORT_LINE.search(server.log())
        if found:
            return int(found.group(1)), found.group(2)
    found = poll_until(lambda: REPORT_LINE.search(server.log()), 10, "a report of what grew")
    return int(found.group(1)), found.group(2)


def test_a_python_leak_is_named_by_its_line_in_the_log_health_memory_and_metrics(live_server):
    server = live_server(BUDGET, app=SERVICE)
    pid, line = leak_until_reported(server, "/leak?mb=1&ms=20")
    assert f"top sites: {leaky.leak_site()} " in line, line
    assert "native memory or fragmentation" not in line
    assert f"Worker {pid}: past 90% of its threshold; tracing allocations" in server.log()

    def reported():
        document = server.get_json("/health/memory")[1]["growth"]
        return document if document["reports"] >= 1 and document["last"] else None

    growth = poll_until(reported, 10, "the report in /health/memory")
    report = next(entry for entry in growth["last"] if entry["pid"] == pid)
    assert report["verdict"] == "python" and report["reason"] == "memory"
    assert report["sites"][0]["where"] == leaky.leak_site()
    assert report["sites"][0]["kb"] >= 1024  # at least one 1 MiB block still alive since tracing began
    assert report["pythonSharePercent"] >= 50
    metrics = server.request("GET", "/metrics")[2].decode()
    assert re.search(r"^fitflix_growth_reports_total ([1-9]\d*)\.0$", metrics, flags=re.MULTILINE), metrics


def test_a_native_leak_is_said_to_be_native(live_server):
    server = live_server(BUDGET, app=SERVICE)
    _pid, line = leak_until_reported(server, "/native?mb=1&ms=20")
    assert "is native memory or fragmentation (not Python objects)" in line, line
    assert leaky.leak_site() not in line


def test_with_json_logs_the_report_is_a_json_field(live_server):
    server = live_server({**BUDGET, "LOG_FORMAT": "json"}, app=SERVICE)
    for _round in range(30):
        assert run_load(server.port, "/leak?mb=1&ms=20", requests=20, clients=2, time_limit_s=60).failed == 0
        if '"growth": {' in server.log():
            break
    records = [json.loads(text) for text in server.log().splitlines() if text.startswith("{") and '"growth"' in text]
    assert records, server.log()[-2000:]
    record = records[0]
    assert record["message"].startswith(f"What grew in worker {record['growth']['pid']} (memory)")
    assert record["growth"]["sites"][0]["where"] == leaky.leak_site()
    assert "/work/" not in json.dumps(record["growth"]), "an absolute path in the report"
