"""FitFlix benchmarks: `python -m bench` (see bench/__main__.py). Tables, never timed asserts."""
