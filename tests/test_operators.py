"""What each reader gets: probes, health+json, /metrics, access control, headers, logs, OpenAPI."""

from __future__ import annotations

import base64
import json
import re
import time
from urllib.parse import quote, quote_plus

import pytest

from fitflix import create_app
from fitflix.serving.state import RUNTIME
from fitflix.settings import Settings
from fitflix.web.health import health_json_status, readiness_problem
from harness.metrics import metric_samples
from harness.wait import poll_until
from tests.fakes import MIB

pytestmark = pytest.mark.usefixtures("standalone_runtime")

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

TOKEN = "s3cret-token-for-tests-only"
HEALTH_JSON = "application/health+json"


class _Worker:
    def __init__(self, alive: bool) -> None:
        self.alive = alive


def _basic(password: str, user: str = "ops") -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- probes ---------------------------------------------------------------------------------


def test_liveness_stays_200_when_memory_is_critical(fake_machine_app):
    app = fake_machine_app(Settings(health_fail_on_critical=True, ready_fail_on_critical=True), usage_bytes=500 * MIB)
    response = app.test_client().get("/health/live")
    assert response.status_code == 200 and response.get_json() == {"status": "OK"}


@pytest.mark.parametrize(
    ("alive", "usage_mb", "fail_on_critical", "code"),
    [
        (True, 100, True, 200),
        (False, 100, False, 503),  # this worker is shutting down
        (True, 500, False, 200),  # critical, but readiness was not asked to care
        (True, 500, True, 503),
    ],
)
def test_readiness(fake_machine_app, monkeypatch, alive, usage_mb, fail_on_critical, code):
    app = fake_machine_app(Settings(ready_fail_on_critical=fail_on_critical), usage_bytes=usage_mb * MIB)
    monkeypatch.setattr(RUNTIME, "worker", _Worker(alive))
    response = app.test_client().get("/health/ready")
    assert response.status_code == code
    assert response.get_json()["status"] == ("READY" if code == 200 else "NOT_READY")


@pytest.mark.parametrize(
    ("alive", "status", "fail_on_critical", "draining", "problem"),
    [
        (True, "OK", True, False, None),
        (True, "WARNING", True, False, None),
        (True, "CRITICAL", False, False, None),
        (True, "CRITICAL", True, False, "memory is critical"),
        (False, "OK", False, False, "this worker is shutting down"),
        (True, "OK", False, True, "draining"),
        (False, "CRITICAL", True, True, "draining"),  # the service-wide reason first
    ],
)
def test_readiness_problem(alive, status, fail_on_critical, draining, problem):
    assert readiness_problem(alive, status, fail_on_critical, draining) == problem


# --- application/health+json ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "fail_on_critical", "expected"),
    [("OK", False, "pass"), ("WARNING", True, "warn"), ("CRITICAL", False, "warn"), ("CRITICAL", True, "fail")],
)
def test_health_json_status(status, fail_on_critical, expected):
    assert health_json_status(status, fail_on_critical) == expected


@pytest.mark.parametrize(
    ("usage_mb", "fail_on_critical", "status", "code"),
    [(100, False, "pass", 200), (420, False, "warn", 200), (500, False, "warn", 200), (500, True, "fail", 503)],
)
def test_memory_as_health_json(fake_machine_app, usage_mb, fail_on_critical, status, code):
    app = fake_machine_app(Settings(health_fail_on_critical=fail_on_critical), usage_bytes=usage_mb * MIB)
    response = app.test_client().get("/health/memory", headers={"Accept": HEALTH_JSON})
    assert response.status_code == code
    assert response.content_type == HEALTH_JSON
    body = response.get_json()
    assert body["status"] == status
    [utilization] = body["checks"]["memory:utilization"]
    assert utilization["observedUnit"] == "percent"
    assert utilization["observedValue"] == round(100 * usage_mb / 512)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utilization["time"])
    assert ("output" in body) is (status != "pass")


def test_plain_json_stays_the_default_for_clients_that_accept_anything(client):
    response = client.get("/health/memory", headers={"Accept": "*/*"})
    assert response.content_type == "application/json" and "memory" in response.get_json()


