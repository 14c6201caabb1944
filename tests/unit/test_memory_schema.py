"""/health/memory's document against the schema /openapi.json gives for it (OpenAPI 3.0.3), on fake machines.

Every key, its type and its nullability: on machines with /proc (cgroup v1 and
v2, standalone and a gunicorn master with workers) and without it (where most
figures are null), through `memory_document` and through the app with and
without HEALTH_TOKEN; and /metrics shows the same per-process figures. No
process is started and no socket opened.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from prometheus_client.parser import text_string_to_metric_families
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from fitflix import create_app
from fitflix.memory.growth import GrowthReport, Site, TypeGrowth
from fitflix.memory.reader import Fallbacks
from fitflix.memory.report import MemoryProbe, measure_container
from fitflix.serving.sizing import make_plan
from fitflix.serving.state import RUNTIME, SharedState
from fitflix.settings import Settings
from fitflix.web.health import HealthContext, memory_document
from fitflix.web.openapi import openapi_document
from tests.fakes import MIB, TOKEN, make_cgroup_v1, make_cgroup_v2, make_meminfo, make_proc, smaps_rollup_text

DOCUMENT = openapi_document()
DOCUMENT_URI = "urn:fitflix:openapi.json"
# The document as the one resource the schemas' `#/components/...` references resolve in.
REGISTRY = Registry().with_resource(DOCUMENT_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT4))

MACHINES = ("v1 standalone", "v2 master and workers", "no /proc standalone", "no /proc master and a worker")


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _validator(*pointer: str) -> OAS30Validator:
    """A validator of the schema at `pointer` in the served document, its references resolved in that document."""
    return OAS30Validator(
        {"$ref": f"{DOCUMENT_URI}#/{_pointer(*pointer)}"}, registry=REGISTRY, format_checker=oas30_format_checker
    )


MEMORY_SCHEMA = _validator("components", "schemas", "MemoryDocument")


def _answer_validator(path: str, status: str, media: str = "application/json") -> OAS30Validator:
    return _validator("paths", path, "get", "responses", status, "content", media, "schema")


def _errors(validator: OAS30Validator, instance) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(instance)]


# --- fake machines ------------------------------------------------------------------------------

MASTER_PID, WORKER_PIDS = 4001, (4002, 4003)
PEAK_BYTES = 70 * MIB
WORKER_RSS_BYTES = 123 * MIB


def _rollup() -> str:
    return smaps_rollup_text(rss_kb=60 * 1024, pss_kb=40 * 1024, private_clean_kb=1024, private_dirty_kb=15 * 1024)


def _growth_report_json() -> bytes:
    report = GrowthReport(
        pid=WORKER_PIDS[0],
        reason="memory",
        uss_bytes=300 * MIB,
        uss_at_boot_bytes=40 * MIB,
        uss_at_arm_bytes=270 * MIB,
        armed_after_s=12.5,
        traced_bytes=25 * MIB,
        tracing_overhead_bytes=MIB,
        python_share_percent=83.3,
        unaccounted_bytes=4 * MIB,
        verdict="python",
        sites=(Site("app/views.py:42", 25600.0, 1200),),
        types=(TypeGrowth("bytes", 1200, 25600.0),),
        census_cut_short=False,
        snapshot_blocks=4000,
        report_ms=120.5,
        report_cpu_ms=110.25,
        notes=("boot census cut short after 10 objects: type growth is overstated",),
        unavailable=(),
    )
    return json.dumps(report.as_dict()).encode()


def _shared_state(tmp_path: Path) -> SharedState:
    """The master's shared counts after some work: recycles, requests served, one report of what grew."""
    shared = SharedState(str(tmp_path))
    shared.count_recycle("memory")
    shared.count_recycle("max_requests")
    shared.add_growth_report(_growth_report_json())
    return shared


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A HealthContext on a fake machine named in MACHINES, RUNTIME playing the role that machine's process has."""

    def build(name: str, settings: Settings | None = None) -> HealthContext:
        settings = settings or Settings()
        root = tmp_path / "root"
        fallbacks = Fallbacks(None, lambda: 8192 * MIB, lambda: PEAK_BYTES)  # no psutil: the last resorts
        shared, published, role = None, None, "standalone"
        master_pid, worker_pids = os.getpid(), ()
        if name == "v1 standalone":
            make_cgroup_v1(root, "/docker/0123456789abcdef", limit_bytes=512 * MIB, usage=300 * MIB, oom_kill=1)
            make_meminfo(root, total_kb=8 * 1024 * 1024)
            make_proc(root, os.getpid(), os.getppid(), smaps_rollup=_rollup())
        elif name == "v2 master and workers":
            make_cgroup_v2(
                root,
                "/kubepods.slice/pod42/app",
                memory_max=512 * MIB,
                memory_high=400 * MIB,
                usage=340 * MIB,
                inactive_file=20 * MIB,
                oom_kill=1,
                pressure="some avg10=31.20 avg60=8.00 avg300=2.00 total=7250000\n"
                "full avg10=4.50 avg60=1.00 avg300=0.20 total=1500000\n",
            )
            make_meminfo(root, total_kb=8 * 1024 * 1024)
            for pid in (MASTER_PID, *WORKER_PIDS):
                make_proc(root, pid, 1 if pid == MASTER_PID else MASTER_PID, smaps_rollup=_rollup())
            shared, role, master_pid, worker_pids = _shared_state(tmp_path), "master", MASTER_PID, WORKER_PIDS
            shared.set_surge_old(WORKER_PIDS[1])  # one worker being replaced: replacingWorker is its pid
        else:
            (root / "proc").mkdir(parents=True)  # what the private mount namespace of tests/live/test_no_proc.py shows
            if name == "no /proc master and a worker":
                # The test runner's parent stands for a worker: alive, and not this process, so unreadable here.
                shared, role, worker_pids = _shared_state(tmp_path), "master", (os.getppid(),)
                shared.publish_memory(shared.claim_worker_slot(os.getppid()), WORKER_RSS_BYTES, peak=False)
                published = shared.published_memory
        monkeypatch.setattr(RUNTIME, "role", role)
        monkeypatch.setattr(RUNTIME, "master_pid", master_pid)
        monkeypatch.setattr(RUNTIME, "shared", shared)
        monkeypatch.setattr(RUNTIME, "plan", None)
        monkeypatch.setattr(RUNTIME, "worker", None)
        plan = make_plan(settings, measure_container(root, fallbacks))
        probe = MemoryProbe(
            (plan.limit_mb, plan.limit_source),
            root=root,
            worker_pids=lambda: worker_pids,
            published=published,
            fallbacks=fallbacks,
            cache_s=3600,  # one report for the whole test: /health/memory and /metrics show the same figures
        )
        return HealthContext(settings, plan, probe)

    return build


