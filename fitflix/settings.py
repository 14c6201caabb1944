"""The one module that reads the environment, and the one place each setting is declared.

`SETTINGS` is the table: each variable's name, type, default, bounds, the
defaults MEMORY_PROFILE gives it and one line of help. `Settings` (a frozen
dataclass), `Settings.from_env`, `.env.example` and the docs' settings page
(`python -m fitflix.settings_doc --write`) all come from it, so a default is
changed in one line here and nowhere else.

`Settings.from_env(environ)` turns a mapping of strings into a `Settings`, or
raises `SettingsError` listing every bad variable at once: the variable, the
value it had and what is accepted. No value is ever replaced by a default
silently; a default applies only when the variable is unset.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
WORKERS = ("fitflix", "gthread")
MEMORY_PROFILES = ("standard", "memory-optimized")
OPTIMIZED = "memory-optimized"


@dataclass(frozen=True)
class Setting:
    """One environment variable: how it is read, its default and what it does."""

    name: str  # the environment variable
    kind: str  # "whole", "off-or-whole" (0 or low..high), "boolean", "choice", "secret", "text"
    default: object  # None: unset
    help: str  # one line or two: what it does (.env.example and the settings page)
    low: int | None = None  # the bounds of a number; a secret's shortest length
    high: int | None = None
    unit: str = "whole number"  # what a number counts, as the error message says it: "whole number of seconds"
    zero: str = ""  # what the lowest value means where it means something special ("never")
    choices: tuple[str, ...] = ()
    profiles: Mapping[str, object] = dataclasses.field(default_factory=dict)  # MEMORY_PROFILE's defaults
    unset: str = ""  # what an unset default means ("the cgroup's limit, else the host's memory")
    example: str = ""  # a value to show where the default is unset
    restart: bool = False  # SIGHUP cannot change it: the app or the memory monitor keeps the value it started with
    see: str = ""  # the docs page (and anchor) that says more
    field: str = ""  # the Settings attribute, when it is not the name in lower case

    @property
    def attribute(self) -> str:
        return self.field or self.name.lower()

    @property
    def secret(self) -> bool:
        return self.kind == "secret"

    @property
    def accepted(self) -> str:
        """What the error message says is accepted."""
        if self.kind == "boolean":
            return "one of true/false, 1/0, yes/no (any case)"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "text":
            return "a host name or address to bind"
        if self.kind == "secret":
            return f"at least {self.low} printable ASCII characters with no surrounding spaces"
        zero = f" ({self.zero})" if self.zero else ""
        if self.kind == "off-or-whole":
            return f"0{zero} or a {self.unit} from {self.low} to {self.high}"
        return f"a {self.unit} from {self.low}{zero} to {self.high}"


SECONDS = "whole number of seconds"
MEGABYTES = "whole number of megabytes"

# The table, in the order of the Settings fields. What MEMORY_PROFILE changes are the `profiles` defaults of
# three variables, each of which can still be set on its own (a variable set in the environment always wins).
# memory-optimized is the Node.js seed's `start:memory-optimized` (V8 heap capped at 350 of 512 MB instead of
# 400, a GC every 100 allocations, UV_THREADPOOL_SIZE=2) in Python terms, keeping only what measured a gain
# alone (BENCHMARKS.md, part 13): the lower budgets (leak peak 0.83 x standard's) and 2 threads (a busy worker
# -0.4 MB, /health x1.15). Measured alone and not kept: GC_THRESHOLD=100 (Python frees by refcount: leak peak
# +8 MB, no USS gain), HEAP_TRIM_MB=4 and MALLOC_ARENA_MAX=2 (no gain in peak or USS, /health x0.94-1.06),
# MAX_REQUESTS=5000 (no change in any figure, twice the recycles). They stay available on their own.
SETTINGS: tuple[Setting, ...] = (
    Setting("HOST", "text", "0.0.0.0", "Where to listen."),
    Setting(
        "PORT",
        "whole",
        3000,
        "Where to listen; Render and Heroku set it.",
        0,
        65535,
        unit="TCP port",
        zero="any free port",
    ),
    Setting(
        "MAX_MEMORY_MB",
        "whole",
        None,
        "The memory limit.",
        64,
        1048576,
        unit=MEGABYTES,
        unset="the cgroup's limit, else the host's memory",
        example="512",
    ),
    Setting(
        "ENABLE_CLUSTERING",
        "boolean",
        False,
        "More than one worker process, only when true and the limit is at least CLUSTER_MIN_MEMORY_MB.",
    ),
    Setting(
        "WEB_CONCURRENCY",
        "whole",
        None,
        "The worker count, when set (the platforms' convention).",
        1,
        64,
        unit="whole number of workers",
        unset="derived from the limit, the CPUs and ENABLE_CLUSTERING",
        example="2",
    ),
    Setting(
        "THREADS",
        "whole",
        8,
        "Request threads per worker (gthread).",
        1,
        64,
        unit="whole number of threads",
        profiles={OPTIMIZED: 2},  # the seed's UV_THREADPOOL_SIZE=2
    ),
    Setting(
        "CLUSTER_MIN_MEMORY_MB",
        "whole",
        1024,
        "Below this limit, one worker even with clustering.",
        64,
        1048576,
        unit=MEGABYTES,
    ),
    Setting(
        "WORKER_MAX_MEMORY_MB",
        "whole",
        None,
        "Recycle a worker whose private memory passes this (its budget).",
        16,
        1048576,
        unit=MEGABYTES,
        unset="derived from the limit",
        example="256",
        see="plan-and-recycling.md#the-plan",
    ),
    Setting(
        "MAX_REQUESTS",
        "whole",
        10000,
        "Recycle a worker after this many requests (plus up to the jitter).",
        0,
        10**9,
        zero="never",
    ),
    Setting("MAX_REQUESTS_JITTER", "whole", 1000, "Plus up to this many requests.", 0, 10**9),
    Setting(
        "WORKER_TIMEOUT_S", "whole", 30, "A request stuck this long gets its worker replaced.", 1, 3600, unit=SECONDS
    ),
    Setting(
        "WORKER",
        "choice",
        "fitflix",
        "fitflix: FitFlix's own worker (httptools, an epoll loop and app threads); gthread: gunicorn's gthread with "
        "heads read on its loop. TLS and the PROXY protocol always get gthread.",
        choices=WORKERS,
        see="slow-clients.md#the-worker",
    ),
    Setting(
        "HEAD_TIMEOUT_S",
        "whole",
        10,
        "A client gets this long to send a whole request head (WORKER=fitflix: and a body's first 64 KiB, and "
        "to move while sending more or reading an answer); a slow one gets a 408 or is closed.",
        1,
        300,
        unit=SECONDS,
        see="slow-clients.md#slow-and-idle-clients",
    ),
    Setting(
        "DRAIN_S",
        "whole",
        5,
        "On SIGTERM, /health/ready answers 503 and the service serves on this long, then stops; in-flight "
        "requests get the rest of 25 s (the platforms SIGKILL at 30 s).",
        0,
        20,
        unit=SECONDS,
        zero="stop at once",
        see="stopping-and-scaling.md#stopping-drain-on-sigterm",
    ),
    Setting(
        "MEMORY_WARN_PERCENT",
        "whole",
        80,
        "WARNING status and log line, percent of the limit, below the critical level; the worker budget derives "
        "from it.",
        1,
        99,
        unit="whole percentage",
        profiles={OPTIMIZED: 65},  # the recycle budget derives from it: 284 MB at 512 with one worker (361)
    ),
    Setting(
        "MEMORY_CRITICAL_PERCENT",
        "whole",
        90,
        "CRITICAL status, log line and the master's guard, percent of the limit; the hard cap derives from it.",
        2,
        100,
        unit="whole percentage",
        profiles={OPTIMIZED: 75},  # and the hard cap: 335 MB (412)
    ),
    Setting(
        "MEMORY_LOG_INTERVAL_S",
        "whole",
        60,
        "The master logs memory usage this often.",
        1,
        86400,
        unit=SECONDS,
        restart=True,
    ),
    Setting(
        "HEALTH_FAIL_ON_CRITICAL",
        "boolean",
        False,
        "Answer /health/memory with 503 when CRITICAL (Render restarts after 60 s of non-2xx).",
        restart=True,
    ),
    Setting("LOG_LEVEL", "choice", "info", "gunicorn's and the app's log level.", choices=LOG_LEVELS),
    Setting(
        "GUNICORN_CONTROL_SOCKET",
        "boolean",
        False,
        "gunicorn 27's control socket (gunicornc): about 2 MB in the master, a socket under $HOME.",
        field="control_socket",
    ),
    Setting(
        "MEMORY_RECYCLING",
        "boolean",
        True,
        "Memory recycling, the backstop and the master's monitor; false only to measure without them.",
    ),
    Setting(
        "READY_FAIL_ON_CRITICAL",
        "boolean",
        False,
        "Kubernetes readiness: answer 503 on /health/ready while memory is CRITICAL.",
        restart=True,
    ),
    Setting(
        "HEALTH_TOKEN",
        "secret",
        None,
        "When set, /health/memory, /metrics and the page need it as 'Authorization: Bearer <token>' or as the "
        "HTTP Basic password; without it they hide figures and pids.",
        16,
        unset="the figures are public",
        example="<16 or more printable characters>",
        restart=True,
        see="endpoints.md#endpoints",
    ),
    Setting(
        "LOG_FORMAT",
        "choice",
        "text",
        "text, or json: one JSON object per line for access, error and app logs.",
        choices=LOG_FORMATS,
    ),
    Setting(
        "ACCESS_LOG_HEALTH",
        "boolean",
        True,
        "false keeps /health, /health/live and /health/ready out of the access log.",
    ),
    Setting(
        "MEMORY_PROFILE",
        "choice",
        "standard",
        "standard, or memory-optimized: lower budgets (65/75 % of the limit instead of 80/90) and 2 threads; a "
        "variable set on its own still wins.",
        choices=MEMORY_PROFILES,
        see="profiles.md#memory-profiles",
    ),
    Setting(
        "GC_THRESHOLD",
        "whole",
        0,
        "A worker's generation-0 GC threshold (set by no profile: no gain measured, BENCHMARKS.md part 13).",
        0,
        100000,
        zero="Python's own",
    ),
    Setting(
        "HEAP_TRIM_MB",
        "whole",
        0,
        "malloc_trim(0) after a worker grew this many MB between two reads.",
        0,
        65536,
        unit=MEGABYTES,
        zero="never",
    ),
    Setting(
        "MALLOC_ARENA_MAX",
        "whole",
        0,
        "glibc's malloc arenas (its own: 8 x cores), capped in the master before any thread.",
        0,
        1024,
        zero="glibc's own",
    ),
    Setting(
        "WARM_UP",
        "boolean",
        True,
        "The master sends the service's own read-only endpoints a few requests before the first fork, so what a "
        "first request builds is shared by every worker (a busy worker about 1 MB smaller).",
        see="profiles.md#memory-profiles",
    ),
    Setting(
        "RECYCLE_REPLACE_FIRST",
        "boolean",
        True,
        "A worker recycled for memory or max_requests leaves only once its replacement serves, where the overlap "
        "(a fresh worker, and both workers' growth until the old one is gone) fits under the critical level; "
        "false: it stops accepting at once and gunicorn replaces it.",
        see="plan-and-recycling.md#the-recycle-moment-replace-then-retire",
    ),
    Setting(
        "WORKER_MEMORY_MULTIPLE",
        "off-or-whole",
        None,
        "Recycle a worker whose private memory passes this many times the app's size at start (the relative budget).",
        2,
        100,
        zero="off",
        unset="3 where no limit exists (no memory cgroup limit, no MAX_MEMORY_MB, no WORKER_MAX_MEMORY_MB), else off",
        example="3",
        see="plan-and-recycling.md#the-plan",
    ),
)
BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}
PROFILE_DEFAULTS: dict[str, dict[str, object]] = {
    profile: {setting.name: setting.profiles[profile] for setting in SETTINGS if profile in setting.profiles}
    for profile in MEMORY_PROFILES
}
# The variable behind each field, where it is not the field's name in capitals.
ENV_NAMES = {setting.attribute: setting.name for setting in SETTINGS if setting.field}
SECRET_FIELDS = frozenset(setting.attribute for setting in SETTINGS if setting.secret)
# Settings the preloaded app or the master's monitor took when the server started: a SIGHUP cannot change them
# (the app is loaded once, in the master, under preload_app).
RESTART_ONLY = frozenset(setting.name for setting in SETTINGS if setting.restart)
_TYPES = {"boolean": bool, "choice": str, "text": str, "secret": "str | None"}


class SettingsError(ValueError):
    """Every bad environment value (or every problem of the .env file), one problem per line."""

    def __init__(self, problems: list[str], what: str = "bad environment value(s)") -> None:
        self.problems = problems
        super().__init__(f"FitFlix cannot start: {what}:\n" + "\n".join(f"  {problem}" for problem in problems))


def _from_env(cls, environ: Mapping[str, str]):
    """Build Settings from `environ`, reporting every bad value at once."""
    reader = _Reader(environ)
    profile = reader.read(BY_NAME["MEMORY_PROFILE"]) or "standard"
    reader.profile_defaults.update(PROFILE_DEFAULTS[profile])
    values = {"memory_profile": profile}
    for setting in SETTINGS:
        if setting.name != "MEMORY_PROFILE":
            values[setting.attribute] = reader.read(setting)
    warn, critical = values["memory_warn_percent"], values["memory_critical_percent"]
    if warn is not None and critical is not None and warn >= critical:
        chosen = {name: _chosen(name, environ, profile) for name in ("MEMORY_WARN_PERCENT", "MEMORY_CRITICAL_PERCENT")}
        reader.problems.append(
            f"MEMORY_WARN_PERCENT={warn}{chosen['MEMORY_WARN_PERCENT']} and "
            f"MEMORY_CRITICAL_PERCENT={critical}{chosen['MEMORY_CRITICAL_PERCENT']}: "
            "the warning level must be below the critical level"
        )
    if reader.problems:
        raise SettingsError(reader.problems)
    return cls(**values)


def _chosen(name: str, environ: Mapping[str, str], profile: str) -> str:
    if name in environ:
        return ""
    return f" (MEMORY_PROFILE={profile}'s default)" if name in PROFILE_DEFAULTS[profile] else " (the default)"


Settings = dataclasses.make_dataclass(
    "Settings",
    [
        (
            setting.attribute,
            _TYPES.get(setting.kind, "int" if setting.default is not None else "int | None"),
            # A secret is kept out of repr() so no log line or error page can show it.
            dataclasses.field(default=setting.default, repr=not setting.secret),
        )
        for setting in SETTINGS
    ],
    frozen=True,
    namespace={"from_env": classmethod(_from_env)},
)
Settings.__module__ = __name__  # make_dataclass takes module= only from Python 3.12
Settings.__doc__ = "Every setting's value, one field per row of SETTINGS (its defaults are the table's)."


def setting_origins(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Where each variable's value comes from: 'set', '.env', "memory-optimized's default", 'default', 'unset'."""
    if environ is None:
        environ = os.environ  # as load_settings left it: the real environment, and the .env's values under it
    profile = environ.get("MEMORY_PROFILE", "standard").strip().lower()
    profile_defaults = PROFILE_DEFAULTS.get(profile, {})
    origins = {}
    for setting in SETTINGS:
        if setting.name in environ:
            origins[setting.name] = ".env" if setting.name in _from_dotenv else "set"
        elif setting.name in profile_defaults:
            origins[setting.name] = f"{profile}'s default"
        else:
            origins[setting.name] = "default" if setting.default is not None else "unset"
    return origins


