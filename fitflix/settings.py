"""The one module that reads the environment.

`Settings.from_env(environ)` turns a mapping of strings into a frozen
dataclass, or raises `SettingsError` listing every bad variable at once: the
variable, the value it had and what is accepted. No value is ever replaced by
a default silently; a default applies only when the variable is unset.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
MEMORY_PROFILES = ("standard", "memory-optimized")

# What MEMORY_PROFILE changes: the defaults of these variables, each of which can still be set on its own
# (a variable set in the environment always wins). memory-optimized is the Node.js seed's
# `start:memory-optimized` (V8 heap capped at 350 of 512 MB instead of 400, a GC every 100 allocations,
# UV_THREADPOOL_SIZE=2) in Python terms, keeping only what measured a gain alone (BENCHMARKS.md, part 13):
# the lower budgets (leak peak 0.83 x standard's) and 2 threads (a busy worker -0.4 MB, /health x1.15).
# Measured alone and not kept: GC_THRESHOLD=100 (Python frees by refcount: leak peak +8 MB, no USS gain),
# HEAP_TRIM_MB=4 and MALLOC_ARENA_MAX=2 (no gain in peak or USS, /health x0.94-1.06), MAX_REQUESTS=5000 (no
# change in any figure, twice the recycles). They stay available on their own.
PROFILE_DEFAULTS: dict[str, dict[str, int]] = {
    "standard": {},
    "memory-optimized": {
        "MEMORY_WARN_PERCENT": 65,  # the recycle budget derives from it: 284 MB at 512 with one worker (361)
        "MEMORY_CRITICAL_PERCENT": 75,  # and the hard cap: 335 MB (412)
        "THREADS": 2,  # the seed's UV_THREADPOOL_SIZE=2
    },
}


class SettingsError(ValueError):
    """Every bad environment value (or every problem of the .env file), one problem per line."""

    def __init__(self, problems: list[str], what: str = "bad environment value(s)") -> None:
        self.problems = problems
        super().__init__(f"FitFlix cannot start: {what}:\n" + "\n".join(f"  {problem}" for problem in problems))


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 3000
    max_memory_mb: int | None = None
    enable_clustering: bool = False
    web_concurrency: int | None = None
    threads: int = 8
    cluster_min_memory_mb: int = 1024
    worker_max_memory_mb: int | None = None
    max_requests: int = 10000
    max_requests_jitter: int = 1000
    worker_timeout_s: int = 30
    # A client gets this long to send a whole request head (fitflix.serving.worker).
    head_timeout_s: int = 10
    # On SIGTERM, /health/ready answers 503 and the service keeps serving this long (hooks.Drain).
    drain_s: int = 5
    memory_warn_percent: int = 80
    memory_critical_percent: int = 90
    memory_log_interval_s: int = 60
    health_fail_on_critical: bool = False
    log_level: str = "info"
    control_socket: bool = False
    memory_recycling: bool = True
    ready_fail_on_critical: bool = False
    # A secret: kept out of repr() so no log line or error page can show it.
    health_token: str | None = field(default=None, repr=False)
    log_format: str = "text"
    access_log_health: bool = True
    memory_profile: str = "standard"
    gc_threshold: int = 0  # gen-0 threshold for workers; 0 keeps Python's own (700)
    heap_trim_mb: int = 0  # malloc_trim(0) after a request that grew the worker this many MB; 0 never
    malloc_arena_max: int = 0  # glibc's M_ARENA_MAX; 0 leaves glibc's own (8 x cores)
    warm_up: bool = True  # the master sends the service's read-only endpoints a few requests before forking
    # A worker recycled for memory or max_requests leaves once its replacement serves (fitflix.serving.surge).
    recycle_replace_first: bool = True
    # Recycle a worker whose private memory passes this many times the app's size at start; None: the
    # default where no memory limit exists, off under a real one (fitflix.serving.sizing.relative_budget).
    worker_memory_multiple: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build Settings from `environ`, reporting every bad value at once."""
        reader = _Reader(environ)
        profile = reader.choice("MEMORY_PROFILE", "standard", MEMORY_PROFILES) or "standard"
        for name, value in PROFILE_DEFAULTS[profile].items():
            reader.profile_defaults[name] = value
        defaults = cls()
        values = dict(
            memory_profile=profile,
            host=reader.text("HOST", defaults.host),
            port=reader.whole("PORT", defaults.port, 0, 65535, "a TCP port from 0 (any free port) to 65535"),
            max_memory_mb=reader.whole(
                "MAX_MEMORY_MB", None, 64, 1048576, "a whole number of megabytes from 64 to 1048576"
            ),
            enable_clustering=reader.boolean("ENABLE_CLUSTERING", defaults.enable_clustering),
            web_concurrency=reader.whole("WEB_CONCURRENCY", None, 1, 64, "a whole number of workers from 1 to 64"),
            threads=reader.whole("THREADS", defaults.threads, 1, 64, "a whole number of threads from 1 to 64"),
            cluster_min_memory_mb=reader.whole(
                "CLUSTER_MIN_MEMORY_MB",
                defaults.cluster_min_memory_mb,
                64,
                1048576,
                "a whole number of megabytes from 64 to 1048576",
            ),
            worker_max_memory_mb=reader.whole(
                "WORKER_MAX_MEMORY_MB", None, 16, 1048576, "a whole number of megabytes from 16 to 1048576"
            ),
            max_requests=reader.whole(
                "MAX_REQUESTS", defaults.max_requests, 0, 10**9, "a whole number from 0 (never) to 1000000000"
            ),
            max_requests_jitter=reader.whole(
                "MAX_REQUESTS_JITTER", defaults.max_requests_jitter, 0, 10**9, "a whole number from 0 to 1000000000"
            ),
            worker_timeout_s=reader.whole(
                "WORKER_TIMEOUT_S", defaults.worker_timeout_s, 1, 3600, "a whole number of seconds from 1 to 3600"
            ),
            head_timeout_s=reader.whole(
                "HEAD_TIMEOUT_S", defaults.head_timeout_s, 1, 300, "a whole number of seconds from 1 to 300"
            ),
            drain_s=reader.whole(
                "DRAIN_S", defaults.drain_s, 0, 20, "a whole number of seconds from 0 (stop at once) to 20"
            ),
            memory_warn_percent=reader.whole(
                "MEMORY_WARN_PERCENT", defaults.memory_warn_percent, 1, 99, "a whole percentage from 1 to 99"
            ),
            memory_critical_percent=reader.whole(
                "MEMORY_CRITICAL_PERCENT", defaults.memory_critical_percent, 2, 100, "a whole percentage from 2 to 100"
            ),
            memory_log_interval_s=reader.whole(
                "MEMORY_LOG_INTERVAL_S",
                defaults.memory_log_interval_s,
                1,
                86400,
                "a whole number of seconds from 1 to 86400",
            ),
            health_fail_on_critical=reader.boolean("HEALTH_FAIL_ON_CRITICAL", defaults.health_fail_on_critical),
            log_level=reader.choice("LOG_LEVEL", defaults.log_level, LOG_LEVELS),
            control_socket=reader.boolean("GUNICORN_CONTROL_SOCKET", defaults.control_socket),
            memory_recycling=reader.boolean("MEMORY_RECYCLING", defaults.memory_recycling),
            ready_fail_on_critical=reader.boolean("READY_FAIL_ON_CRITICAL", defaults.ready_fail_on_critical),
            health_token=reader.secret("HEALTH_TOKEN", 16),
            log_format=reader.choice("LOG_FORMAT", defaults.log_format, LOG_FORMATS),
            access_log_health=reader.boolean("ACCESS_LOG_HEALTH", defaults.access_log_health),
            gc_threshold=reader.whole(
                "GC_THRESHOLD", defaults.gc_threshold, 0, 100000, "a whole number from 0 (Python's own) to 100000"
            ),
            heap_trim_mb=reader.whole(
                "HEAP_TRIM_MB", defaults.heap_trim_mb, 0, 65536, "a whole number of megabytes from 0 (never) to 65536"
            ),
            warm_up=reader.boolean("WARM_UP", defaults.warm_up),
            recycle_replace_first=reader.boolean("RECYCLE_REPLACE_FIRST", defaults.recycle_replace_first),
            worker_memory_multiple=reader.whole_or_zero(
                "WORKER_MEMORY_MULTIPLE", None, 2, 100, "0 (off) or a whole number from 2 to 100"
            ),
            malloc_arena_max=reader.whole(
                "MALLOC_ARENA_MAX", defaults.malloc_arena_max, 0, 1024, "a whole number from 0 (glibc's own) to 1024"
            ),
        )
        warn, critical = values["memory_warn_percent"], values["memory_critical_percent"]
        if warn is not None and critical is not None and warn >= critical:
            chosen = {
                name: ""
                if name in environ
                else f" (MEMORY_PROFILE={profile}'s default)"
                if name in PROFILE_DEFAULTS[profile]
                else " (the default)"
                for name in ("MEMORY_WARN_PERCENT", "MEMORY_CRITICAL_PERCENT")
            }
            reader.problems.append(
                f"MEMORY_WARN_PERCENT={warn}{chosen['MEMORY_WARN_PERCENT']} and "
                f"MEMORY_CRITICAL_PERCENT={critical}{chosen['MEMORY_CRITICAL_PERCENT']}: "
                "the warning level must be below the critical level"
            )
        if reader.problems:
            raise SettingsError(reader.problems)
        return cls(**values)


