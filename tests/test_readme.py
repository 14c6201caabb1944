"""The README and docs/ run as written: JSON examples have a live answer's keys, commands name what a fresh clone has.

Every check reads README.md and every page of docs/. An example is the
indented block after an `<!-- example: GET /path -->` comment; its keys,
nested, must be exactly the keys of a live answer from real gunicorn (values
vary: pids, times, figures). A command is a line of an indented block that
starts with `$ ` or names a program; Python's tools must be the virtual
environment's (`.venv/bin/...`), since a fresh clone has no other flask,
gunicorn or prometheus_client.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
EXAMPLE = re.compile(r"^<!-- example: GET (\S+)[^>]*-->\n", re.MULTILINE)
VENV_TOOLS = frozenset({"python", "python3", "pip", "pip3", "gunicorn", "pytest", "ruff", "mkdocs"})
PROGRAMS = VENV_TOOLS | {"bash", "curl", "kill", "docker", "kubectl", "apt-get", "git", "cd", "unshare"}


def documents() -> list[Path]:
    """README.md, then every page of docs/ by name."""
    return [README, *sorted((PROJECT / "docs").glob("*.md"))]


def indented_blocks(text: str) -> list[tuple[int, str]]:
    """(index of the first line, the block's text with the 4-space indent removed) for every code block."""
    blocks, current, first = [], [], 0
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("    ") or (current and not line.strip()):
            if not current:
                first = number
            current.append(line[4:])
            continue
        if current:
            blocks.append((first, "\n".join(current).strip("\n")))
            current = []
    if current:
        blocks.append((first, "\n".join(current).strip("\n")))
    return blocks


def examples(text: str) -> list[tuple[str, object]]:
    """(path, parsed JSON) for every marked example."""
    found = []
    blocks = indented_blocks(text)
    for match in EXAMPLE.finditer(text):
        marker_line = text.count("\n", 0, match.start())
        _first, block = next((first, block) for first, block in blocks if first > marker_line)
        found.append((match.group(1), json.loads(block)))
    return found


def shape(value: object) -> object:
    """The keys of `value`, nested; a list's shape is the union of its items' (every item the same)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        shapes = [shape(item) for item in value]
        return [shapes[0]] if shapes and all(item == shapes[0] for item in shapes) else shapes
    return None  # a leaf: its value varies from run to run


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


@pytest.mark.live
def test_the_json_examples_have_the_keys_of_a_live_answer(live_server):
    server = live_server()
    found = [(page, path, example) for page in documents() for path, example in examples(page.read_text())]
    assert found, "no marked JSON example in README.md or docs/"
    for page, path, example in found:
        status, live = server.get_json(path)
        assert status == 200, path
        assert shape(example) == shape(live), (
            f"{page.relative_to(PROJECT)}'s example of GET {path} is not what the service answers now"
        )
