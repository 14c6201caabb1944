"""Settings.from_env: every bad value named, quoted and explained, all at once."""

from __future__ import annotations

import os

import pytest

from fitflix.settings import Settings, SettingsError, dotenv_problems, setting_changes, wsgi_script_name

MEGABYTES = "a whole number of megabytes from 64 to 1048576"
BOOLEAN = "one of true/false, 1/0, yes/no (any case)"
PORT = "a TCP port from 0 (any free port) to 65535"

BAD_VALUES = [
    ("PORT", "abc", PORT),
    ("PORT", "65536", PORT),
    ("PORT", "-1", PORT),
    ("PORT", "80.0", PORT),
    ("PORT", "0x50", PORT),
    ("MAX_MEMORY_MB", "0", MEGABYTES),
    ("MAX_MEMORY_MB", "-512", MEGABYTES),
    ("MAX_MEMORY_MB", "63", MEGABYTES),
    ("MAX_MEMORY_MB", "1048577", MEGABYTES),
    ("MAX_MEMORY_MB", "512MB", MEGABYTES),
    ("MAX_MEMORY_MB", "1.5", MEGABYTES),
    ("MAX_MEMORY_MB", "1e3", MEGABYTES),
    ("MAX_MEMORY_MB", "1_024", MEGABYTES),  # int() would take it; a human reads 1 024
    ("MAX_MEMORY_MB", "\uff15\uff11\uff12", MEGABYTES),  # fullwidth 512
    ("MAX_MEMORY_MB", "\u0665\u0661\u0662", MEGABYTES),  # Arabic-Indic 512
    ("MAX_MEMORY_MB", "5\u00b2", MEGABYTES),  # superscript two
    ("MAX_MEMORY_MB", "9" * 5000, MEGABYTES),  # past int()'s digit limit
    ("WEB_CONCURRENCY", "0", "a whole number of workers from 1 to 64"),
    ("WEB_CONCURRENCY", "65", "a whole number of workers from 1 to 64"),
    ("WEB_CONCURRENCY", "auto", "a whole number of workers from 1 to 64"),
    ("THREADS", "two", "a whole number of threads from 1 to 64"),
    ("CLUSTER_MIN_MEMORY_MB", "32", MEGABYTES),
    ("WORKER_MAX_MEMORY_MB", "15", "a whole number of megabytes from 16 to 1048576"),
    ("MAX_REQUESTS", "-5", "a whole number from 0 (never) to 1000000000"),
    ("MAX_REQUESTS_JITTER", "lots", "a whole number from 0 to 1000000000"),
    ("WORKER_TIMEOUT_S", "0", "a whole number of seconds from 1 to 3600"),
    ("WORKER_TIMEOUT_S", "30s", "a whole number of seconds from 1 to 3600"),
    ("HEAD_TIMEOUT_S", "0", "a whole number of seconds from 1 to 300"),
    ("HEAD_TIMEOUT_S", "301", "a whole number of seconds from 1 to 300"),
    ("DRAIN_S", "21", "a whole number of seconds from 0 (stop at once) to 20"),
    ("DRAIN_S", "-1", "a whole number of seconds from 0 (stop at once) to 20"),
    ("MEMORY_WARN_PERCENT", "100", "a whole percentage from 1 to 99"),
    ("MEMORY_WARN_PERCENT", "0", "a whole percentage from 1 to 99"),
    ("MEMORY_CRITICAL_PERCENT", "101", "a whole percentage from 2 to 100"),
    ("MEMORY_CRITICAL_PERCENT", "85%", "a whole percentage from 2 to 100"),
    ("MEMORY_LOG_INTERVAL_S", "86401", "a whole number of seconds from 1 to 86400"),
    ("ENABLE_CLUSTERING", "maybe", BOOLEAN),
    ("ENABLE_CLUSTERING", "on", BOOLEAN),
    ("ENABLE_CLUSTERING", "truee", BOOLEAN),
    ("HEALTH_FAIL_ON_CRITICAL", "2", BOOLEAN),
    ("GUNICORN_CONTROL_SOCKET", "enabled", BOOLEAN),
    ("LOG_LEVEL", "verbose", "one of debug, info, warning, error, critical"),
    ("LOG_LEVEL", "warn", "one of debug, info, warning, error, critical"),
]