class _Reader:
    """Parses variables one by one, collecting problems instead of raising."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        self.profile_defaults: dict[str, object] = {}  # MEMORY_PROFILE's defaults, where it changes them

    def _parse(self, name: str, default, accepted: str, convert: Callable[[str], object]):
        if name not in self.environ:
            return self.profile_defaults.get(name, default)
        raw = self.environ[name]
        try:
            if raw.strip() == "":
                raise ValueError
            return convert(raw.strip())
        except ValueError:
            hint = " (it is empty: unset it to use the default)" if raw.strip() == "" else ""
            self.problems.append(f"{name}={raw!r}: expected {accepted}{hint}")
            return None

    def whole(self, name: str, default: int | None, low: int, high: int, accepted: str) -> int | None:
        def convert(text: str) -> int:
            if not text.lstrip("+-").isdigit() or not text.isascii():
                raise ValueError
            number = int(text)
            if not low <= number <= high:
                raise ValueError
            return number

        return self._parse(name, default, accepted, convert)

    def whole_or_zero(self, name: str, default: int | None, low: int, high: int, accepted: str) -> int | None:
        """0 (off), or a whole number from `low` to `high`."""

        def convert(text: str) -> int:
            if not text.lstrip("+").isdigit() or not text.isascii():
                raise ValueError
            number = int(text)
            if number != 0 and not low <= number <= high:
                raise ValueError
            return number

        return self._parse(name, default, accepted, convert)

    def boolean(self, name: str, default: bool) -> bool | None:
        def convert(text: str) -> bool:
            word = text.lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise ValueError

        return self._parse(name, default, "one of true/false, 1/0, yes/no (any case)", convert)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str | None:
        def convert(text: str) -> str:
            if text.lower() not in allowed:
                raise ValueError
            return text.lower()

        return self._parse(name, default, "one of " + ", ".join(allowed), convert)

    def secret(self, name: str, min_length: int) -> str | None:
        """A token: never echoed back in a problem line, only described."""
        if name not in self.environ:
            return None
        value = self.environ[name]
        if len(value) < min_length or not value.isascii() or not value.isprintable() or value != value.strip():
            self.problems.append(
                f"{name}=<{len(value)} characters, not shown>: expected at least {min_length} printable "
                "ASCII characters with no surrounding spaces"
            )
            return None
        return value

    def text(self, name: str, default: str) -> str | None:
        return self._parse(name, default, "a host name or address to bind", str)


def dotenv_problems(path: Path) -> list[str]:
    """What keeps the .env at `path` from being read whole; [] when it is fine or absent.

    A line python-dotenv cannot parse would be skipped with a warning and the
    service would start on defaults (public figures, say): fail closed
    instead. No value is ever echoed: a .env holds secrets.
    """
    if not os.path.lexists(path):
        return []
    if not path.is_file():
        return [f"{path}: not a regular file (a folder, or a link to nothing); expected a file of KEY=value lines"]
    try:
        raw = path.read_bytes()
    except OSError as error:
        return [f"{path}: cannot be read ({error.strerror})"]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return [f"{path} line {line}: not UTF-8 text (byte {error.start}); save the file as UTF-8"]
    from dotenv.parser import parse_stream

    return [
        f"{path} line {binding.original.line}: cannot be parsed; expected KEY=value "
        "(an '=' missing, or a quote left open)"
        for binding in parse_stream(io.StringIO(text))
        if binding.error
    ]


# The variable behind each field, where it is not the field's name in capitals.
ENV_NAMES = {"control_socket": "GUNICORN_CONTROL_SOCKET"}
SECRET_FIELDS = frozenset({"health_token"})


def env_name(field_name: str) -> str:
    return ENV_NAMES.get(field_name, field_name.upper())


def setting_changes(old: Settings, new: Settings) -> list[tuple[str, str]]:
    """(variable, 'old -> new') for every setting that differs; a secret says only that it changed."""
    changes = []
    for name in old.__dataclass_fields__:
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            shown = "changed" if name in SECRET_FIELDS else f"{before!r} -> {after!r}"
            changes.append((env_name(name), shown))
    return changes


_loaded: Settings | None = None
_real_environ: dict[str, str] | None = None  # the process environment before any .env was applied
_from_dotenv: set[str] = set()  # the variables the .env put into os.environ


def _read_dotenv(dotenv_path: Path | None) -> dict[str, str]:
    """The .env's values, after refusing a file that cannot be used whole."""
    if dotenv_path is None:
        return {}
    problems = dotenv_problems(dotenv_path)
    if problems:
        raise SettingsError(problems, "the .env file cannot be used")
    if not dotenv_path.is_file():
        return {}
    from dotenv import dotenv_values

    return {key: value for key, value in dotenv_values(dotenv_path).items() if value is not None}


