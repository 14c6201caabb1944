"""The Flask app through its test client: health endpoints, JSON errors, headers."""

from __future__ import annotations

import json
import os
import re
import threading

import pytest

from fitflix import create_app
from fitflix.serving import backstop
from fitflix.settings import Settings
from tests.fakes import MIB

pytestmark = pytest.mark.usefixtures("standalone_runtime")

MEMORY_KEYS = ("rss", "heapUsed", "heapTotal", "external", "limit", "usage", "available")


def _is_whole_or_null(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def test_health_answers_ok(client):
    response = client.get("/health")

    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = response.get_json()
    assert set(body) == {"status", "service", "uptimeSeconds", "timestamp"}
    assert body["status"] == "OK"
    assert body["service"] == "fitflix-backend"
    assert isinstance(body["uptimeSeconds"], (int, float)) and body["uptimeSeconds"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])


def test_health_memory_shape_on_this_machine(client):
    response = client.get("/health/memory")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] in ("OK", "WARNING", "CRITICAL")
    for key in MEMORY_KEYS:
        assert _is_whole_or_null(body["memory"][key]), (key, body["memory"][key])
    assert body["memory"]["limit"] == 512
    assert body["memory"]["limitSource"] == "env"
    assert body["memory"]["external"] is None
    assert 0 <= body["memory"]["available"] <= 512
    assert set(body["clustering"]) == {
        "enabled",
        "isWorker",
        "workerId",
        "workers",
        "plannedWorkers",
        "replacingWorker",
        "threads",
    }
    assert body["clustering"]["replacingWorker"] is None
    assert body["clustering"]["workerId"] == os.getpid()
    assert body["clustering"]["isWorker"] is False
    assert set(body["container"]) >= {"cgroupVersion", "limitBytes", "limitSource", "usageBytes", "oomKills"}
    assert body["container"]["limitBytes"] == 512 * MIB
    assert [process["pid"] for process in body["processes"]] == [os.getpid()]
    assert body["processes"][0]["role"] == "standalone"
    assert body["processes"][0]["pssBytes"] > 0
    assert body["thresholds"]["warnPercent"] == 80 and body["thresholds"]["criticalPercent"] == 90
    assert body["thresholds"]["warnBytes"] == 512 * MIB * 80 // 100
    assert body["recycles"] is None
    assert body["growth"] is None  # no gunicorn, no shared state: nothing recycled to report


def test_health_memory_on_v2_plans_for_memory_high_and_reports_events_and_pressure(fake_machine_app):
    pressure = (
        "some avg10=31.20 avg60=8.00 avg300=2.00 total=7250000\nfull avg10=4.50 avg60=1.00 avg300=0.20 total=1500000\n"
    )
    app = fake_machine_app(
        Settings(),
        usage_bytes=340 * MIB,
        inactive_file_bytes=20 * MIB,
        oom_kill=1,
        v2={"memory_high": 400 * MIB, "pressure": pressure},
    )

    body = app.test_client().get("/health/memory").get_json()

    # working set 320 MB of memory.high's 400 MB (not memory.max's 512): 80 %, WARNING
    assert (body["memory"]["limit"], body["memory"]["limitSource"], body["memory"]["usage"]) == (
        400,
        "cgroup v2 memory.high",
        80,
    )
    assert body["status"] == "WARNING"
    container = body["container"]
    assert (container["limitFile"], container["memoryMaxBytes"], container["memoryHighBytes"]) == (
        "memory.high",
        512 * MIB,
        400 * MIB,
    )
    assert container["events"] == {"high": 0, "max": 3, "oom": 1, "oomKill": 1, "oomGroupKill": 0}
    assert container["pressure"] == {
        "some": {"avg10": 31.2, "totalUs": 7_250_000},
        "full": {"avg10": 4.5, "totalUs": 1_500_000},
    }
    assert container["usedSource"] == "cgroup v2 working set"


def test_health_memory_figures_from_a_fake_machine(fake_machine_app):
    app = fake_machine_app(Settings(), usage_bytes=300 * MIB, inactive_file_bytes=44 * MIB, oom_kill=2)

    body = app.test_client().get("/health/memory").get_json()

    # working set 256 MB of a 512 MB cgroup limit: 50 %
    assert body["status"] == "OK"
    assert {key: body["memory"][key] for key in ("rss", "external", "limit", "usage", "available", "limitSource")} == {
        "rss": 40,  # the service's PSS
        "external": None,
        "limit": 512,
        "usage": 50,
        "available": 256,
        "limitSource": "cgroup v1",
    }
    assert all(_is_whole_or_null(body["memory"][key]) for key in MEMORY_KEYS)
    assert body["container"] == {
        "cgroupVersion": 1,
        "cgroupPath": "/process_api/0123456789abcdef",
        "limitBytes": 512 * MIB,
        "limitSource": "cgroup v1",
        "cgroupLimitBytes": 512 * MIB,
        "usageBytes": 300 * MIB,
        "workingSetBytes": 256 * MIB,
        "oomKills": 2,
        "limitFile": "memory.limit_in_bytes",
        "memoryMaxBytes": 512 * MIB,
        "memoryHighBytes": None,
        "events": None,  # v2 only
        "pressure": None,
        "usedBytes": 256 * MIB,
        "usedSource": "cgroup v1 working set",
        "neighboursBytes": (256 - 40) * MIB,  # the working set less the service's PSS
    }
    assert body["processes"] == [
        {
            "pid": os.getpid(),
            "role": "standalone",
            "rssBytes": 60 * MIB,
            "pssBytes": 40 * MIB,
            "ussBytes": 16 * MIB,
            "peakRssBytes": None,
            "source": "smaps_rollup",
            "unavailable": {},
        }
    ]
    assert body["servicePssBytes"] == 40 * MIB
    assert body["unavailable"] == {}
    assert body["clustering"]["enabled"] is False
    assert body["clustering"]["plannedWorkers"] == 1
    assert body["thresholds"] == {
        "warnPercent": 80,
        "criticalPercent": 90,
        "warnBytes": 512 * MIB * 80 // 100,
        "criticalBytes": 512 * MIB * 90 // 100,
        "workerBudgetMb": 361,
        "workerHardCapMb": 412,
        # A real limit (cgroup v1): the relative budget is off; the app's size is the master's to measure.
        "absoluteBudgetMb": 361,
        "relativeBudgetMb": None,
        "memoryMultiple": None,
        "appBaselineMb": None,
        "budgetRule": "absolute",
    }


