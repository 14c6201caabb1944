"""Tables and targets: printed as text while the run goes, written to BENCHMARKS.md at the end."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bench.plots import Picture


@dataclass
class Target:
    text: str  # what the target asks
    met: bool | None  # None: could not be measured here
    measured: str  # the figures it was judged on


@dataclass
class Part:
    number: int
    title: str
    method: str  # how it was measured, one paragraph
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)  # shown above the table
    seconds: float = 0.0

    def add(self, *cells: object) -> None:
        self.rows.append([str(cell) for cell in cells])


def verdict(target: Target) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[target.met]


def text_table(part: Part) -> str:
    widths = [len(column) for column in part.columns]
    for row in part.rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=False)]
    lines = [f"== Part {part.number}: {part.title} ({part.seconds:.0f} s) =="]
    lines.append("  ".join(column.ljust(width) for column, width in zip(part.columns, widths, strict=True)))
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) for row in part.rows]
    lines += [f"note: {note}" for note in part.notes]
    lines += [f"target: {target.text} -> {verdict(target)} ({target.measured})" for target in part.targets]
    lines += [f"figure: {picture.svg} (data: {picture.csv})" for picture in part.pictures]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def picture_lines(picture: Picture, folder: str) -> list[str]:
    """The image (its alt text says what it shows) and a link to the numbers behind it."""
    return [
        f"![{_cell(picture.alt).replace('[', '(').replace(']', ')')}]({folder}/{picture.svg.name})",
        "",
        f"_The numbers behind it: [{picture.csv.name}]({folder}/{picture.csv.name})._",
        "",
    ]


TARGETS_HEADING = ["## Targets", "", "| part | target | result | measured |", "| --- | --- | --- | --- |"]


def markdown(parts: list[Part], header: list[str], figures_folder: str = "figures") -> str:
    lines = ["# FitFlix benchmarks", ""] + header + [""]
    all_targets = [(part, target) for part in parts for target in part.targets]
    if all_targets:
        lines += TARGETS_HEADING
        lines += [
            f"| {part.number} | {_cell(target.text)} | {verdict(target)} | {_cell(target.measured)} |"
            for part, target in all_targets
        ]
        lines.append("")
    for part in parts:
        lines += [f"## Part {part.number}: {part.title}", "", part.method, ""]
        for picture in part.pictures:
            lines += picture_lines(picture, figures_folder)
        lines.append("| " + " | ".join(map(_cell, part.columns)) + " |")
        lines.append("| " + " | ".join("---" for _ in part.columns) + " |")
        lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in part.rows]
        lines.append("")
        lines += [f"- {note}" for note in part.notes]
        lines += [f"- Target: {target.text}: **{verdict(target)}** ({target.measured})" for target in part.targets]
        lines += ["", f"_Part {part.number} took {part.seconds:.0f} s._", ""]
    return "\n".join(lines)


# --update: a run of some parts put into an existing BENCHMARKS.md.
PART_HEADING = re.compile(r"^## Part (\d+):", re.MULTILINE)
PROVENANCE = re.compile(r"^(?:Parts? (?P<parts>\d+(?:-\d+)?(?:, \d+(?:-\d+)?)*) written|Written) by (?P<rest>.*)$")
TARGET_ROW = re.compile(r"^\| (\d+) \|")
TOOK = re.compile(r"^_Part \d+ took \d+ s\._$", re.MULTILINE)  # the last line markdown() writes in a section


def parts_label(numbers: list[int] | set[int]) -> str:
    """'Part 4' or 'Parts 1, 3, 5-13' (a run of three or more as a range): parsed back by `label_parts`."""
    ordered, runs = sorted(set(numbers)), []
    for number in ordered:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    texts = [f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs]
    return f"Part{'s' if len(ordered) > 1 else ''} {', '.join(texts)}"


def label_parts(text: str) -> set[int]:
    """'1, 3, 5-13' -> {1, 3, 5, ..., 13}."""
    numbers: set[int] = set()
    for item in text.split(", "):
        first, _, last = item.partition("-")
        numbers.update(range(int(first), int(last or first) + 1))
    return numbers


def split_parts(document: str) -> tuple[str, dict[int, str]]:
    """The header (everything before the first `## Part N:` heading) and each part's section, from its heading
    to the next part heading: a paragraph written by hand under a part's table is that part's."""
    headings = list(PART_HEADING.finditer(document))
    if not headings:
        return document, {}
    sections: dict[int, str] = {}
    for heading, following in zip(headings, headings[1:] + [None], strict=True):
        number = int(heading.group(1))
        if number in sections:
            raise ValueError(f"part {number} appears twice")
        sections[number] = document[heading.start() : following.start() if following else len(document)]
    return document[: headings[0].start()], sections


def written_by_hand(section: str) -> str:
    """What follows a section's `_Part N took X s._` line: nothing markdown() writes, so someone added it."""
    took = TOOK.search(section)
    return section[took.end() :].strip() if took else ""