@pytest.mark.parametrize(
    "accept",
    [None, "", "*/*", "application/health+json", "text/html", "*/*;q=0.1, text/html", BROWSER_ACCEPT, "image/png"],
)
def test_the_accept_shortcut_chooses_what_full_negotiation_chooses(accept):
    from werkzeug.datastructures import MIMEAccept
    from werkzeug.http import parse_accept_header

    from fitflix.web.health import HEALTH_JSON, HTML, JSON, _negotiated

    app = create_app(Settings(max_memory_mb=512))
    with app.test_request_context("/health", headers={"Accept": accept} if accept is not None else {}):
        full = parse_accept_header(accept, MIMEAccept).best_match([JSON, HEALTH_JSON, HTML], default=JSON)
        assert _negotiated() == full


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", "/health/memory"])
def test_health_answers_vary_on_accept_and_authorization_once(client, path):
    assert client.get(path).headers.getlist("Vary") == ["Accept, Authorization"]


# --- access control -------------------------------------------------------------------------


@pytest.fixture
def guarded():
    """A test client of an app with HEALTH_TOKEN set."""
    return create_app(Settings(max_memory_mb=512, health_token=TOKEN)).test_client()


@pytest.mark.parametrize("accept", [None, "application/json", "text/html", BROWSER_ACCEPT])
@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready"])
def test_probes_stay_public_with_status_only_whatever_the_accept_header(guarded, path, accept):
    """An uptime checker that sends a browser's headers must not see a login prompt and call the service down."""
    response = guarded.get(path, headers={"Accept": accept} if accept else {})
    assert response.status_code == 200
    assert "WWW-Authenticate" not in response.headers
    assert response.content_type == "application/json"
    assert set(response.get_json()) <= {"status"}


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/health/memory", "application/json"),
        ("/health/memory", HEALTH_JSON),
        ("/health/memory", "text/html"),
        ("/metrics", "*/*"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-of-some-length"},
        _basic("nope"),
        {"Authorization": "Basic !!!"},
        {"Authorization": f"Token {TOKEN}"},
    ],
    ids=["none", "wrong-bearer", "wrong-basic", "malformed-basic", "unknown-scheme"],
)
def test_figures_need_the_token(guarded, path, accept, headers):
    response = guarded.get(path, headers={"Accept": accept, **headers})
    assert response.status_code == 401
    assert response.content_type == "application/json" and response.get_json()["status"] == 401
    assert any(value.startswith("Basic realm=") for value in response.headers.getlist("WWW-Authenticate"))
    assert str(RUNTIME.master_pid).encode() not in response.data


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {TOKEN}"}, _basic(TOKEN), _basic(TOKEN, user="")])
def test_the_token_opens_the_figures(guarded, headers):
    assert guarded.get("/health/memory", headers=headers).status_code == 200
    assert guarded.get("/metrics", headers=headers).status_code == 200
    assert "uptimeSeconds" in guarded.get("/health", headers=headers).get_json()


def test_openapi_document_is_public_and_describes_every_route(guarded):
    response = guarded.get("/openapi.json")
    assert response.status_code == 200
    documented = set(response.get_json()["paths"])
    app = create_app(Settings(max_memory_mb=512))
    routes = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert routes == documented