EMPTY_VALUES = [
    ("MAX_MEMORY_MB", "", MEGABYTES),
    ("PORT", "   ", PORT),
    ("ENABLE_CLUSTERING", "", BOOLEAN),
    ("LOG_LEVEL", "", "one of debug, info, warning, error, critical"),
    ("HOST", "", "a host name or address to bind"),
]


def _problems(environ: dict[str, str]) -> tuple[list[str], str]:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ)
    return caught.value.problems, str(caught.value)


@pytest.mark.parametrize(("name", "value", "accepted"), BAD_VALUES)
def test_a_bad_value_names_the_variable_quotes_the_value_and_says_what_is_accepted(name, value, accepted):
    problems, message = _problems({name: value})

    assert len(problems) == 1
    assert problems[0].startswith(f"{name}={value!r}: ")
    assert f"expected {accepted}" in problems[0]
    assert problems[0] in message
    assert message.startswith("FitFlix cannot start")


@pytest.mark.parametrize(("name", "value", "accepted"), EMPTY_VALUES)
def test_an_empty_value_is_refused_with_a_hint_not_replaced_by_the_default(name, value, accepted):
    problems, _message = _problems({name: value})

    assert problems == [f"{name}={value!r}: expected {accepted} (it is empty: unset it to use the default)"]


@pytest.mark.parametrize(
    ("environ", "warn", "critical"),
    [
        ({"MEMORY_WARN_PERCENT": "90", "MEMORY_CRITICAL_PERCENT": "80"}, "90", "80"),
        ({"MEMORY_WARN_PERCENT": "85", "MEMORY_CRITICAL_PERCENT": "85"}, "85", "85"),
        ({"MEMORY_CRITICAL_PERCENT": "70"}, "80 (the default)", "70"),  # against the default warning level
        ({"MEMORY_WARN_PERCENT": "95"}, "95", "90 (the default)"),  # against the default critical level
        (
            {"MEMORY_PROFILE": "memory-optimized", "MEMORY_CRITICAL_PERCENT": "60"},
            "65 (MEMORY_PROFILE=memory-optimized's default)",
            "60",
        ),
    ],
)
def test_warning_level_at_or_above_critical_is_refused(environ, warn, critical):
    problems, _message = _problems(environ)

    assert problems == [
        f"MEMORY_WARN_PERCENT={warn} and MEMORY_CRITICAL_PERCENT={critical}: "
        "the warning level must be below the critical level"
    ]


def test_a_bad_percentage_does_not_also_report_the_comparison():
    problems, _message = _problems({"MEMORY_WARN_PERCENT": "abc", "MEMORY_CRITICAL_PERCENT": "50"})

    assert problems == ["MEMORY_WARN_PERCENT='abc': expected a whole percentage from 1 to 99"]


def test_every_bad_variable_is_reported_in_one_error():
    environ = {
        "PORT": "http",
        "MAX_MEMORY_MB": "-1",
        "ENABLE_CLUSTERING": "maybe",
        "LOG_LEVEL": "loud",
        "THREADS": "",
        "WEB_CONCURRENCY": "4",  # good: not reported
    }

    problems, message = _problems(environ)

    assert [problem.split("=", 1)[0] for problem in problems] == [
        "PORT",
        "MAX_MEMORY_MB",
        "ENABLE_CLUSTERING",
        "THREADS",
        "LOG_LEVEL",
    ]
    for name in ("PORT", "MAX_MEMORY_MB", "ENABLE_CLUSTERING", "LOG_LEVEL", "THREADS"):
        assert f"{name}={environ[name]!r}" in message
    assert "WEB_CONCURRENCY" not in message
    assert len(message.splitlines()) == 1 + len(problems)


def test_defaults_when_nothing_is_set():
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.host == "0.0.0.0"
    assert settings.port == 3000
    assert settings.max_memory_mb is None
    assert settings.enable_clustering is False
    assert settings.web_concurrency is None
    assert settings.worker_max_memory_mb is None
    assert settings.cluster_min_memory_mb == 1024
    assert (settings.memory_warn_percent, settings.memory_critical_percent) == (80, 90)
    assert settings.health_fail_on_critical is False
    assert settings.log_level == "info"
    assert settings.control_socket is False


