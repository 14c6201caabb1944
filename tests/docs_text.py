"""What README.md and docs/ say, as their checks read it (tests/unit/test_readme.py and tests/live/test_readme.py).

An example is the indented block after an `<!-- example: GET /path -->`
comment; a command is a line of an indented block.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
EXAMPLE = re.compile(r"^<!-- example: GET (\S+)[^>]*-->\n", re.MULTILINE)


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