@pytest.mark.parametrize(
    ("usage_bytes", "fail_on_critical", "expected_status", "expected_code"),
    [
        (470 * MIB, True, "CRITICAL", 503),
        (461 * MIB, True, "CRITICAL", 503),  # 90.04 %: just past the critical level
        (470 * MIB, False, "CRITICAL", 200),
        (460 * MIB, True, "WARNING", 200),  # 89.84 %: just short of it
        (420 * MIB, True, "WARNING", 200),
        (200 * MIB, True, "OK", 200),
        (200 * MIB, False, "OK", 200),
    ],
)
def test_health_fail_on_critical(fake_machine_app, usage_bytes, fail_on_critical, expected_status, expected_code):
    app = fake_machine_app(Settings(health_fail_on_critical=fail_on_critical), usage_bytes=usage_bytes)

    response = app.test_client().get("/health/memory")

    assert response.status_code == expected_code
    assert response.get_json()["status"] == expected_status
    assert response.headers["Cache-Control"] == "no-store"


def test_plain_health_stays_200_when_memory_is_critical(fake_machine_app):
    app = fake_machine_app(Settings(health_fail_on_critical=True), usage_bytes=500 * MIB)

    assert app.test_client().get("/health").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "expected_code"),
    [
        ("GET", "/health", 200),
        ("GET", "/health/memory", 200),
        ("HEAD", "/health", 200),
        ("HEAD", "/health/memory", 200),
        ("GET", "/no/such/page", 404),
        ("POST", "/health", 405),
        ("DELETE", "/health/memory", 405),
    ],
)
def test_every_answer_is_no_store(client, method, path, expected_code):
    response = client.open(path, method=method)

    assert response.status_code == expected_code
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/health", "/health/memory"])
def test_head_answers_headers_and_no_body(client, path):
    response = client.head(path)

    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.data == b""


def test_unknown_url_is_a_json_404(client):
    response = client.get("/no/such/page")

    assert response.status_code == 404
    assert response.content_type == "application/json"
    body = json.loads(response.data)
    assert body["error"] == "Not Found"
    assert body["status"] == 404
    assert body["message"]


def test_wrong_method_is_a_json_405_with_allow(client):
    response = client.post("/health")

    assert response.status_code == 405
    assert response.content_type == "application/json"
    assert {"GET", "HEAD"} <= {method.strip() for method in response.headers["Allow"].split(",")}
    assert "POST" not in response.headers["Allow"]
    body = json.loads(response.data)
    assert (body["error"], body["status"]) == ("Method Not Allowed", 405)


def test_a_view_out_of_memory_answers_a_json_503(monkeypatch):
    monkeypatch.setattr(backstop, "_tripped", threading.Event())  # trip() sets a process-wide flag
    app = create_app(Settings(max_memory_mb=512))

    @app.get("/test/out-of-memory")
    def out_of_memory():
        raise MemoryError

    response = app.test_client().get("/test/out-of-memory")

    assert response.status_code == 503
    assert response.content_type == "application/json"
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Cache-Control"] == "no-store"
    body = json.loads(response.data)
    assert (body["error"], body["status"]) == ("Service Unavailable", 503)
    assert "memory" in body["message"]
    assert backstop.tripped()


def test_a_view_that_raises_gives_a_json_500_without_the_traceback(caplog):
    app = create_app(Settings(max_memory_mb=512))

    @app.get("/test/broken")
    def broken():
        raise RuntimeError("the database password is hunter2")

    response = app.test_client().get("/test/broken")

    assert response.status_code == 500
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = json.loads(response.data)
    assert (body["error"], body["status"]) == ("Internal Server Error", 500)
    assert body["message"]
    assert b"Traceback" not in response.data and b"hunter2" not in response.data
    assert "Unhandled error" in caplog.text and "hunter2" in caplog.text  # the log keeps the detail


def test_the_500_handler_answers_with_its_own_message(caplog):
    app = create_app(Settings(max_memory_mb=512))

    @app.get("/test/broken")
    def broken():
        raise RuntimeError("boom")

    response = app.test_client().get("/test/broken")

    assert json.loads(response.data) == {
        "error": "Internal Server Error",
        "status": 500,
        "message": "The server could not complete the request.",
    }
    assert "TypeError" not in caplog.text


@pytest.mark.parametrize(("pool", "threads"), [(True, 2), (False, 1)], ids=["gthread-overridden", "sync"])
def test_clustering_threads_are_the_workers_own_not_the_plans(client, monkeypatch, pool, threads):
    # threads = 2 in a config of one's own, or --threads 2, overrides the plan's 8; a sync worker has one.
    from types import SimpleNamespace

    from fitflix.serving.state import RUNTIME

    worker = SimpleNamespace(cfg=SimpleNamespace(threads=2), tpool=object() if pool else None)
    monkeypatch.setattr(RUNTIME, "worker", worker)

    assert client.get("/health/memory").get_json()["clustering"]["threads"] == threads
