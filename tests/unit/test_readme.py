"""The README and docs/ run as written: commands name what a fresh clone has.

Every check reads README.md and every page of docs/ (tests/docs_text.py finds
their blocks and examples). A command is a line of an indented block that
starts with `$ ` or names a program; Python's tools must be the virtual
environment's (`.venv/bin/...`), since a fresh clone has no other flask,
gunicorn or prometheus_client. tests/live/test_readme.py checks the JSON
examples against a live answer."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.docs_text import PROJECT, README, documents, examples, indented_blocks, shape

VENV_TOOLS = frozenset({"python", "python3", "pip", "pip3", "gunicorn", "pytest", "ruff", "mkdocs"})
PROGRAMS = VENV_TOOLS | {"bash", "curl", "kill", "docker", "kubectl", "apt-get", "git", "cd", "unshare"}


def commands(text: str) -> list[str]:
    """Every command line in the README's code blocks, without its `$ ` prompt."""
    found = []
    for _first, block in indented_blocks(text):
        for line in block.splitlines():
            command = line[2:] if line.startswith("$ ") else line
            words = [word for word in command.split() if not re.fullmatch(r"[A-Z_]+=\S*", word)]
            if line.startswith("$ ") or (words and Path(words[0]).name in PROGRAMS):
                found.append(command)
    return found


def bare_tools(command: str) -> list[str]:
    """The Python tools `command` runs from PATH rather than from .venv/bin (`python3 -m venv` is fine)."""
    bare = []
    for part in re.split(r"&&|\|\||;|\|", command):
        try:
            words = [word for word in shlex.split(part) if not re.fullmatch(r"[A-Z_]+=\S*", word)]
        except ValueError:
            words = part.split()
        if not words or words[0] not in VENV_TOOLS:
            continue
        if words[:3] == ["python3", "-m", "venv"]:
            continue
        bare.append(part.strip())
    return bare


def test_the_readme_has_its_examples_and_commands():
    assert [path for document in documents() for path, _example in examples(document.read_text())] == [
        "/health",
        "/health/memory",
    ]
    assert "bash scripts/test" in commands(README.read_text())


def test_every_command_uses_the_virtual_environments_tools():
    bare = [
        f"{document.relative_to(PROJECT)}: {tool}"
        for document in documents()
        for command in commands(document.read_text())
        for tool in bare_tools(command)
    ]
    assert bare == [], f"these fail in a fresh clone without an activated virtual environment: {bare}"


def test_the_checks_catch_what_they_are_for():
    text = "Run:\n\n    $ python -m fitflix plan\n    .venv/bin/python -m bench && gunicorn -c x\n\nok\n"
    assert commands(text) == ["python -m fitflix plan", ".venv/bin/python -m bench && gunicorn -c x"]
    assert [tool for command in commands(text) for tool in bare_tools(command)] == [
        "python -m fitflix plan",
        "gunicorn -c x",
    ]
    assert bare_tools("python3 -m venv .venv && .venv/bin/pip install -r requirements.txt") == []
    assert shape({"a": [{"b": 1}, {"b": 2}], "c": {"d": None}}) == {"a": [{"b": None}], "c": {"d": None}}
    assert shape({"a": 1}) != shape({"a": 1, "b": 2})
