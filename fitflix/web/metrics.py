"""`/metrics` in the Prometheus text format, gathered at scrape time.

No multiprocess directory: the whole service's figures come from /proc (or psutil), the
cgroup and the master's shared counts when the scrape arrives, so any worker
can answer for all of them and no stale `.db` files pile up. The figures are
the same `MemoryReport` that `/health/memory` serves (cached for a second).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from fitflix.serving.recycle import memory_status, threshold_bytes
from fitflix.serving.state import CUT_REASONS, REASONS, RUNTIME
from fitflix.web.access import is_authorized, unauthorized
from fitflix.web.health import EVENT_NAMES, health_context, process_document

metrics = Blueprint("metrics", __name__)


class ServiceCollector:
    """A prometheus_client collector over one MemoryReport and the shared counts."""

    def __init__(self, app) -> None:
        self.app = app

    def collect(self):
        context = health_context(self.app)
        report = context.probe.report(RUNTIME.role, RUNTIME.master_pid)
        plan = context.plan

        limit = GaugeMetricFamily("fitflix_memory_limit_bytes", "Memory the whole service may use", labels=["source"])
        limit.add_metric([report.limit_source], report.limit_bytes)
        yield limit
        used = GaugeMetricFamily(
            "fitflix_memory_used_bytes",
            "Memory the status is judged on: the cgroup's working set where its limit is in force, else service PSS",
            labels=["source"],
        )
        used.add_metric([report.used_source], report.used_bytes)
        yield used
        warn_bytes, critical_bytes = threshold_bytes(report.limit_bytes, plan)
        yield GaugeMetricFamily("fitflix_memory_warn_bytes", "Warning level", value=warn_bytes)
        yield GaugeMetricFamily("fitflix_memory_critical_bytes", "Critical level", value=critical_bytes)
        status = memory_status(report.used_percent, plan.warn_percent, plan.critical_percent)
        profile = GaugeMetricFamily("fitflix_memory_profile", "1 for the MEMORY_PROFILE in force", labels=["profile"])
        profile.add_metric([plan.memory_profile], 1)
        yield profile
        state = GaugeMetricFamily("fitflix_memory_status", "1 for the current memory status", labels=["status"])
        for name in ("OK", "WARNING", "CRITICAL"):
            state.add_metric([name], 1 if name == status else 0)
        yield state

        cgroup_memory = report.cgroup_memory
        gauges = (
            (
                "fitflix_container_memory_usage_bytes",
                "What the kernel charges the cgroup, page cache included",
                cgroup_memory.usage_bytes,
            ),
            (
                "fitflix_container_memory_working_set_bytes",
                "Cgroup usage less inactive file cache",
                cgroup_memory.working_set_bytes,
            ),
            (
                "fitflix_container_neighbours_bytes",
                "The cgroup's working set less the service's PSS: other processes, page cache, kernel memory",
                report.neighbours_bytes,
            ),
            (
                "fitflix_container_memory_high_bytes",
                "cgroup v2 memory.high: where the kernel throttles and reclaims (the limit, where below memory.max)",
                cgroup_memory.high_bytes,
            ),
        )
        for name, documentation, value in gauges:
            if value is not None:  # a figure this host cannot give has no sample, rather than 0
                yield GaugeMetricFamily(name, documentation, value=value)
        if cgroup_memory.oom_kills is not None:
            yield CounterMetricFamily(
                "fitflix_container_oom_kills", "Kernel OOM kills inside the cgroup", value=cgroup_memory.oom_kills
            )
        if cgroup_memory.events is not None:
            events = CounterMetricFamily(
                "fitflix_container_memory_events",
                "cgroup v2 memory.events: high (throttled at memory.high), max (reached memory.max), oom, oom_kill, "
                "oom_group_kill (where the kernel counts it)",
                labels=["event"],
            )
            for key in EVENT_NAMES:
                if key in cgroup_memory.events:
                    events.add_metric([key], cgroup_memory.events[key])
            yield events
        if cgroup_memory.pressure is not None:
            stalled = CounterMetricFamily(
                "fitflix_container_memory_pressure_stalled_seconds",
                "cgroup v2 memory.pressure total: time some (or all, full) tasks stalled waiting for memory",
                labels=["kind"],
            )
            recent = GaugeMetricFamily(
                "fitflix_container_memory_pressure_avg10_ratio",
                "cgroup v2 memory.pressure avg10: share of the last 10 s that some (or all, full) tasks stalled",
                labels=["kind"],
            )
            for kind, line in cgroup_memory.pressure.items():
                stalled.add_metric([kind], line.total_us / 1e6)
                recent.add_metric([kind], line.avg10 / 100)
            yield stalled
            yield recent

        if report.service_pss_bytes is not None:  # no PSS where /proc is missing: no sample, rather than 0
            yield GaugeMetricFamily(
                "fitflix_service_pss_bytes", "Sum of PSS over master and workers", value=report.service_pss_bytes
            )
        # One family per figure of /health/memory's process entries, keyed by the entry's JSON name.
        families = {
            "rssBytes": GaugeMetricFamily("fitflix_process_rss_bytes", "Resident set size", labels=["pid", "role"]),
            "pssBytes": GaugeMetricFamily("fitflix_process_pss_bytes", "Proportional set size", labels=["pid", "role"]),
            "ussBytes": GaugeMetricFamily(
                "fitflix_process_uss_bytes",
                "Private memory (what ending the process gives back)",
                labels=["pid", "role"],
            ),
            "peakRssBytes": GaugeMetricFamily(
                "fitflix_process_peak_rss_bytes",
                "The most the process ever held (getrusage), where its current RSS cannot be read (no /proc)",
                labels=["pid", "role"],
            ),
        }
        for process in map(process_document, report.processes):
            labels = [str(process["pid"]), process["role"]]
            for name, family in families.items():
                if process[name] is not None:  # a figure this host cannot give has no sample
                    family.add_metric(labels, process[name])
        yield from families.values()
        yield GaugeMetricFamily(
            "fitflix_workers", "Worker processes now", value=sum(1 for p in report.processes if p.role == "worker")
        )

        shared = RUNTIME.shared
        if shared is not None:
            recycles = CounterMetricFamily("fitflix_worker_recycles", "Worker recycles by reason", labels=["reason"])
            counts = shared.recycle_counts()
            for reason in REASONS:
                recycles.add_metric([reason], counts[reason])
            yield recycles
            yield CounterMetricFamily(
                "fitflix_requests_served", "Requests served by every worker", value=shared.requests_served()
            )
            yield CounterMetricFamily(
                "fitflix_growth_reports",
                "Reports of what grew, one for each worker recycled for memory (the last few: /health/memory)",
                value=shared.growth_reports()[0],
            )
            cuts = CounterMetricFamily(
                "fitflix_connections_cut",
                "Connections closed before a whole request head came: slow_head (answered 408 after "
                "HEAD_TIMEOUT_S), silent (sent nothing by then), idle_at_cap (idle longest at the connection cap)",
                labels=["reason"],
            )
            cut_counts = shared.cut_counts()
            for reason in CUT_REASONS:
                cuts.add_metric([reason], cut_counts[reason])
            yield cuts


def register_metrics(app) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(app))
    app.extensions["fitflix.metrics_registry"] = registry
    app.register_blueprint(metrics)


@metrics.get("/metrics")
def scrape():
    context = health_context(current_app)
    if not is_authorized(request, context.settings.health_token):
        return unauthorized()
    registry = current_app.extensions["fitflix.metrics_registry"]
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
