"""What each reader gets, from the app in this process: probes, health+json, /metrics, access control, headers, OpenAPI.

tests/live/test_operators.py reads the logs and counters of real gunicorn."""

from __future__ import annotations

import re

import pytest

from fitflix import create_app
from fitflix.serving.state import RUNTIME
from fitflix.settings import Settings
from fitflix.web.health import health_json_status, readiness_problem
from harness.metrics import metric_samples
from tests.fakes import MIB, TOKEN, basic_auth

pytestmark = pytest.mark.usefixtures("standalone_runtime")

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

HEALTH_JSON = "application/health+json"


class _Worker:
    def __init__(self, alive: bool) -> None:
        self.alive = alive


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
        basic_auth("nope"),
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


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {TOKEN}"}, basic_auth(TOKEN), basic_auth(TOKEN, user="")]
)
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
