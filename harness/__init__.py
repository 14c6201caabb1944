"""Helpers the tests and the benchmarks share: real cgroups and real gunicorn."""