def load_settings(dotenv_path: Path | None = None) -> Settings:
    """Read `.env` (real environment variables win) and the environment, once per process."""
    global _loaded, _real_environ
    if _loaded is None:
        _real_environ = dict(os.environ)
        _apply_dotenv(_read_dotenv(dotenv_path))
        _loaded = Settings.from_env(os.environ)
    return _loaded


def _apply_dotenv(dotenv: dict[str, str]) -> None:
    """Put the .env's values into os.environ where the real environment has none (it wins)."""
    real = _real_environ or {}
    for key in _from_dotenv - set(dotenv):
        os.environ.pop(key, None)  # a line the .env no longer has
    _from_dotenv.clear()
    for key, value in dotenv.items():
        if key not in real:
            os.environ[key] = value
            _from_dotenv.add(key)


def reload_settings(dotenv_path: Path | None) -> Settings:
    """Read `.env` and the environment again (SIGHUP); on any problem, raise and keep what is loaded.

    The real environment is the one the process started with, so a value the
    old .env put into os.environ does not outlive its line.
    """
    global _loaded
    real = _real_environ if _real_environ is not None else dict(os.environ)
    dotenv = _read_dotenv(dotenv_path)
    settings = Settings.from_env({**dotenv, **real})
    _apply_dotenv(dotenv)
    _loaded = settings
    return settings
