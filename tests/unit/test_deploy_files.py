"""The deploy files say what the README promises: no flags, every variable, the health path."""

from __future__ import annotations

import io
import re
from pathlib import Path

from dotenv import dotenv_values

from fitflix.settings import SETTINGS, Setting, Settings, SettingsError

PROJECT = Path(__file__).resolve().parents[2]


def _another_value(setting: Setting) -> str:
    """A value `setting` accepts that is not its default."""
    if setting.kind == "boolean":
        return "false" if setting.default else "true"
    if setting.kind == "choice":
        return next(choice for choice in setting.choices if choice != setting.default)
    if setting.kind == "secret":
        return "s" * setting.low
    if setting.kind == "text":
        return "127.0.0.1"
    if setting.kind == "off-or-whole":
        return "0" if setting.default != 0 else str(setting.low)
    return str(setting.low if setting.default == setting.high else setting.high)


def variables_read_by_settings() -> set[str]:
    """The variables Settings.from_env honours: set alone to an accepted value, each changes the settings.

    (A warn percent above the default critical is refused, so each percent is moved with its partner left as is.)
    """
    read = set()
    for setting in SETTINGS:
        environ = {setting.name: _another_value(setting)}
        if setting.name == "MEMORY_WARN_PERCENT":
            environ[setting.name] = "1"
        try:
            changed = Settings.from_env(environ) != Settings()
        except SettingsError:
            continue
        if changed:
            read.add(setting.name)
    return read


def test_procfile_starts_gunicorn_with_the_config_file_and_no_flags():
    assert (PROJECT / "Procfile").read_text() == "web: gunicorn -c gunicorn.conf.py\n"


def test_render_blueprint_uses_the_same_start_command_and_health_path():
    text = (PROJECT / "render.yaml").read_text()
    assert "startCommand: gunicorn -c gunicorn.conf.py\n" in text
    assert "healthCheckPath: /health\n" in text
    assert "runtime: python" in text and "plan: free" in text
    assert "buildCommand: pip install -r requirements.txt" in text
    for key, value in (("MAX_MEMORY_MB", "512"), ("ENABLE_CLUSTERING", "false")):
        assert re.search(rf'- key: {key}\n\s+value: "{value}"', text)
    assert "NODE_OPTIONS" in text and "UV_THREADPOOL_SIZE" in text


def test_heroku_and_render_deploy_the_python_ci_tests():
    """Heroku reads .python-version (X.Y gets each patch release; X.Y.Z also works); Render's
    PYTHON_VERSION must be a full X.Y.Z and wins over the file (https://render.com/docs/python-version);
    .ci/run runs the suite on that X.Y."""
    pinned = (PROJECT / ".python-version").read_text()
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\n", pinned), f".python-version holds {pinned!r}: one line, X.Y or X.Y.Z"
    minor = ".".join(pinned.strip().split(".")[:2])
    render = re.search(r'- key: PYTHON_VERSION\n\s+value: "([^"]*)"', (PROJECT / "render.yaml").read_text())
    assert render, "render.yaml sets no PYTHON_VERSION: Render would pick its default of the day"
    assert re.fullmatch(r"\d+\.\d+\.\d+", render.group(1)), f"PYTHON_VERSION {render.group(1)}: Render needs X.Y.Z"
    assert render.group(1).startswith(minor + "."), f"render.yaml runs {render.group(1)}, .python-version {minor}"
    assert f"FITFLIX_PYTHON=python{minor} bash scripts/test" in (PROJECT / ".ci/run").read_text(), (
        f"CI does not run the suite on Python {minor}, which the platforms deploy"
    )


def test_env_example_lists_every_variable_commented_out_and_its_defaults_parse():
    example = (PROJECT / ".env.example").read_text()
    assert [line for line in example.splitlines() if line and not line.startswith("# ")] == [], (
        "a line of .env.example is not commented out: a .env copied from it would pin that value for good"
    )
    listed = re.findall(r"^# ([A-Z_]+)=(.*)$", example, flags=re.MULTILINE)
    read = variables_read_by_settings()
    assert {"PORT", "MAX_MEMORY_MB", "ENABLE_CLUSTERING", "MEMORY_WARN_PERCENT", "HEAD_TIMEOUT_S"} <= read
    assert read == {name for name, _value in listed} == {setting.name for setting in SETTINGS}
    # Uncommented, every line that shows a default gives exactly the defaults.
    with_defaults = {setting.name for setting in SETTINGS if setting.default is not None}
    uncommented = "\n".join(f"{name}={value}" for name, value in listed if name in with_defaults)
    assert Settings.from_env(dict(dotenv_values(stream=io.StringIO(uncommented)))) == Settings()
