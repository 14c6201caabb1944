"""The health blueprint: `/health` for the platform, `/health/memory` for the truth."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from flask import Blueprint, Flask, current_app, jsonify

from fitflix.memory.heap import read_heap
from fitflix.memory.service import MemoryProbe, MemoryReport, measure_container
from fitflix.serving.recycle import memory_status
from fitflix.serving.sizing import MIB, Plan, make_plan
from fitflix.serving.state import RUNTIME
from fitflix.settings import Settings

SERVICE_NAME = "fitflix-backend"

health = Blueprint("health", __name__, url_prefix="/health")


@dataclass
class HealthContext:
    settings: Settings
    plan: Plan
    probe: MemoryProbe


def health_context(app: Flask) -> HealthContext:
    """The plan gunicorn.conf.py made, or one made here when the app runs without it."""
    context = app.extensions.get("fitflix.health")
    if context is None:
        settings: Settings = app.config["FITFLIX_SETTINGS"]
        plan = RUNTIME.plan if isinstance(RUNTIME.plan, Plan) else make_plan(settings, measure_container())
        context = HealthContext(settings, plan, MemoryProbe((plan.limit_mb, plan.limit_source)))
        app.extensions["fitflix.health"] = context
    return context


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _mb(value: int | None) -> int | None:
    return None if value is None else round(value / MIB)


@health.get("")
def service_health():
    """Cheap: no smaps, no cgroup reads. 200 whenever the process can answer."""
    return jsonify(
        status="OK",
        service=SERVICE_NAME,
        uptimeSeconds=round(time.monotonic() - RUNTIME.started_monotonic, 3),
        timestamp=_timestamp(),
    )


def memory_document(report: MemoryReport, context: HealthContext) -> tuple[dict, str]:
    """The /health/memory body (Node.js-compatible `memory` block first) and its status."""
    plan = context.plan
    used_percent = report.used_percent
    status = memory_status(used_percent, plan.warn_percent, plan.critical_percent)
    heap = read_heap()
    limit_mb = report.limit_bytes // MIB
    cgroup, cgroup_memory = report.cgroup, report.cgroup_memory
    shared = RUNTIME.shared
    document = {
        "status": status,
        "memory": {
            "rss": _mb(report.service_pss_bytes),
            "heapUsed": _mb(heap.used_bytes) if heap else None,
            "heapTotal": _mb(heap.total_bytes) if heap else None,
            "external": None,
            "limit": limit_mb,
            "usage": round(used_percent),
            "available": max(limit_mb - _mb(report.used_bytes), 0),
            "limitSource": report.limit_source,
        },
        "clustering": {
            "enabled": plan.clustering,
            "isWorker": RUNTIME.role == "worker",
            "workerId": os.getpid(),
            "workers": sum(1 for process in report.processes if process.role == "worker") or plan.workers,
            "plannedWorkers": plan.workers,
            "threads": plan.threads,
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
            "usedBytes": report.used_bytes,
            "usedSource": report.used_source,
        },
        "processes": [
            {
                "pid": process.memory.pid,
                "role": process.role,
                "rssBytes": process.memory.rss_bytes,
                "pssBytes": process.memory.pss_bytes,
                "ussBytes": process.memory.uss_bytes,
            }
            for process in report.processes
        ],
        "servicePssBytes": report.service_pss_bytes,
        "thresholds": {
            "warnPercent": plan.warn_percent,
            "criticalPercent": plan.critical_percent,
            "warnBytes": report.limit_bytes * plan.warn_percent // 100,
            "criticalBytes": report.limit_bytes * plan.critical_percent // 100,
            "workerBudgetMb": plan.worker_budget_mb,
            "workerHardCapMb": plan.worker_hard_cap_mb,
        },
        "recycles": shared.recycle_counts() if shared else None,
        "timestamp": _timestamp(),
    }
    return document, status


@health.get("/memory")
def memory_health():
    context = health_context(current_app)
    report = context.probe.report(RUNTIME.role, RUNTIME.master_pid)
    document, status = memory_document(report, context)
    code = 503 if status == "CRITICAL" and context.settings.health_fail_on_critical else 200
    return jsonify(document), code