def test_good_values_are_parsed():
    settings = Settings.from_env(
        {
            "HOST": " 127.0.0.1 ",
            "PORT": "0",
            "MAX_MEMORY_MB": "512",
            "WEB_CONCURRENCY": "3",
            "THREADS": "4",
            "WORKER_MAX_MEMORY_MB": "200",
            "MAX_REQUESTS": "0",
            "MEMORY_WARN_PERCENT": "70",
            "MEMORY_CRITICAL_PERCENT": "95",
            "LOG_LEVEL": "DEBUG",
        }
    )

    assert settings.host == "127.0.0.1"
    assert settings.port == 0
    assert settings.max_memory_mb == 512
    assert settings.web_concurrency == 3
    assert settings.threads == 4
    assert settings.worker_max_memory_mb == 200
    assert settings.max_requests == 0
    assert (settings.memory_warn_percent, settings.memory_critical_percent) == (70, 95)
    assert settings.log_level == "debug"


def test_only_the_given_mapping_is_read(monkeypatch):
    monkeypatch.setenv("PORT", "not-a-port")
    monkeypatch.setenv("MAX_MEMORY_MB", "768")

    settings = Settings.from_env({})

    assert (settings.port, settings.max_memory_mb) == (3000, None)


@pytest.mark.parametrize("name", ["ENABLE_CLUSTERING", "HEALTH_FAIL_ON_CRITICAL", "GUNICORN_CONTROL_SOCKET"])
@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("YES", True),
        ("yEs", True),
        (" true ", True),
        ("false", False),
        ("FALSE", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("NO", False),
        ("No", False),
    ],
)
def test_accepted_boolean_spellings(name, spelling, expected):
    settings = Settings.from_env({name: spelling})

    field = {
        "ENABLE_CLUSTERING": "enable_clustering",
        "HEALTH_FAIL_ON_CRITICAL": "health_fail_on_critical",
        "GUNICORN_CONTROL_SOCKET": "control_socket",
    }[name]
    assert getattr(settings, field) is expected


SECRET = "do-not-echo-this-secret"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"MAX_MEMORY_MB 256\nHEALTH_TOKEN={SECRET}\n".encode(), "line 1: cannot be parsed"),
        (f'MAX_MEMORY_MB=256\nHEALTH_TOKEN="{SECRET}\nLOG_LEVEL=info\n'.encode(), "line 2: cannot be parsed"),
        (b"MAX_MEMORY_MB=256\nHEALTH_TOKEN=caf\xe9-" + SECRET.encode() + b"\n", "line 2: not UTF-8 text"),
    ],
    ids=["no-equals", "unterminated-quote", "latin-1"],
)
def test_a_dotenv_that_cannot_be_parsed_is_named_by_file_and_line_never_by_value(tmp_path, content, expected):
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(content)
    problems = dotenv_problems(dotenv)
    assert len(problems) == 1 and problems[0].startswith(f"{dotenv} ") and expected in problems[0]
    assert SECRET not in problems[0]


@pytest.mark.parametrize("make", ["folder", "dangling-link"])
def test_a_dotenv_that_is_not_a_file_is_refused(tmp_path, make):
    dotenv = tmp_path / ".env"
    if make == "folder":
        dotenv.mkdir()
    else:
        dotenv.symlink_to(tmp_path / "missing")
    assert "not a regular file" in dotenv_problems(dotenv)[0]


def test_a_good_or_missing_dotenv_has_no_problems(tmp_path):
    assert dotenv_problems(tmp_path / ".env") == []
    (tmp_path / ".env").write_text('# comment\nMAX_MEMORY_MB=256\nexport LOG_LEVEL="info"\n\nHOST=0.0.0.0 # inline\n')
    assert dotenv_problems(tmp_path / ".env") == []


