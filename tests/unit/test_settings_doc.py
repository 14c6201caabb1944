"""The generated files (.env.example, the docs' settings table) are what the settings table makes now."""

from __future__ import annotations

import pytest

from fitflix import settings_doc
from fitflix.settings import SETTINGS, Setting


@pytest.mark.parametrize("name", ["ENV_EXAMPLE", "SETTINGS_PAGE"])
def test_each_committed_generated_file_is_current(name):
    path = getattr(settings_doc, name)
    assert path.read_text() == settings_doc.generated()[path], (
        f"{path.name} is stale: run .venv/bin/python -m fitflix.settings_doc --write and commit it"
    )


def test_check_finds_a_stale_file_and_write_mends_it(tmp_path, monkeypatch, capsys):
    page = tmp_path / "settings.md"
    page.write_text(f"# Settings\n\n{settings_doc.TABLE_START}\n| old |\n{settings_doc.TABLE_END}\n\nAfter.\n")
    example = tmp_path / ".env.example"
    example.write_text("HEAD_TIMEOUT_S=10\n")  # an uncommented pin, as the hand-written file had
    monkeypatch.setattr(settings_doc, "PROJECT", tmp_path)
    monkeypatch.setattr(settings_doc, "SETTINGS_PAGE", page)
    monkeypatch.setattr(settings_doc, "ENV_EXAMPLE", example)

    assert settings_doc.main(["--check"]) == 1
    assert capsys.readouterr().out == "stale: .env.example\nstale: settings.md\n"
    assert settings_doc.main(["--write"]) == 0
    assert settings_doc.main(["--check"]) == 0
    text = page.read_text()
    assert text.startswith("# Settings\n\n") and text.endswith(f"{settings_doc.TABLE_END}\n\nAfter.\n")
    assert "| `HEAD_TIMEOUT_S` | `10` | 1-300 |" in text and "| old |" not in text
    assert "# HEAD_TIMEOUT_S=10\n" in example.read_text()


def test_a_page_without_the_markers_is_refused_not_overwritten():
    with pytest.raises(ValueError, match="markers"):
        settings_doc.settings_page("# Settings\n\nno markers here\n")


def test_a_changed_default_shows_in_every_generated_text(monkeypatch):
    """The one-line change the house issue asks for: a default changed in the table reaches both files."""
    changed = tuple(
        Setting(**{**setting.__dict__, "default": 15}) if setting.name == "HEAD_TIMEOUT_S" else setting
        for setting in SETTINGS
    )
    monkeypatch.setattr(settings_doc, "SETTINGS", changed)
    assert "# HEAD_TIMEOUT_S=15\n" in settings_doc.env_example()
    assert "| `HEAD_TIMEOUT_S` | `15` | 1-300 |" in settings_doc.settings_table()


def test_every_setting_has_help_and_an_example_where_it_has_no_default():
    kinds = {"whole", "off-or-whole", "boolean", "choice", "secret", "text"}
    assert len({setting.name for setting in SETTINGS}) == len(SETTINGS), "a variable declared twice"
    for setting in SETTINGS:
        assert setting.kind in kinds, f"{setting.name}: kind {setting.kind!r} is none of {sorted(kinds)}"
        if setting.kind in ("whole", "off-or-whole"):
            assert setting.low <= setting.high and (
                setting.default is None or setting.low <= setting.default <= setting.high
            )
        if setting.kind == "choice":
            assert setting.default in setting.choices, setting.name
        for profile, value in setting.profiles.items():
            assert setting.low <= value <= setting.high, f"{setting.name}: {profile}'s default {value} is out of bounds"
        assert setting.help.endswith(".") and "\n" not in setting.help, setting.name
        if setting.default is None:
            assert setting.unset and (setting.example or setting.secret), setting.name
