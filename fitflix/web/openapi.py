"""`/openapi.json`: every endpoint and its answers, for people and for schemathesis.

OpenAPI 3.0.3: a figure a host may not give is `nullable: true` beside its
type (3.0 has neither a "null" type nor lists of types), and an object whose
keys are fixed says `additionalProperties: false`, so an answer that gains,
loses or nulls a key the document does not allow fails
`tests/unit/test_memory_schema.py` and schemathesis.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from fitflix.serving.state import REASONS
from fitflix.web.health import EVENT_NAMES

api_docs = Blueprint("api_docs", __name__)

_INTEGER = {"type": "integer"}
_NUMBER = {"type": "number"}
_STRING = {"type": "string"}
_BOOLEAN = {"type": "boolean"}


def _nullable(schema: dict) -> dict:
    """`schema` or null. 3.0.3's `nullable` widens only the `type` beside it: an `enum` must list null itself."""
    widened = {**schema, "nullable": True}
    if "enum" in widened:
        widened["enum"] = [*widened["enum"], None]
    return widened


def _fixed(properties: dict, optional: tuple[str, ...] = (), description: str | None = None) -> dict:
    """An object with these keys and no others, each always there unless `optional` names it."""
    schema: dict = {"type": "object"}
    if description:
        schema["description"] = description
    required = [name for name in properties if name not in optional]
    if required:  # 3.0's `required` may not be empty
        schema["required"] = required
    schema.update(properties=properties, additionalProperties=False)
    return schema


def _reasons(*figures: str) -> dict:
    """`unavailable`: why a figure is null, under the figure's JSON name; only the null ones are there."""
    return _fixed({figure: _STRING for figure in figures}, optional=figures)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


_NULLABLE_INTEGER = _nullable(_INTEGER)
_NULLABLE_NUMBER = _nullable(_NUMBER)
_NULLABLE_STRING = _nullable(_STRING)
_HEALTH_STATUS = {"enum": ["pass", "warn", "fail"]}

_ERROR = _fixed({"error": _STRING, "status": _INTEGER, "message": _STRING})
_HEALTH_JSON = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": _HEALTH_STATUS,
        "serviceId": _STRING,
        "description": _STRING,
        "output": _STRING,
        "checks": {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status", "time"],
                    "properties": {
                        "componentId": _STRING,
                        "componentType": _STRING,
                        "observedValue": _NUMBER,
                        "observedUnit": _STRING,
                        "status": _HEALTH_STATUS,
                        "time": _STRING,
                    },
                },
            },
        },
    },
}
_STATUS_ONLY = {"type": "object", "required": ["status"], "properties": {"status": _STRING}}

