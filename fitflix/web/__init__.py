"""The web layer: what answers a request (the health blueprint, /metrics, /openapi.json, the page)."""
