"""`/openapi.json`: every endpoint and its answers, for people and for schemathesis."""

from __future__ import annotations

from flask import Blueprint, jsonify

api_docs = Blueprint("api_docs", __name__)

_ERROR = {
    "type": "object",
    "required": ["error", "status", "message"],
    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}, "message": {"type": "string"}},
}
_HEALTH_JSON = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["pass", "warn", "fail"]},
        "serviceId": {"type": "string"},
        "output": {"type": "string"},
        "checks": {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status", "time"],
                    "properties": {
                        "componentId": {"type": "string"},
                        "componentType": {"type": "string"},
                        "observedValue": {"type": ["number", "integer"]},
                        "observedUnit": {"type": "string"},
                        "status": {"enum": ["pass", "warn", "fail"]},
                        "time": {"type": "string"},
                    },
                },
            },
        },
    },
}
_INT_OR_NULL = {"type": ["integer", "null"]}
_PROCESS = {
    "type": "object",
    "required": ["pid", "role", "rssBytes", "pssBytes", "ussBytes"],
    "properties": {
        "pid": {"type": "integer"},
        "role": {"enum": ["master", "worker", "standalone"]},
        "rssBytes": {"type": "integer"},
        "pssBytes": {"type": "integer"},
        "ussBytes": {"type": "integer"},
    },
}
_MEMORY = {
    "type": "object",
    "required": ["status", "memory", "clustering", "container", "processes", "thresholds", "recycles", "timestamp"],
    "properties": {
        "status": {"enum": ["OK", "WARNING", "CRITICAL"]},
        "memory": {
            "type": "object",
            "required": ["rss", "heapUsed", "heapTotal", "external", "limit", "usage", "available", "limitSource"],
            "properties": {
                "rss": {"type": "integer", "description": "MB: sum of PSS over master and workers"},
                "heapUsed": _INT_OR_NULL,
                "heapTotal": _INT_OR_NULL,
                "external": {"type": "null"},
                "limit": {"type": "integer"},
                "usage": {"type": "integer", "description": "percent of the limit in use by the container"},
                "available": {"type": "integer"},
                "limitSource": {"type": "string"},
            },
        },
        "clustering": {"type": "object"},
        "container": {"type": "object"},
        "processes": {"type": "array", "items": _PROCESS},
        "thresholds": {"type": "object"},
        "recycles": {"type": ["object", "null"]},
        "requestsServed": _INT_OR_NULL,
        # What grew in the last workers recycled for memory: {"reports": count, "last": [report, ...]}.
        "growth": {"type": ["object", "null"]},
        "timestamp": {"type": "string"},
    },
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _negotiated(schema: dict, description: str) -> dict:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": schema},
            "application/health+json": {"schema": _HEALTH_JSON},
            "text/html": {"schema": {"type": "string"}},
        },
    }


_UNAUTHORIZED = _json(_ERROR, "HEALTH_TOKEN is set and the request did not present it")


def _operation(summary: str, responses: dict) -> dict:
    return {"get": {"summary": summary, "responses": responses}}


_STATUS_ONLY = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def _probe(description: str) -> dict:
    """A probe's answer: a status (and a reason when not ready), plain or health+json."""
    return {
        "description": description,
        "content": {"application/json": {"schema": _STATUS_ONLY}, "application/health+json": {"schema": _HEALTH_JSON}},
    }


def openapi_document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "FitFlix backend health", "version": "1.0.0"},
        "paths": {
            "/health": _operation(
                "Render's health check: 200 whenever the process answers (status only without the token)",
                {"200": _negotiated(_STATUS_ONLY, "The process answers"), "401": _UNAUTHORIZED},
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
                    "200": _negotiated(_MEMORY, "Figures; status OK, WARNING or CRITICAL"),
                    "503": _negotiated(_MEMORY, "CRITICAL with HEALTH_FAIL_ON_CRITICAL=true"),
                    "401": _UNAUTHORIZED,
                },
            ),
            "/metrics": _operation(
                "Prometheus text format",
                {
                    "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "401": _UNAUTHORIZED,
                },
            ),
            "/openapi.json": _operation(
                "This document",
                {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}},
            ),
        },
    }


@api_docs.get("/openapi.json")
def openapi_json():
    return jsonify(openapi_document())