_PROCESS = _fixed(
    {
        "pid": _INTEGER,
        "role": {"enum": ["master", "worker", "standalone"]},
        "rssBytes": _NULLABLE_INTEGER,
        # Linux only (smaps_rollup, or psutil there): null without /proc.
        "pssBytes": _NULLABLE_INTEGER,
        "ussBytes": _NULLABLE_INTEGER,
        # getrusage's peak, where the current RSS cannot be read (no /proc, no psutil).
        "peakRssBytes": _NULLABLE_INTEGER,
        "source": _STRING,
        "unavailable": _reasons("rssBytes", "pssBytes", "ussBytes"),
    }
)
# memory.events (v2) as /health/memory names them; a kernel writes only the ones it counts.
_EVENTS = tuple(EVENT_NAMES.values())
_PRESSURE_LINE = _fixed({"avg10": _NUMBER, "totalUs": _INTEGER})
# A report of what grew in a worker recycled for memory (fitflix.memory.growth `GrowthReport.as_dict`).
_GROWTH_REPORT = _fixed(
    {
        "pid": _INTEGER,
        "reason": _STRING,
        "ussBytes": _INTEGER,
        "ussAtBootBytes": _INTEGER,
        "ussAtArmBytes": _NULLABLE_INTEGER,
        "growthSinceBootBytes": _INTEGER,
        "growthSinceArmBytes": _NULLABLE_INTEGER,
        "armedAfterS": _NULLABLE_NUMBER,
        "tracedBytes": _NULLABLE_INTEGER,
        "tracingOverheadBytes": _NULLABLE_INTEGER,
        "pythonSharePercent": _NULLABLE_NUMBER,
        "unaccountedBytes": _NULLABLE_INTEGER,
        "verdict": {"enum": ["python", "native", "unknown"]},
        "sites": {"type": "array", "items": _fixed({"where": _STRING, "kb": _NUMBER, "count": _INTEGER})},
        "types": {
            "type": "array",
            "items": _fixed({"type": _STRING, "countGrowth": _INTEGER, "kbGrowth": _NUMBER}),
        },
        "censusCutShort": _BOOLEAN,
        "snapshotBlocks": _NULLABLE_INTEGER,
        "reportMs": _NUMBER,
        "reportCpuMs": _NUMBER,
        "notes": {"type": "array", "items": _STRING},
        # Why a figure or a group is null or empty, by its name ("tracing", "sites"...).
        "unavailable": {"type": "object", "additionalProperties": _STRING},
    }
)
_MEMORY = _fixed(
    {
        "status": {"enum": ["OK", "WARNING", "CRITICAL"]},
        # The Node.js version's block, in MB.
        "memory": _fixed(
            {
                "rss": {**_INTEGER, "description": "MB: the service's own memory (PSS summed where the host has it)"},
                "heapUsed": _NULLABLE_INTEGER,
                "heapTotal": _NULLABLE_INTEGER,
                "external": {**_INTEGER, "nullable": True, "enum": [None]},  # always null: no V8 here
                "limit": _INTEGER,
                "usage": {**_INTEGER, "description": "percent of the limit in use (see container.usedSource)"},
                "available": _INTEGER,
                "limitSource": _STRING,
            }
        ),
        "clustering": _fixed(
            {
                "enabled": _BOOLEAN,
                "isWorker": _BOOLEAN,
                "workerId": _INTEGER,
                "workers": _INTEGER,
                "plannedWorkers": _INTEGER,
                "replacingWorker": _NULLABLE_INTEGER,
                "threads": _INTEGER,
            }
        ),
        # Null figures here where there is no memory cgroup (see unavailable.container) or on cgroup v1.
        "container": _fixed(
            {
                "cgroupVersion": _nullable({"enum": [1, 2], **_INTEGER}),
                "cgroupPath": _NULLABLE_STRING,
                "limitBytes": _INTEGER,
                "limitSource": _STRING,
                "cgroupLimitBytes": _NULLABLE_INTEGER,
                "usageBytes": _NULLABLE_INTEGER,
                "workingSetBytes": _NULLABLE_INTEGER,
                "oomKills": _NULLABLE_INTEGER,
                "limitFile": _NULLABLE_STRING,
                "memoryMaxBytes": _NULLABLE_INTEGER,
                "memoryHighBytes": _NULLABLE_INTEGER,
                # v2's memory.events as the kernel writes them (oomGroupKill from Linux 5.17).
                "events": _nullable(_fixed(dict.fromkeys(_EVENTS, _INTEGER), optional=_EVENTS)),
                "pressure": _nullable(
                    _fixed({"some": _PRESSURE_LINE, "full": _PRESSURE_LINE}, optional=("some", "full"))
                ),
                "usedBytes": _INTEGER,
                "usedSource": _STRING,
                "neighboursBytes": _NULLABLE_INTEGER,
            }
        ),
        "processes": {"type": "array", "items": _ref("MemoryProcess")},
        "servicePssBytes": _NULLABLE_INTEGER,
        "unavailable": _reasons("servicePssBytes", "container"),
        "thresholds": _fixed(
            {
                "warnPercent": _INTEGER,
                "criticalPercent": _INTEGER,
                "warnBytes": _INTEGER,
                "criticalBytes": _INTEGER,
                "workerBudgetMb": _INTEGER,
                "workerHardCapMb": _INTEGER,
                "absoluteBudgetMb": _INTEGER,
                "relativeBudgetMb": _NULLABLE_INTEGER,
                "memoryMultiple": _NULLABLE_INTEGER,
                "appBaselineMb": _NULLABLE_NUMBER,
                "budgetRule": _STRING,
            }
        ),
        "profile": _fixed(
            {
                "name": _STRING,
                "gcThreshold": _NULLABLE_INTEGER,
                "heapTrimMb": _NULLABLE_INTEGER,
                "mallocArenaMax": _NULLABLE_INTEGER,
                "maxRequests": _INTEGER,
            }
        ),
        # Null without gunicorn (no shared state), as are requestsServed and growth.
        "recycles": _nullable(_fixed(dict.fromkeys(REASONS, _INTEGER))),
        "requestsServed": _NULLABLE_INTEGER,
        "growth": _nullable(
            _fixed(
                {"reports": _INTEGER, "last": {"type": "array", "items": _ref("GrowthReport")}},
                description="What grew in the last workers recycled for memory, newest first",
            )
        ),
        "timestamp": {**_STRING, "format": "date-time"},
    }
)

