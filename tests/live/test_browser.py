"""The /health/memory page in real headless Chromium, under the page's own CSP.

Needs Debian's chromium (/usr/bin/chromium) and `playwright` from PyPI; Playwright
never downloads a browser here. Without them the browser test skips, or fails
under FITFLIX_REQUIRE_BROWSER=1."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from harness.server import PROJECT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REQUIRE_BROWSER = os.environ.get("FITFLIX_REQUIRE_BROWSER") == "1"
SCREENSHOT = PROJECT / "artifacts" / "memory-page.png"
# The page polls every 3 s; a few polls of slack for a loaded machine.
UPDATE_TIMEOUT_MS = 15_000

# Collected in the page before any of its own script runs (Playwright's init
# scripts are not subject to the page's CSP).
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""
CHART_POINTS = """() => (document.getElementById("chart-line").getAttribute("points") || "")
  .trim().split(/\\s+/).filter(Boolean).length"""
# A function, not an expression: the page's CSP forbids eval, which Playwright
# would use for an expression string.
CHART_POINTS_AT_LEAST = """(minimum) => (document.getElementById("chart-line").getAttribute("points") || "")
  .trim().split(/\\s+/).filter(Boolean).length >= minimum"""
PAGE_FIGURES = """() => ({
  status: document.getElementById("status").textContent,
  statusClass: document.getElementById("status").className,
  limitMb: document.getElementById("limit-mb").textContent,
  usedMb: document.getElementById("used-mb").textContent,
  usagePercent: document.getElementById("usage-percent").textContent,
  limitSource: document.getElementById("limit-source").textContent,
  pids: [...document.querySelectorAll("#processes tr")].map((row) => row.dataset.pid),
  roles: [...document.querySelectorAll("#processes tr")].map((row) => row.cells[1].textContent),
  recycles: Object.fromEntries([...document.querySelectorAll("#recycles dd[data-reason]")]
    .map((dd) => [dd.dataset.reason, dd.textContent])),
  chartLabel: document.getElementById("chart").getAttribute("aria-label"),
  error: document.getElementById("error").textContent,
})"""


def _unavailable(reason: str):
    if REQUIRE_BROWSER:
        pytest.fail(f"FITFLIX_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def chromium_page():
    """A page in headless Debian chromium under Playwright; skips without (fails under FITFLIX_REQUIRE_BROWSER=1)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        _unavailable(f"playwright is not installed ({error}); pip install playwright==1.65.2")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing; apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 960, "height": 900})
            context.add_init_script(RECORD_CSP_VIOLATIONS)
            yield context.new_page()
        finally:
            browser.close()


def test_memory_page_in_chromium_matches_the_json_and_keeps_updating(live_server, chromium_page):
    server = live_server()
    page = chromium_page
    origin = f"http://127.0.0.1:{server.port}"
    requests, console_problems, page_errors = [], [], []
    page.on("request", lambda request: requests.append(request))
    page.on("console", lambda message: message.type in ("error", "warning") and console_problems.append(message.text))
    page.on("pageerror", lambda error: page_errors.append(str(error)))

    response = page.goto(f"{origin}/health/memory")
    assert response is not None and response.status == 200
    headers = response.headers
    assert headers["content-type"].startswith("text/html")
    assert "script-src 'nonce-" in headers.get("content-security-policy", ""), headers

    page.wait_for_function(CHART_POINTS_AT_LEAST, arg=2, timeout=UPDATE_TIMEOUT_MS)
    shown = page.evaluate(PAGE_FIGURES)
    status, memory = server.get_json("/health/memory")
    assert status == 200

    assert shown["error"] == ""
    assert shown["limitMb"] == str(memory["memory"]["limit"])
    assert shown["limitSource"] == memory["memory"]["limitSource"]
    # Usage drifts between the page's last poll and ours: a point or two.
    assert abs(float(shown["usagePercent"]) - memory["memory"]["usage"]) <= 2
    limit_mb = memory["container"]["limitBytes"] / 2**20
    assert abs(float(shown["usedMb"]) - memory["container"]["usedBytes"] / 2**20) <= 0.02 * limit_mb
    assert shown["status"] == memory["status"] and shown["statusClass"] == f"status {memory['status'].lower()}"
    assert shown["pids"] == [str(process["pid"]) for process in memory["processes"]]
    assert shown["roles"] == [process["role"] for process in memory["processes"]]
    assert shown["recycles"] == {reason: str(count) for reason, count in memory["recycles"].items()}
    assert shown["chartLabel"].startswith("Container usage over the last")

    points = page.evaluate(CHART_POINTS)
    page.wait_for_function(CHART_POINTS_AT_LEAST, arg=points + 1, timeout=UPDATE_TIMEOUT_MS)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert page.evaluate("window.__cspViolations") == []

    # The same page at /health: /health's JSON is only the status, so it polls /health/memory.
    response = page.goto(f"{origin}/health")
    assert response is not None and response.headers["content-type"].startswith("text/html")
    page.wait_for_function(CHART_POINTS_AT_LEAST, arg=1, timeout=UPDATE_TIMEOUT_MS)
    shown = page.evaluate(PAGE_FIGURES)
    assert shown["error"] == "" and shown["limitMb"] == str(memory["memory"]["limit"])
    assert page.evaluate("window.__cspViolations") == []

    assert console_problems == [] and page_errors == []
    outside = [request.url for request in requests if not request.url.startswith(f"{origin}/")]
    assert outside == []
    polls = [request for request in requests if request.resource_type == "fetch"]
    assert len(polls) >= 3
    assert all(request.url == f"{origin}/health/memory" for request in polls)
    assert all(request.headers.get("accept") == "application/json" for request in polls)