class _Reader:
    """Parses variables one by one, collecting problems instead of raising."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        self.profile_defaults: dict[str, object] = {}  # MEMORY_PROFILE's defaults, where it changes them

    def read(self, setting: Setting):
        if setting.kind == "secret":
            return self.secret(setting.name, setting.low)
        convert = {
            "whole": self._whole,
            "off-or-whole": self._off_or_whole,
            "boolean": self._boolean,
            "choice": self._choice,
            "text": lambda text, _setting: text,
        }[setting.kind]
        return self._parse(setting.name, setting.default, setting.accepted, lambda text: convert(text, setting))

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

    @staticmethod
    def _whole(text: str, setting: Setting) -> int:
        if not text.lstrip("+-").isdigit() or not text.isascii():
            raise ValueError
        number = int(text)
        if not setting.low <= number <= setting.high:
            raise ValueError
        return number

    @staticmethod
    def _off_or_whole(text: str, setting: Setting) -> int:
        """0 (off), or a whole number from low to high."""
        if not text.lstrip("+").isdigit() or not text.isascii():
            raise ValueError
        number = int(text)
        if number != 0 and not setting.low <= number <= setting.high:
            raise ValueError
        return number

    @staticmethod
    def _boolean(text: str, _setting: Setting) -> bool:
        word = text.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError

    @staticmethod
    def _choice(text: str, setting: Setting) -> str:
        if text.lower() not in setting.choices:
            raise ValueError
        return text.lower()

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


def wsgi_script_name(environ: Mapping[str, str] | None = None) -> str:
    """gunicorn's SCRIPT_NAME convention: the prefix the app is mounted under, from the process environment
    (gunicorn/http/wsgi.py reads it so), not a FitFlix setting. FitFlix's own worker reads it here, once."""
    return (os.environ if environ is None else environ).get("SCRIPT_NAME", "")