@pytest.fixture
def fresh_load(monkeypatch):
    """load_settings as in a new process: nothing loaded yet, os.environ restored afterwards."""
    from fitflix import settings as module

    monkeypatch.setattr(module, "_loaded", None)
    monkeypatch.setattr(module, "_real_environ", None)
    monkeypatch.setattr(module, "_from_dotenv", set())
    for name in ("THREADS", "MAX_REQUESTS", "HEALTH_TOKEN", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    return module


def test_a_reload_reads_the_dotenv_again_and_real_variables_still_win(tmp_path, monkeypatch, fresh_load):
    dotenv = tmp_path / ".env"
    dotenv.write_text("THREADS=8\nMAX_REQUESTS=1000\nLOG_LEVEL=debug\n")
    monkeypatch.setenv("LOG_LEVEL", "warning")  # a real variable: it wins over the .env, before and after
    first = fresh_load.load_settings(dotenv)
    assert (first.threads, first.max_requests, first.log_level) == (8, 1000, "warning")

    dotenv.write_text("THREADS=4\nLOG_LEVEL=debug\n")  # MAX_REQUESTS removed
    second = fresh_load.reload_settings(dotenv)

    assert (second.threads, second.max_requests, second.log_level) == (4, 10000, "warning")
    assert fresh_load.load_settings() is second
    assert "MAX_REQUESTS" not in os.environ
    assert fresh_load.setting_changes(first, second) == [("THREADS", "8 -> 4"), ("MAX_REQUESTS", "1000 -> 10000")]


def test_a_bad_reload_raises_and_keeps_what_is_loaded(tmp_path, fresh_load):
    dotenv = tmp_path / ".env"
    dotenv.write_text("THREADS=8\n")
    first = fresh_load.load_settings(dotenv)
    dotenv.write_text("THREADS=lots\n")
    with pytest.raises(SettingsError, match="THREADS='lots'"):
        fresh_load.reload_settings(dotenv)
    assert fresh_load.load_settings() is first


def test_a_changed_secret_is_reported_without_its_value():
    changes = setting_changes(Settings(health_token=SECRET), Settings(health_token=SECRET + "-new"))
    assert changes == [("HEALTH_TOKEN", "changed")]


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("2", 2), ("100", 100), (" 3 ", 3)])
def test_worker_memory_multiple_takes_zero_or_two_to_a_hundred(value, expected):
    assert Settings.from_env({"WORKER_MEMORY_MULTIPLE": value}).worker_memory_multiple == expected


@pytest.mark.parametrize("value", ["1", "101", "-3", "2.5", "three", ""])
def test_a_bad_worker_memory_multiple_names_the_variable_and_what_is_accepted(value):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"WORKER_MEMORY_MULTIPLE": value})
    assert f"WORKER_MEMORY_MULTIPLE={value!r}: expected 0 (off) or a whole number from 2 to 100" in str(raised.value)


def test_recycle_replace_first_is_a_boolean():
    assert Settings.from_env({}).recycle_replace_first is True
    assert Settings.from_env({"RECYCLE_REPLACE_FIRST": "no"}).recycle_replace_first is False
    with pytest.raises(SettingsError, match="RECYCLE_REPLACE_FIRST='later': expected one of true/false"):
        Settings.from_env({"RECYCLE_REPLACE_FIRST": "later"})


def test_each_origin_says_where_a_value_came_from(monkeypatch):
    from fitflix import settings as module

    monkeypatch.setattr(module, "_from_dotenv", {"DRAIN_S"})
    origins = module.setting_origins({"MEMORY_PROFILE": "Memory-Optimized", "THREADS": "4", "DRAIN_S": "3"})
    assert (origins["THREADS"], origins["DRAIN_S"], origins["MEMORY_PROFILE"]) == ("set", ".env", "set")
    assert origins["MEMORY_WARN_PERCENT"] == origins["MEMORY_CRITICAL_PERCENT"] == "memory-optimized's default"
    assert (origins["HEAD_TIMEOUT_S"], origins["MAX_MEMORY_MB"]) == ("default", "unset")
    assert set(origins) == {setting.name for setting in module.SETTINGS}
    assert module.setting_origins({})["THREADS"] == "default"


def test_origins_read_the_process_environment_when_given_none(monkeypatch):
    from fitflix import settings as module

    monkeypatch.setenv("THREADS", "4")
    monkeypatch.delenv("DRAIN_S", raising=False)
    monkeypatch.setattr(module, "_from_dotenv", set())
    origins = module.setting_origins()
    assert (origins["THREADS"], origins["DRAIN_S"]) == ("set", "default")


def test_the_wsgi_script_name_is_gunicorns_environment_convention():
    assert wsgi_script_name({"SCRIPT_NAME": "/app"}) == "/app"
    assert wsgi_script_name({}) == ""