# --- hardening ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/health/memory", "/metrics", "/nowhere", "/openapi.json"])
def test_security_headers_on_every_answer(client, guarded, path):
    for response in (client.get(path), guarded.get(path), client.post(path)):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_debug_mode_stays_off_whatever_flask_debug_says(monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app(Settings(max_memory_mb=512))
    assert app.debug is False


def test_the_token_never_shows_in_settings_repr():
    assert TOKEN not in repr(Settings(health_token=TOKEN))


# --- /metrics -------------------------------------------------------------------------------


def test_metrics_on_v2_give_memory_high_events_and_pressure(fake_machine_app):
    pressure = (
        "some avg10=31.20 avg60=8.00 avg300=2.00 total=7250000\nfull avg10=4.50 avg60=1.00 avg300=0.20 total=1500000\n"
    )
    app = fake_machine_app(
        Settings(), usage_bytes=340 * MIB, oom_kill=1, v2={"memory_high": 400 * MIB, "pressure": pressure}
    )

    samples = metric_samples(app.test_client().get("/metrics").get_data(as_text=True))

    assert samples[("fitflix_memory_limit_bytes", (("source", "cgroup v2 memory.high"),))] == 400 * MIB
    assert samples[("fitflix_container_memory_high_bytes", ())] == 400 * MIB
    events = {
        labels[0][1]: value
        for (name, labels), value in samples.items()
        if name == "fitflix_container_memory_events_total"
    }
    assert events == {"high": 0, "max": 3, "oom": 1, "oom_kill": 1, "oom_group_kill": 0}
    assert samples[("fitflix_container_memory_pressure_stalled_seconds_total", (("kind", "some"),))] == 7.25
    assert samples[("fitflix_container_memory_pressure_stalled_seconds_total", (("kind", "full"),))] == 1.5
    assert samples[("fitflix_container_memory_pressure_avg10_ratio", (("kind", "some"),))] == 0.312


def test_metrics_on_v1_have_no_v2_families(fake_machine_app):
    app = fake_machine_app(Settings(), usage_bytes=300 * MIB)

    names = {name for name, _labels in metric_samples(app.test_client().get("/metrics").get_data(as_text=True))}

    assert "fitflix_container_oom_kills_total" in names
    assert not {name for name in names if "memory_events" in name or "pressure" in name or "memory_high" in name}


def test_metrics_parse_and_match_health_memory(fake_machine_app):
    app = fake_machine_app(Settings(), usage_bytes=300 * MIB, inactive_file_bytes=44 * MIB, oom_kill=2)
    client = app.test_client()
    memory = client.get("/health/memory").get_json()
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    samples = metric_samples(response.get_data(as_text=True))
    assert samples[("fitflix_memory_limit_bytes", (("source", "cgroup v1"),))] == memory["container"]["limitBytes"]
    assert samples[("fitflix_container_memory_usage_bytes", ())] == memory["container"]["usageBytes"]
    assert samples[("fitflix_container_memory_working_set_bytes", ())] == memory["container"]["workingSetBytes"]
    assert samples[("fitflix_container_oom_kills_total", ())] == 2
    assert samples[("fitflix_service_pss_bytes", ())] == memory["servicePssBytes"]
    for process in memory["processes"]:
        labels = (("pid", str(process["pid"])), ("role", process["role"]))
        assert samples[("fitflix_process_uss_bytes", labels)] == process["ussBytes"]
        assert samples[("fitflix_process_pss_bytes", labels)] == process["pssBytes"]
    assert samples[("fitflix_memory_status", (("status", "OK"),))] == 1


# --- live: logs, recycle counts in metrics, the start warning, schemathesis --------------------------------


@pytest.mark.live
def test_every_access_line_is_written_also_by_workers_that_recycle(live_server):
    """Access lines wait for the worker's loop (fitflix.serving.logs.BufferedLineHandler): none may be lost."""
    server = live_server({"MAX_REQUESTS": "7", "MAX_REQUESTS_JITTER": "0"})
    # A worker at MAX_REQUESTS serves on until its replacement is up: requests until three have left.
    sent, deadline = 0, time.monotonic() + 30
    while server.log().count("reason=max_requests") < 3 and sent < 2000 and time.monotonic() < deadline:
        assert server.request("GET", f"/health?n={sent}")[0] == 200
        sent += 1

    def written():
        lines = re.findall(r'"GET /health\?n=(\d+) HTTP/1.1" 200', server.log())
        return lines if len(lines) >= sent else None

    lines = poll_until(written, 10, f"an access line for each of {sent} requests")
    assert sorted(map(int, lines)) == list(range(sent))
    assert server.log().count("reason=max_requests") >= 3


@pytest.mark.live
def test_live_metrics_count_requests_and_recycles_across_workers(live_server):
    server = live_server({"WEB_CONCURRENCY": "2", "MAX_REQUESTS": "10", "MAX_REQUESTS_JITTER": "0"})
    for _ in range(40):
        assert server.request("GET", "/health")[0] == 200

    def counted():
        samples = metric_samples(server.request("GET", "/metrics")[2].decode())
        return samples if samples[("fitflix_worker_recycles_total", (("reason", "max_requests"),))] >= 2 else None

    samples = poll_until(counted, 10, "max_requests recycles in /metrics")
    assert samples[("fitflix_requests_served_total", ())] >= 40
    status, memory = server.get_json("/health/memory")
    assert (
        memory["recycles"]["max_requests"] >= samples[("fitflix_worker_recycles_total", (("reason", "max_requests"),))]
    )


@pytest.mark.live
def test_json_logs_and_probe_lines_left_out(live_server):
    server = live_server({"LOG_FORMAT": "json", "ACCESS_LOG_HEALTH": "false"})
    for path in ("/health", "/health/live", "/health/ready", "/health/memory", "/metrics"):
        assert server.request("GET", path)[0] == 200
    poll_until(lambda: '"path": "/metrics"' in server.log(), 5, "the /metrics access line")
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    paths = [line.get("path") for line in lines if line["logger"] == "gunicorn.access"]
    assert "/health/memory" in paths and "/metrics" in paths
    assert not {"/health", "/health/live", "/health/ready"} & set(paths)
    assert any(line["message"].startswith("FitFlix Backend Server running on port") for line in lines)


@pytest.mark.live
@pytest.mark.parametrize(("token", "warned"), [(None, True), (TOKEN, False)])
def test_one_warning_at_start_when_details_are_public(live_server, token, warned):
    server = live_server({"HEALTH_TOKEN": token} if token else {})
    log = server.log()
    assert log.count("HEALTH_TOKEN is not set") == (1 if warned else 0)
    assert TOKEN not in log


# A token whose URL-encoded form differs from it: both must stay out of the logs.
ODD_TOKEN = "s3cret+token/with=odd&chars!"


def _ways_to_send(token: str) -> list[tuple[str, dict]]:
    """(path, headers): every way a client may put the token in a request."""
    encoded = quote(token, safe="")
    return [
        ("/health/memory", {"Authorization": f"Bearer {token}"}),
        ("/health/memory", _basic(token)),  # the password, as documented
        ("/health/memory", _basic("", user=token)),  # the user name: curl -u "$HEALTH_TOKEN:"
        ("/health/memory", {"Authorization": "Basic " + base64.b64encode(f"{token}:{token}".encode()).decode()}),
        (f"/health/memory?token={encoded}", {}),
        (f"/metrics?access_token={encoded}&a=1", {}),
        (f"/health?{encoded}", {"Referer": f"https://dash.example/?key={encoded}"}),
        (f"/nowhere?api_key={encoded}", {"Authorization": f"Bearer {token}"}),
    ]


@pytest.mark.live
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_log_line_carries_the_token(live_server, log_format):
    server = live_server({"HEALTH_TOKEN": ODD_TOKEN, "LOG_FORMAT": log_format, "LOG_LEVEL": "debug"})
    ways = _ways_to_send(ODD_TOKEN)
    for path, headers in ways:
        server.request("GET", path, headers=headers)
    poll_until(lambda: server.log().count("/nowhere") >= 1, 5, "the last access line")
    log = server.log()
    for form in {ODD_TOKEN, quote(ODD_TOKEN, safe=""), quote_plus(ODD_TOKEN)}:
        assert form not in log
    access_lines = [line for line in log.splitlines() if "/health/memory" in line or "/metrics" in line]
    assert len(access_lines) >= 5  # the requests were logged, only without the secret
    assert "[redacted]" in log


def test_a_doubled_slash_is_a_json_404_not_a_redirect_built_from_host(client):
    response = client.get("/health//memory", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "Location" not in response.headers
    assert response.get_json()["status"] == 404


@pytest.mark.parametrize(("path", "allowed"), [("/health", ["GET", "HEAD", "OPTIONS"]), ("/metrics", None)])
def test_options_answers_json_with_allow(client, path, allowed):
    response = client.options(path)
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.get_json()["allow"] == sorted(response.allow)
    assert "GET" in response.allow
    if allowed is not None:
        assert sorted(response.allow) == allowed