GROWTH_ITEMS = (
    """() => [...document.querySelectorAll("#growth li")].map((item) => [item.dataset.pid || "", item.textContent])"""
)


def test_the_memory_page_shows_what_grew_in_a_worker_recycled_for_memory(live_server, chromium_page):
    from harness.apps.leaky import leak_site
    from harness.load import run_load
    from harness.wait import poll_until

    report_line = re.compile(r"What grew in worker (\d+) \(memory\)")

    server = live_server(
        {"WORKER_MAX_MEMORY_MB": "120", "MAX_REQUESTS": "0"}, app="harness.apps.service_with_leaks:app"
    )
    page = chromium_page
    response = page.goto(f"http://127.0.0.1:{server.port}/health/memory")
    assert response is not None and response.status == 200
    page.wait_for_function("() => document.querySelectorAll('#growth li').length > 0", timeout=UPDATE_TIMEOUT_MS)
    assert page.evaluate(GROWTH_ITEMS) == [["", "no worker recycled for memory yet"]]
    for _round in range(30):
        assert run_load(server.port, "/leak?mb=1&ms=20", requests=20, clients=2, time_limit_s=60).failed == 0
        if report_line.search(server.log()):
            break
    pid = poll_until(lambda: report_line.search(server.log()), 10, "a report of what grew").group(1)
    page.wait_for_function(
        "(pid) => [...document.querySelectorAll('#growth li')].some((item) => item.dataset.pid === pid)",
        arg=pid,
        timeout=UPDATE_TIMEOUT_MS,
    )
    text = dict(page.evaluate(GROWTH_ITEMS))[pid]
    assert f"worker {pid}: " in text and f"top site {leak_site()} " in text, text
    assert "native memory" not in text
    assert page.evaluate("window.__cspViolations") == []


V2_ROWS = """() => ({
  limit: document.getElementById("cgroup-limit").textContent,
  cgroup: document.getElementById("cgroup").textContent,
  events: document.getElementById("memory-events").textContent,
  pressure: document.getElementById("memory-pressure").textContent,
})"""


def test_the_memory_page_shows_v2_events_and_pressure_and_says_when_there_are_none(live_server, chromium_page):
    """This machine is v1: the page's fetches get a live answer with the v2 figures a guest gave it put in."""
    server = live_server()
    page = chromium_page
    origin = f"http://127.0.0.1:{server.port}"
    _status, live = server.get_json("/health/memory")
    v2 = json.loads(json.dumps(live))
    v2["container"].update(
        cgroupVersion=2,
        cgroupPath="/",
        limitFile="memory.high",
        cgroupLimitBytes=384 * 2**20,
        memoryMaxBytes=512 * 2**20,
        memoryHighBytes=384 * 2**20,
        events={"high": 3, "max": 0, "oom": 0, "oomKill": 0, "oomGroupKill": 0},
        pressure={"some": {"avg10": 1.25, "totalUs": 2_500_000}, "full": {"avg10": 0.5, "totalUs": 750_000}},
    )

    def answer(route):
        if route.request.resource_type == "fetch":
            route.fulfill(status=200, content_type="application/json", body=json.dumps(v2))
        else:
            route.continue_()

    page.route("**/health/memory", answer)
    page.goto(f"{origin}/health/memory")
    page.wait_for_function("() => document.getElementById('memory-events').textContent.startsWith('high')")
    assert page.evaluate(V2_ROWS) == {
        "limit": "384 MB (memory.high)",
        "cgroup": "v2 /",
        "events": "high 3, max 0, oom 0, oomKill 0, oomGroupKill 0",
        "pressure": "some: 1.25% of the last 10 s, 2.5 s in all; full: 0.50% of the last 10 s, 0.8 s in all",
    }

    page.unroute("**/health/memory")
    page.goto(f"{origin}/health/memory")
    page.wait_for_function("() => document.getElementById('memory-events').textContent !== '–'")
    shown = page.evaluate(V2_ROWS)
    assert (shown["events"], shown["pressure"]) == ("– (cgroup v2 only)", "– (cgroup v2 only)")
    limit_bytes = live["container"]["cgroupLimitBytes"]
    assert shown["limit"] == (
        "none (unlimited)" if limit_bytes is None else f"{limit_bytes // 2**20} MB (memory.limit_in_bytes)"
    )
    assert page.evaluate("window.__cspViolations") == []