def _document(context: HealthContext) -> dict:
    document, _status = memory_document(context.probe.report(RUNTIME.role, RUNTIME.master_pid), context)
    return document


# --- the schema itself ----------------------------------------------------------------------------


def _schemas(node):
    """Every dict in the document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def test_the_document_uses_openapi_3_0_syntax_only():
    assert DOCUMENT["openapi"] == "3.0.3"
    types = [node["type"] for node in _schemas(DOCUMENT) if "type" in node]
    # 3.1's type lists and "null" type are not 3.0: a 3.0 reader ignores or refuses them.
    # (A dict is the schema of a key named "type", a growth report's type name.)
    assert "string" in types and [kind for kind in types if isinstance(kind, list) or kind == "null"] == []
    for schema in DOCUMENT["components"]["schemas"].values():
        OAS30Validator.check_schema(schema)  # raises SchemaError, naming the keyword, on a schema 3.0 refuses


def test_every_memory_object_with_fixed_keys_refuses_others():
    schemas = DOCUMENT["components"]["schemas"]
    for name in ("MemoryDocument", "MemoryProcess", "GrowthReport"):
        objects = [node for node in _schemas(schemas[name]) if node.get("type") == "object"]
        # Maps (why a growth report's figures are missing, by name) take any key; the rest are closed.
        closed = [node for node in objects if node.get("additionalProperties") is False]
        maps = [node for node in objects if isinstance(node.get("additionalProperties"), dict)]
        assert closed and len(closed) + len(maps) == len(objects), name


# --- memory_document on fake machines -------------------------------------------------------------


@pytest.mark.parametrize("name", MACHINES)
def test_memory_document_matches_the_schema(machine, name):
    document = _document(machine(name))

    assert _errors(MEMORY_SCHEMA, document) == []
    # The same through JSON, as a client reads it.
    assert _errors(MEMORY_SCHEMA, json.loads(json.dumps(document))) == []


def test_with_proc_every_figure_is_there(machine):
    document = _document(machine("v2 master and workers"))

    assert _errors(MEMORY_SCHEMA, document) == []
    assert [(process["role"], process["pid"]) for process in document["processes"]] == [
        ("master", MASTER_PID),
        ("worker", WORKER_PIDS[0]),
        ("worker", WORKER_PIDS[1]),
    ]
    assert all(process["pssBytes"] == 40 * MIB for process in document["processes"])
    assert document["servicePssBytes"] == 120 * MIB and document["unavailable"] == {}
    container = document["container"]
    assert container["events"]["oomKill"] == 1 and container["pressure"]["some"]["totalUs"] == 7_250_000
    assert document["clustering"]["replacingWorker"] == WORKER_PIDS[1]
    assert document["recycles"]["memory"] == 1 and document["growth"]["reports"] == 1
    assert document["growth"]["last"][0]["sites"][0]["where"] == "app/views.py:42"


@pytest.mark.parametrize("name", ["no /proc standalone", "no /proc master and a worker"])
def test_without_proc_the_figures_it_cannot_have_are_null_and_still_match(machine, name):
    document = _document(machine(name))

    assert _errors(MEMORY_SCHEMA, document) == []
    assert document["memory"]["limitSource"] == "host"
    assert document["servicePssBytes"] is None and set(document["unavailable"]) == {"servicePssBytes", "container"}
    container = document["container"]
    assert container["cgroupVersion"] is None and container["usageBytes"] is None and container["events"] is None
    own = next(process for process in document["processes"] if process["pid"] == os.getpid())
    assert (own["rssBytes"], own["pssBytes"], own["ussBytes"], own["peakRssBytes"]) == (None, None, None, PEAK_BYTES)
    assert set(own["unavailable"]) == {"rssBytes", "pssBytes", "ussBytes"}
    if name == "no /proc master and a worker":
        worker = next(process for process in document["processes"] if process["role"] == "worker")
        assert (worker["rssBytes"], worker["pssBytes"], worker["peakRssBytes"]) == (WORKER_RSS_BYTES, None, None)
        assert document["recycles"] is not None


# --- the schema refuses what it should ----------------------------------------------------------------


DELETED = object()


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        pytest.param(("surprise",), 1, "Additional properties", id="an extra key"),
        pytest.param(("processes", 0, "vmsBytes"), 1, "Additional properties", id="an extra process key"),
        pytest.param(("container", "pressure", "some", "avg60"), 1.0, "Additional properties", id="extra nested"),
        pytest.param(("recycles", "sigterm"), 1, "Additional properties", id="an unknown recycle reason"),
        pytest.param(("processes", 0, "pid"), None, "None for not nullable", id="a null pid"),
        pytest.param(("container", "limitBytes"), None, "None for not nullable", id="a null limit"),
        pytest.param(("memory", "external"), 0, "is not one of", id="external not null"),
        pytest.param(("processes", 0, "pssBytes"), "40 MB", "is not of type", id="a figure as a string"),
        pytest.param(("container", "cgroupVersion"), 3, "is not one of", id="a cgroup v3"),
        pytest.param(("timestamp",), "yesterday", "is not a 'date-time'", id="a timestamp not RFC 3339"),
        pytest.param(("thresholds", "warnBytes"), DELETED, "is a required property", id="no warnBytes"),
        pytest.param(("processes", 0, "peakRssBytes"), DELETED, "is a required property", id="a process key missing"),
        pytest.param(("growth", "last", 0, "verdict"), DELETED, "is a required property", id="a growth key missing"),
    ],
)
def test_the_schema_refuses_a_document_that_drifted(machine, path, value, error):
    document = _document(machine("v2 master and workers"))
    assert _errors(MEMORY_SCHEMA, document) == []
    drifted = copy.deepcopy(document)
    *parents, last = path
    parent = drifted
    for key in parents:
        parent = parent[key]

    if value is DELETED:
        del parent[last]
    else:
        parent[last] = value

    errors = _errors(MEMORY_SCHEMA, drifted)
    # Refused for that change alone: every error is about the changed key or the object that holds it.
    assert errors and error in errors[0], errors
    assert all(message.startswith("/".join(map(str, parents))) for message in errors), errors


# --- through the app: with and without HEALTH_TOKEN ---------------------------------------------------


def _app(context: HealthContext):
    app = create_app(context.settings)
    app.extensions["fitflix.health"] = context
    return app.test_client()


@pytest.mark.parametrize("name", MACHINES)
def test_the_answer_without_a_token_configured_matches_its_documented_schema(machine, name):
    response = _app(machine(name)).get("/health/memory")

    assert response.status_code == 200
    assert _errors(_answer_validator("/health/memory", "200"), response.get_json()) == []


@pytest.mark.parametrize("name", ["v2 master and workers", "no /proc standalone"])
def test_the_guarded_answer_hides_the_figures_and_matches_its_documented_schema(machine, name):
    client = _app(machine(name, Settings(health_token=TOKEN)))

    refused = client.get("/health/memory")
    shown = client.get("/health/memory", headers={"Authorization": f"Bearer {TOKEN}"})

    assert refused.status_code == 401
    assert _errors(_answer_validator("/health/memory", "401"), refused.get_json()) == []
    assert set(refused.get_json()) == {"error", "status", "message"}  # no figure, no pid
    assert shown.status_code == 200
    assert _errors(_answer_validator("/health/memory", "200"), shown.get_json()) == []
    assert _errors(_answer_validator("/health/memory", "200"), refused.get_json())  # a 401 is no memory document


# Each per-process figure of the JSON as a /metrics family (a null figure has no sample).
PROCESS_FAMILIES = {
    "rssBytes": "fitflix_process_rss_bytes",
    "pssBytes": "fitflix_process_pss_bytes",
    "ussBytes": "fitflix_process_uss_bytes",
    "peakRssBytes": "fitflix_process_peak_rss_bytes",
}


@pytest.mark.parametrize("name", MACHINES)
def test_metrics_shows_the_per_process_figures_of_the_document(machine, name):
    client = _app(machine(name))

    document = client.get("/health/memory").get_json()
    metrics = client.get("/metrics").get_data(as_text=True)

    samples = {
        (sample.name, sample.labels["pid"], sample.labels["role"]): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name in PROCESS_FAMILIES.values()
    }
    expected = {
        (family, str(process["pid"]), process["role"]): process[key]
        for process in document["processes"]
        for key, family in PROCESS_FAMILIES.items()
        if process[key] is not None
    }
    assert expected and samples == expected
