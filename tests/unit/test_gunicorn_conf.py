"""The package's gunicorn configuration (`-c python:fitflix.gunicorn_conf`) and `server_settings` under it.

Read in this process, as gunicorn's master reads a config: the settings by gunicorn's own
names, the hooks, `.env` from the working folder, and SIGHUP reading the module again.
"""

from __future__ import annotations

import importlib
import sys

import pytest
from gunicorn.config import Config

from fitflix.serving import hooks
from fitflix.settings import Settings

HOOK_NAMES = (
    "on_starting",
    "when_ready",
    "pre_fork",
    "nworkers_changed",
    "post_fork",
    "post_worker_init",
    "pre_request",
    "post_request",
    "worker_exit",
    "child_exit",
    "on_exit",
)


@pytest.fixture
def fresh_master(monkeypatch, standalone_runtime):
    """The settings as in a new master: nothing loaded yet, os.environ and malloc left as they were."""
    from fitflix import settings as module

    monkeypatch.setattr(module, "_loaded", None)
    monkeypatch.setattr(module, "_real_environ", None)
    monkeypatch.setattr(module, "_from_dotenv", set())
    monkeypatch.setattr(hooks, "set_arena_max", lambda _arenas: None)
    for name in ("THREADS", "MAX_MEMORY_MB", "HEALTH_TOKEN", "PORT", "HOST"):
        monkeypatch.delenv(name, raising=False)
    yield
    sys.modules.pop(hooks.PACKAGE_CONFIG, None)


def test_every_name_is_a_gunicorn_setting_and_the_hooks_are_fitflixs(tmp_path, fresh_master):
    values = hooks.server_settings(tmp_path / ".env")  # no .env there: the defaults
    known = Config().settings

    assert sorted(set(values) - set(known)) == ["fitflix_config"]
    assert "wsgi_app" not in values  # the app is the caller's
    for name in HOOK_NAMES:
        assert values[name] is getattr(hooks, name), name
    assert values["preload_app"] is True and values["workers"] == values["fitflix_config"].plan.workers
    assert values["bind"] == f"{Settings.host}:{Settings.port}"


def test_the_module_reads_dotenv_in_the_working_folder(tmp_path, monkeypatch, fresh_master):
    (tmp_path / ".env").write_text("THREADS=3\nMAX_MEMORY_MB=300\n")
    monkeypatch.chdir(tmp_path)

    module = importlib.import_module(hooks.PACKAGE_CONFIG)

    assert module.threads == 3 and module.fitflix_config.plan.limit_mb == 300
    assert module.post_worker_init is hooks.post_worker_init


def test_a_bad_dotenv_value_stops_the_start_naming_it(tmp_path, fresh_master):
    (tmp_path / ".env").write_text("THREADS=lots\n")

    with pytest.raises(SystemExit) as stopped:
        hooks.server_settings(tmp_path / ".env")

    assert "THREADS" in str(stopped.value) and "lots" in str(stopped.value)


def test_sighup_forgets_the_package_config_so_gunicorn_reads_it_again(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, hooks.PACKAGE_CONFIG, object())

    hooks._rereading(lambda: calls.append(hooks.PACKAGE_CONFIG in sys.modules))()

    assert calls == [False]  # gone before gunicorn's own handler asks for the config again