_SCHEMAS = {
    "Error": _ERROR,
    "HealthJson": _HEALTH_JSON,
    "StatusOnly": _STATUS_ONLY,
    "MemoryDocument": _MEMORY,
    "MemoryProcess": _PROCESS,
    "GrowthReport": _GROWTH_REPORT,
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _negotiated(schema: dict, description: str) -> dict:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": schema},
            "application/health+json": {"schema": _ref("HealthJson")},
            "text/html": {"schema": _STRING},
        },
    }


_UNAUTHORIZED = _json(_ref("Error"), "HEALTH_TOKEN is set and the request did not present it")


def _operation(summary: str, responses: dict) -> dict:
    return {"get": {"summary": summary, "responses": responses}}


def _probe(description: str) -> dict:
    """A probe's answer: a status (and a reason when not ready), plain or health+json."""
    return {
        "description": description,
        "content": {
            "application/json": {"schema": _ref("StatusOnly")},
            "application/health+json": {"schema": _ref("HealthJson")},
        },
    }


def openapi_document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "FitFlix backend health", "version": "1.0.0"},
        "paths": {
            "/health": _operation(
                "Render's health check: 200 whenever the process answers (status only without the token)",
                {"200": _negotiated(_ref("StatusOnly"), "The process answers"), "401": _UNAUTHORIZED},
            ),
            "/health/live": _operation(
                "Liveness: never fails on memory pressure",
                {"200": _probe("Alive")},
            ),
            "/health/ready": _operation(
                "Readiness: 503 while this worker shuts down, or on CRITICAL when READY_FAIL_ON_CRITICAL=true",
                {"200": _probe("Ready"), "503": _probe("Not ready")},
            ),
            "/health/memory": _operation(
                "Memory as the kernel counts it: the container, every process, recycles",
                {
                    "200": _negotiated(_ref("MemoryDocument"), "Figures; status OK, WARNING or CRITICAL"),
                    "503": _negotiated(_ref("MemoryDocument"), "CRITICAL with HEALTH_FAIL_ON_CRITICAL=true"),
                    "401": _UNAUTHORIZED,
                },
            ),
            "/metrics": _operation(
                "Prometheus text format",
                {
                    "200": {"description": "Metrics", "content": {"text/plain": {"schema": _STRING}}},
                    "401": _UNAUTHORIZED,
                },
            ),
            "/openapi.json": _operation(
                "This document",
                {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}},
            ),
        },
        "components": {"schemas": _SCHEMAS},
    }


@api_docs.get("/openapi.json")
def openapi_json():
    return jsonify(openapi_document())
