"""`.env.example` and the docs' settings table, generated from the one table in fitflix/settings.py.

    .venv/bin/python -m fitflix.settings_doc --write    # after changing a row of SETTINGS
    .venv/bin/python -m fitflix.settings_doc --check    # exit 1 when a committed file is stale

Never imported by the service (tests/unit/test_settings_doc.py checks both files are current).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from fitflix.settings import SETTINGS, Setting

PROJECT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = PROJECT / ".env.example"
SETTINGS_PAGE = PROJECT / "docs" / "settings.md"
TABLE_START = "<!-- settings table: generated from fitflix/settings.py by python -m fitflix.settings_doc --write -->"
TABLE_END = "<!-- end of settings table -->"

ENV_EXAMPLE_HEAD = """\
# Every variable FitFlix reads, with its default, each line commented out. Copy to .env for a local run
# and uncomment only what you change: an uncommented line pins its value past any later default and past
# MEMORY_PROFILE. Real environment variables win over .env. Unset means "use the default"; an empty value
# is an error.
# Generated from the table in fitflix/settings.py by `python -m fitflix.settings_doc --write`; edit it there.
"""


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _profile_note(setting: Setting) -> str:
    return "; ".join(f"{profile}'s default: {_value(value)}" for profile, value in setting.profiles.items())


def env_example() -> str:
    """The text of .env.example: one commented block per setting, in the table's order."""
    blocks = [ENV_EXAMPLE_HEAD]
    for setting in SETTINGS:
        comment = setting.help
        if setting.zero and setting.kind != "choice":
            comment += f" {setting.low if setting.kind == 'whole' else 0}: {setting.zero}."
        if setting.profiles:
            note = _profile_note(setting)
            comment += f" {note[0].upper()}{note[1:]}."
        if setting.default is None:
            comment += f" Unset: {setting.unset}."
        if setting.restart:
            comment += " SIGHUP cannot change it: restart."
        lines = textwrap.wrap(comment, 108, break_on_hyphens=False)
        value = _value(setting.default) if setting.default is not None else setting.example
        blocks.append("".join(f"# {line}\n" for line in lines) + f"# {setting.name}={value}\n")
    return "\n".join(blocks)


def _accepted(setting: Setting) -> str:
    if setting.kind == "boolean":
        return "true/false/1/0/yes/no"
    if setting.kind == "choice":
        return "/".join(setting.choices)
    if setting.kind == "text":
        return "a host or address"
    if setting.kind == "secret":
        return f"{setting.low}+ printable ASCII characters"
    if setting.kind == "off-or-whole":
        return f"0 ({setting.zero}) or {setting.low}-{setting.high:,}"
    zero = f" ({setting.low}: {setting.zero})" if setting.zero else ""
    return f"{setting.low}-{setting.high:,}{zero}"


def _default(setting: Setting) -> str:
    if setting.default is None:
        return f"unset: {setting.unset}"
    text = f"`{_value(setting.default)}`"
    return f"{text} ({_profile_note(setting)})" if setting.profiles else text


def settings_table() -> str:
    """The docs' table: variable, default, accepted, whether SIGHUP changes it, what it does."""
    rows = ["| variable | default | accepted | on SIGHUP | what it does |", "| --- | --- | --- | --- | --- |"]
    for setting in SETTINGS:
        what = setting.help.replace("|", "\\|")
        if setting.see:
            what += f" ([more]({setting.see}))"
        sighup = "needs a restart" if setting.restart else "applies"
        rows.append(f"| `{setting.name}` | {_default(setting)} | {_accepted(setting)} | {sighup} | {what} |")
    return "\n".join(rows) + "\n"


def settings_page(current: str) -> str:
    """`current` (the page's text) with the table between its two markers replaced by a fresh one."""
    start, end = current.find(TABLE_START), current.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{SETTINGS_PAGE}: the markers {TABLE_START!r} and {TABLE_END!r} are missing")
    return current[: start + len(TABLE_START)] + "\n\n" + settings_table() + "\n" + current[end:]


def generated() -> dict[Path, str]:
    """Each generated file and the text it should hold now."""
    return {ENV_EXAMPLE: env_example(), SETTINGS_PAGE: settings_page(SETTINGS_PAGE.read_text())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fitflix.settings_doc", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="write .env.example and the settings page")
    action.add_argument("--check", action="store_true", help="exit 1 when either is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        if path.read_text() != text if path.exists() else True:
            stale.append(path)
            if args.write:
                path.write_text(text)
    for path in stale:
        verb = "wrote" if args.write else "stale:"
        sys.stdout.write(f"{verb} {path.relative_to(PROJECT)}\n")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
