"""Tables and targets: printed as text while the run goes, written to BENCHMARKS.md at the end."""

from __future__ import annotations

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


def markdown(parts: list[Part], header: list[str], figures_folder: str = "figures") -> str:
    lines = ["# FitFlix benchmarks", ""] + header + [""]
    all_targets = [(part, target) for part in parts for target in part.targets]
    if all_targets:
        lines += ["## Targets", "", "| part | target | result | measured |", "| --- | --- | --- | --- |"]
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
