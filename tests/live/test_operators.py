"""What each reader gets from real gunicorn: access lines and counters across recycled workers, tokenless logs."""

from __future__ import annotations

import base64
import json
import re
import time
from urllib.parse import quote, quote_plus

import pytest

from harness.metrics import metric_samples
from harness.wait import poll_until
from tests.fakes import TOKEN, basic_auth

pytestmark = pytest.mark.usefixtures("standalone_runtime")


# --- live: logs, recycle counts in metrics, the start warning, schemathesis --------------------------------


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
        ("/health/memory", basic_auth(token)),  # the password, as documented
        ("/health/memory", basic_auth("", user=token)),  # the user name: curl -u "$HEALTH_TOKEN:"
        ("/health/memory", {"Authorization": "Basic " + base64.b64encode(f"{token}:{token}".encode()).decode()}),
        (f"/health/memory?token={encoded}", {}),
        (f"/metrics?access_token={encoded}&a=1", {}),
        (f"/health?{encoded}", {"Referer": f"https://dash.example/?key={encoded}"}),
        (f"/nowhere?api_key={encoded}", {"Authorization": f"Bearer {token}"}),
    ]


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