def _narrowed(lines: list[str], kept: set[int]) -> list[str]:
    """Earlier provenance lines (newest first) cut down to the kept parts each still covers, a line that covers
    none dropped: a line without parts (a full run's) covers the kept parts no newer line claims."""
    unclaimed, narrowed = set(kept), []
    for line in lines:
        match = PROVENANCE.match(line)
        listed = label_parts(match.group("parts")) if match.group("parts") else unclaimed
        covers = listed & unclaimed
        unclaimed -= covers
        if covers:
            narrowed.append(f"{parts_label(covers)} written by {match.group('rest')}")
    return narrowed


def merge_update(existing: str, fresh: str) -> str:
    """`existing` with the parts of `fresh` (markdown() of a run of some parts) put in.

    Each part of `fresh` replaces that part's whole section, hand-written text under it included (it spoke of
    the numbers being replaced), or goes in at its place by number; every other section stays as it was. The
    header is fresh's (its machine and tools are the latest run's), with each earlier provenance line ('Written
    by ...', 'Parts 2, 5 written by ...') kept below fresh's own, cut down to the parts it still covers. The
    targets table: the earlier rows of the parts kept and fresh's rows of its parts, by part number.
    """
    old_head, old_sections = split_parts(existing)
    new_head, new_sections = split_parts(fresh)
    sections = {**old_sections, **new_sections}
    kept = set(old_sections) - set(new_sections)

    old_intro, old_targets = (text.splitlines() for text in _split_targets(old_head))
    new_intro, new_targets = (text.splitlines() for text in _split_targets(new_head))
    earlier = _narrowed([line for line in old_intro if PROVENANCE.match(line)], kept)
    last_own = max((index for index, line in enumerate(new_intro) if PROVENANCE.match(line)), default=0)
    # A blank line before each: one paragraph each, not run together by the markdown renderer.
    intro = new_intro[: last_own + 1] + [text for line in earlier for text in ("", line)] + new_intro[last_own + 1 :]

    rows = [row for row in old_targets if TARGET_ROW.match(row) and int(TARGET_ROW.match(row).group(1)) in kept]
    rows += [row for row in new_targets if TARGET_ROW.match(row)]
    rows.sort(key=lambda row: int(TARGET_ROW.match(row).group(1)))  # stable: a part's targets keep their order
    targets = TARGETS_HEADING + rows + [""] if rows else []

    head = "\n".join(intro).rstrip() + "\n\n" + "\n".join(targets)
    body = "\n\n".join(sections[number].rstrip("\n") for number in sorted(sections))
    return head.rstrip("\n") + "\n\n" + body + "\n"


def _split_targets(head: str) -> tuple[str, str]:
    """A header's text before its `## Targets` heading, and the table under it."""
    intro, heading, table = head.partition(TARGETS_HEADING[0] + "\n")
    return intro, table if heading else ""
