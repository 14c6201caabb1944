"""The health blueprint: one answer per reader.

- Render's health check: `/health` (200 whenever the process can answer).
- Kubernetes: `/health/live` (never fails on memory) and `/health/ready`
  (503 while this worker shuts down, and on CRITICAL when asked to).
- Dashboards: `/health/memory` in the Node.js version's JSON shape, plus the
  whole truth; `application/health+json` (draft-inadarei-api-health-check)
  when Accept asks for it.
- A person: the same URLs with Accept preferring `text/html` give a page.

Figures and pids need `HEALTH_TOKEN` when one is set (see `access.py` beside it).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from fitflix.memory.container import MIB
from fitflix.memory.heap import read_heap
from fitflix.memory.report import MemoryProbe, MemoryReport, ProcessFigures, measure_container
from fitflix.serving.recycle import memory_status, threshold_bytes
from fitflix.serving.sizing import Plan, make_plan, resize_plan
from fitflix.serving.state import RUNTIME
from fitflix.settings import Settings
from fitflix.web.access import is_authorized, unauthorized
from fitflix.web.page import render_memory_page

SERVICE_NAME = "fitflix-backend"
JSON, HEALTH_JSON, HTML = "application/json", "application/health+json", "text/html"

# The page's own policy: its one script and one style block carry the nonce;
# it may fetch from this origin and nothing else.
PAGE_CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

health = Blueprint("health", __name__, url_prefix="/health")


@dataclass
class HealthContext:
    settings: Settings
    planned: Plan  # as the server started
    probe: MemoryProbe

    @property
    def plan(self) -> Plan:
        """The plan for the worker count the master plans for now (TTIN/TTOU move it)."""
        shared = RUNTIME.shared
        return resize_plan(self.planned, shared.planned_workers()) if shared is not None else self.planned


def serving_threads(planned: int) -> int:
    """The request threads this worker serves with, as gunicorn runs it; `planned` outside a worker.

    A config of one's own (`threads = 2` after `from fitflix.gunicorn_conf import *`) or a
    `--threads` flag overrides the plan, and a sync worker has no pool: one thread.
    """
    worker = RUNTIME.worker
    if worker is None:
        return planned
    own = getattr(worker, "request_threads", None)  # FitFlix's own worker
    if own is not None:
        return own
    return worker.cfg.threads if getattr(worker, "tpool", None) is not None else 1


def _worker_pids() -> list[int]:
    """The workers of this server as gunicorn knows them: each claimed a shared slot when it booted."""
    return RUNTIME.shared.worker_pids() if RUNTIME.shared is not None else []


def health_context(app: Flask) -> HealthContext:
    """The plan gunicorn.conf.py made, or one made here when the app runs without it."""
    context = app.extensions.get("fitflix.health")
    if context is None:
        settings: Settings = app.config["FITFLIX_SETTINGS"]
        plan = RUNTIME.plan if isinstance(RUNTIME.plan, Plan) else make_plan(settings, measure_container())
        shared = RUNTIME.shared
        probe = MemoryProbe(
            (plan.limit_mb, plan.limit_source),
            worker_pids=_worker_pids,
            published=shared.published_memory if shared is not None else None,
        )
        context = HealthContext(settings, plan, probe)
        app.extensions["fitflix.health"] = context
    running = RUNTIME.plan
    if isinstance(running, Plan) and running is not context.planned:
        # A SIGHUP made a new plan after this context was made (in the master, by the warm-up,
        # and inherited by every worker): answer with the plan the server runs now.
        context.planned = running
        context.probe.limit_mb, context.probe.limit_source = running.limit_mb, running.limit_source
    return context


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _mb(value: int | None) -> int | None:
    return None if value is None else round(value / MIB)


def _negotiated() -> str:
    """JSON unless the client prefers health+json or HTML (a browser does: text/html at q=1, */* lower)."""
    accept = request.environ.get("HTTP_ACCEPT")
    if not accept or accept == "*/*":  # what probes send: JSON, without parsing an Accept header
        return JSON
    return request.accept_mimetypes.best_match([JSON, HEALTH_JSON, HTML], default=JSON)


def _health_json(document: dict, status_code: int) -> Response:
    response = jsonify(document)
    response.status_code = status_code
    response.content_type = HEALTH_JSON
    return response


def _page() -> Response:
    nonce = secrets.token_urlsafe(18)
    response = Response(render_memory_page(nonce), mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP.format(nonce=nonce)
    return response


VARY = "Accept, Authorization"


def _varies(response: Response) -> Response:
    """The answer depends on Accept and on the token (every response here is new: nothing set a Vary yet)."""
    response.headers["Vary"] = VARY
    return response


def _uptime_s() -> float:
    return round(time.monotonic() - RUNTIME.started_monotonic, 3)


@health.get("")
def service_health():
    """Cheap: no smaps, no cgroup reads. 200 whenever the process can answer."""
    context = health_context(current_app)
    shown = is_authorized(request, context.settings.health_token)
    wanted = _negotiated()
    if wanted == HTML and shown:
        return _varies(_page())
    # Public stays public: a browser or an uptime checker sending browser headers
    # without the token gets the public status as JSON, never a login prompt.
    if wanted == HEALTH_JSON:
        document = {"status": "pass", "serviceId": SERVICE_NAME}
        if shown:
            document["checks"] = {
                "uptime": [
                    {
                        "componentType": "system",
                        "observedValue": _uptime_s(),
                        "observedUnit": "s",
                        "status": "pass",
                        "time": _timestamp(),
                    }
                ]
            }
        return _varies(_health_json(document, 200))
    return _varies(jsonify(status_document(shown)))


def status_document(shown: bool) -> dict:
    """/health as plain JSON: the status, and who and since when for a reader who may see figures."""
    document = {"status": "OK"}
    if shown:
        document.update(service=SERVICE_NAME, uptimeSeconds=_uptime_s(), timestamp=_timestamp())
    return document


LIVE_DOCUMENT = {"status": "OK"}


@health.get("/live")
def liveness():
    """The process answers. Never fails on memory pressure: that would restart a healthy pod."""
    if _negotiated() == HEALTH_JSON:
        return _varies(_health_json({"status": "pass", "serviceId": SERVICE_NAME}, 200))
    return _varies(jsonify(LIVE_DOCUMENT))


def readiness_problem(worker_alive: bool, status: str, fail_on_critical: bool, draining: bool = False) -> str | None:
    """Why this worker should get no traffic now; None when it should."""
    if draining:
        return "draining"
    if not worker_alive:
        return "this worker is shutting down"
    if fail_on_critical and status == "CRITICAL":
        return "memory is critical"
    return None


@health.get("/ready")
def readiness():
    """503 while the service drains or this worker stops, and on CRITICAL memory with READY_FAIL_ON_CRITICAL=true."""
    context = health_context(current_app)
    status = "OK"
    if context.settings.ready_fail_on_critical:
        report = context.probe.report(RUNTIME.role, RUNTIME.master_pid)
        status = memory_status(report.used_percent, context.plan.warn_percent, context.plan.critical_percent)
    draining = RUNTIME.shared is not None and RUNTIME.shared.draining()
    problem = readiness_problem(
        getattr(RUNTIME.worker, "alive", True), status, context.settings.ready_fail_on_critical, draining
    )
    code = 503 if problem else 200
    if _negotiated() == HEALTH_JSON:
        document = {"status": "fail" if problem else "pass", "serviceId": SERVICE_NAME}
        if problem:
            document["output"] = problem
        return _varies(_health_json(document, code))
    document = {"status": "NOT_READY", "reason": problem} if problem else {"status": "READY"}
    response = jsonify(document)
    response.status_code = code
    return _varies(response)


# memory.events' keys as /health/memory names them (oom_group_kill only where the kernel counts it, 5.17+).
EVENT_NAMES = {"high": "high", "max": "max", "oom": "oom", "oom_kill": "oomKill", "oom_group_kill": "oomGroupKill"}


def _events(events: dict[str, int] | None) -> dict[str, int] | None:
    if events is None:
        return None
    return {name: events[key] for key, name in EVENT_NAMES.items() if key in events}


def _pressure(pressure) -> dict | None:
    if pressure is None:
        return None
    return {
        kind: {"avg10": line.avg10, "totalUs": line.total_us}
        for kind, line in pressure.items()
        if kind in ("some", "full")
    }


def process_document(process: ProcessFigures) -> dict:
    """One entry of /health/memory's `processes`; /metrics reads its per-process samples from the same dict."""
    memory = process.memory
    return {
        "pid": memory.pid,
        "role": process.role,
        "rssBytes": memory.rss_bytes,
        "pssBytes": memory.pss_bytes,
        "ussBytes": memory.uss_bytes,
        "peakRssBytes": memory.peak_rss_bytes,
        "source": memory.source,
        "unavailable": dict(memory.unavailable),
    }


def memory_document(report: MemoryReport, context: HealthContext) -> tuple[dict, str]:
    """The /health/memory body (Node.js-compatible `memory` block first) and its status."""
    plan = context.plan
    used_percent = report.used_percent
    status = memory_status(used_percent, plan.warn_percent, plan.critical_percent)
    heap = read_heap()
    limit_mb = report.limit_bytes // MIB
    cgroup, cgroup_memory = report.cgroup, report.cgroup_memory
    shared = RUNTIME.shared
    leaving = shared.surge_old() if shared is not None else 0
    warn_bytes, critical_bytes = threshold_bytes(report.limit_bytes, plan)
    document = {
        "status": status,
        "memory": {
            # The whole service's own memory: PSS summed where the host gives it (see usedSource).
            "rss": _mb(report.service_pss_bytes if report.service_pss_bytes is not None else report.used_bytes),
            "heapUsed": _mb(heap.used_bytes) if heap else None,
            "heapTotal": _mb(heap.total_bytes) if heap else None,
            "external": None,
            "limit": limit_mb,
            "usage": round(used_percent),
            "available": max(limit_mb - _mb(report.used_bytes), 0),
            "limitSource": report.limit_source,
        },
        "clustering": {
            # As the start banner says it: more than one worker process, however that came about.
            "enabled": plan.workers > 1,
            "isWorker": RUNTIME.role == "worker",
            "workerId": os.getpid(),
            # A worker being replaced (its replacement serves, it finishes what it has) is not counted.
            "workers": sum(
                1 for process in report.processes if process.role == "worker" and process.memory.pid != leaving
            )
            or plan.workers,
            "plannedWorkers": plan.workers,
            "replacingWorker": leaving or None,
            "threads": serving_threads(plan.threads),
        },
        "container": {
            "cgroupVersion": cgroup.version if cgroup else None,
            "cgroupPath": cgroup.path if cgroup else None,
            "limitBytes": report.limit_bytes,
            "limitSource": report.limit_source,
            "cgroupLimitBytes": cgroup_memory.limit_bytes,
            "usageBytes": cgroup_memory.usage_bytes,
            "workingSetBytes": cgroup_memory.working_set_bytes,
            "oomKills": cgroup_memory.oom_kills,
            # v2: the file the limit came from, both limits, the kernel's memory events and stall times.
            "limitFile": cgroup_memory.limit_file,
            "memoryMaxBytes": cgroup_memory.max_bytes,
            "memoryHighBytes": cgroup_memory.high_bytes,
            "events": _events(cgroup_memory.events),
            "pressure": _pressure(cgroup_memory.pressure),
            "usedBytes": report.used_bytes,
            "usedSource": report.used_source,
            "neighboursBytes": report.neighbours_bytes,
        },
        "processes": [process_document(process) for process in report.processes],
        "servicePssBytes": report.service_pss_bytes,
        # Why a figure above is null: {"servicePssBytes": "..."}; empty where every figure was read.
        "unavailable": dict(report.unavailable),
        "thresholds": {
            "warnPercent": plan.warn_percent,
            "criticalPercent": plan.critical_percent,
            "warnBytes": warn_bytes,
            "criticalBytes": critical_bytes,
            "workerBudgetMb": plan.worker_budget_mb,
            "workerHardCapMb": plan.worker_hard_cap_mb,
            # The budget in force is the lower of these two (budgetRule says which).
            "absoluteBudgetMb": plan.absolute_budget_mb,
            "relativeBudgetMb": plan.relative_budget_mb,
            "memoryMultiple": plan.memory_multiple or None,
            "appBaselineMb": None if plan.app_baseline_mb is None else round(plan.app_baseline_mb, 1),
            "budgetRule": plan.budget_rule,
        },
        "profile": {
            "name": plan.memory_profile,
            "gcThreshold": plan.gc_threshold or None,
            "heapTrimMb": plan.heap_trim_mb or None,
            "mallocArenaMax": plan.malloc_arena_max or None,
            "maxRequests": plan.max_requests,
        },
        "recycles": shared.recycle_counts() if shared else None,
        "requestsServed": shared.requests_served() if shared else None,
        # What grew in the last workers recycled for memory (fitflix.memory.growth), newest first.
        "growth": _growth(shared),
        "timestamp": _timestamp(),
    }
    return document, status


def _growth(shared) -> dict | None:
    if shared is None:
        return None
    written, reports = shared.growth_reports()
    last = []
    for report in reports:
        try:
            last.append(json.loads(report))
        except ValueError:  # a slot cut short or half written: left out, never a 500
            continue
    return {"reports": written, "last": last}


def health_json_status(status: str, fail_on_critical: bool) -> str:
    """The draft's pass/warn/fail for OK/WARNING/CRITICAL; CRITICAL fails only when asked to."""
    if status == "OK":
        return "pass"
    if status == "CRITICAL" and fail_on_critical:
        return "fail"
    return "warn"


def memory_health_json(document: dict, status: str, fail_on_critical: bool) -> dict:
    """/health/memory as application/health+json: one check per figure, each with its unit and time."""
    overall = health_json_status(status, fail_on_critical)
    taken = document["timestamp"]
    container = document["container"]

    def check(component_id: str, value, unit: str, component_type: str = "system", state: str = "pass") -> dict:
        return {
            "componentId": component_id,
            "componentType": component_type,
            "observedValue": value,
            "observedUnit": unit,
            "status": state,
            "time": taken,
        }

    checks = {
        "memory:utilization": [check("container", document["memory"]["usage"], "percent", state=overall)],
        "memory:used": [check("container", container["usedBytes"], "bytes", state=overall)],
        "memory:limit": [check("container", container["limitBytes"], "bytes")],
    }
    pss = [
        check(f"{process['role']}:{process['pid']}", process["pssBytes"], "bytes", "component")
        for process in document["processes"]
        if process["pssBytes"] is not None  # no PSS off Linux: no check, rather than a null one
    ]
    if pss:
        checks["memory:pss"] = pss
    if container["oomKills"] is not None:
        checks["memory:oomKills"] = [check("container", container["oomKills"], "count")]
    result = {"status": overall, "serviceId": SERVICE_NAME, "description": "FitFlix backend memory", "checks": checks}
    if overall != "pass":
        result["output"] = (
            f"memory {status}: {document['memory']['usage']}% of {document['memory']['limit']} MB "
            f"({container['usedSource']})"
        )
    return result


@health.get("/memory")
def memory_health():
    context = health_context(current_app)
    if not is_authorized(request, context.settings.health_token):
        return _varies(unauthorized())
    wanted = _negotiated()
    if wanted == HTML:
        return _varies(_page())
    report = context.probe.report(RUNTIME.role, RUNTIME.master_pid)
    document, status = memory_document(report, context)
    fail_on_critical = context.settings.health_fail_on_critical
    code = 503 if status == "CRITICAL" and fail_on_critical else 200
    if wanted == HEALTH_JSON:
        return _varies(_health_json(memory_health_json(document, status, fail_on_critical), code))
    response = jsonify(document)
    response.status_code = code
    return _varies(response)
