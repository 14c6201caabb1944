"""`python -m bench --update`: a run of some parts put into an existing BENCHMARKS.md (no servers needed)."""

from __future__ import annotations

import pytest

from bench.report import label_parts, merge_update, parts_label, split_parts, written_by_hand
from harness.server import PROJECT

TABLE = "| part | target | result | measured |\n| --- | --- | --- | --- |\n"
BULLETS_OLD = "- Machine: 2 cores, old.\n"
BULLETS_NEW = "- Machine: 2 cores, new.\n"


def section(number: int, text: str, hand: str = "") -> str:
    """A part's section as markdown() writes it, with `hand` added below it as someone would."""
    body = f"## Part {number}: Part {number}\n\n{text} method.\n\n| a |\n| --- |\n| {text} |\n\n"
    body += f"_Part {number} took 5 s._\n"
    return body + (f"\n{hand}\n" if hand else "")


def document(provenance: list[str], rows: list[str], sections: list[str], bullets: str) -> str:
    intro = "# FitFlix benchmarks\n\n" + "\n\n".join(provenance) + "\n\n" + bullets + "\n"
    targets = "## Targets\n\n" + TABLE + "".join(f"{row}\n" for row in rows) + "\n" if rows else ""
    return intro + targets + "\n".join(sections)


FULL_RUN = "Written by `.venv/bin/python -m bench` on 2026-11-29 16:49 UTC (full run, 29.2 min)."
UPDATE_3 = "Part 3 written by `.venv/bin/python -m bench --update --parts 3` on 2026-12-01 09:00 UTC (full run, 2 min)."
ANALYSIS = "_The analysis below comes from the runs of part 2 alone earlier the same day._"
EXISTING = document(
    [FULL_RUN],
    ["| 1 | t1 | met | a |", "| 2 | t2 | met | b |", "| 3 | t3 | MISSED | c |"],
    [section(1, "old1"), section(2, "old2", hand=ANALYSIS), section(3, "old3", hand="_A note on part 3._")],
    BULLETS_OLD,
)


def fresh(parts: list[int], rows: list[str]) -> str:
    line = f"{parts_label(parts)} written by `.venv/bin/python -m bench --update` on 2026-12-02 10:00 UTC (full run)."
    return document([line], rows, [section(number, f"new{number}") for number in parts], BULLETS_NEW)


@pytest.mark.parametrize(
    ("parts", "rows", "order", "new", "kept_hand", "gone_hand"),
    [
        # A middle part replaced: its note goes with its old numbers; its neighbours stay as they were.
        ([2], ["| 2 | t2 | MISSED | z |"], [1, 2, 3], {2}, ["_A note on part 3._"], [ANALYSIS]),
        # A part new to the file goes in at its place by number.
        ([14], ["| 14 | t14 | met | n |"], [1, 2, 3, 14], {14}, [ANALYSIS, "_A note on part 3._"], []),
        # The last part and a new one together, the new one without targets.
        ([3, 15], ["| 3 | t3 | met | d |"], [1, 2, 3, 15], {3, 15}, [ANALYSIS], ["_A note on part 3._"]),
    ],
)
def test_an_update_replaces_its_parts_and_keeps_every_other_section(parts, rows, order, new, kept_hand, gone_hand):
    merged = merge_update(EXISTING, fresh(parts, rows))
    header, sections = split_parts(merged)
    assert list(sections) == order
    old_sections = split_parts(EXISTING)[1]
    for number in order:
        if number in new:
            assert f"new{number}" in sections[number]
        else:
            assert sections[number].rstrip("\n") == old_sections[number].rstrip("\n")
    assert all(text in merged for text in kept_hand)
    assert not any(text in merged for text in gone_hand)
    assert BULLETS_NEW in header and BULLETS_OLD not in header  # the machine and tools are the latest run's


def test_the_targets_table_holds_the_kept_parts_rows_and_the_runs_in_part_order():
    merged = merge_update(EXISTING, fresh([2, 14], ["| 2 | t2 again | met | y |", "| 14 | t14 | met | n |"]))
    rows = [line for line in split_parts(merged)[0].splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows == [
        "| 1 | t1 | met | a |",
        "| 2 | t2 again | met | y |",
        "| 3 | t3 | MISSED | c |",
        "| 14 | t14 | met | n |",
    ]


@pytest.mark.parametrize(
    ("existing_provenance", "parts", "expected"),
    [
        # The full run's line now covers only the parts this run left alone.
        ([FULL_RUN], [2], ["Part 2 written by", "Parts 1, 3 written by `.venv/bin/python -m bench` on 2026-11-29"]),
        # A line whose every part is replaced goes; the full run's line keeps the parts no newer line claims.
        ([UPDATE_3, FULL_RUN], [3], ["Part 3 written by", "Parts 1, 2 written by `.venv/bin/python -m bench` on"]),
        (
            [UPDATE_3, FULL_RUN],
            [1],
            [
                "Part 1 written by",
                "Part 3 written by `.venv/bin/python -m bench --update",
                "Part 2 written by `.venv/bin/python -m bench` on",
            ],
        ),
    ],
)
def test_each_earlier_provenance_line_names_the_parts_it_still_covers(existing_provenance, parts, expected):
    existing = document(existing_provenance, [], [section(1, "a"), section(2, "b"), section(3, "c")], BULLETS_OLD)
    header = split_parts(merge_update(existing, fresh(parts, [])))[0]
    lines = [line for line in header.splitlines() if " written by " in line]
    assert len(lines) == len(expected)
    assert all(line.startswith(start) for line, start in zip(lines, expected, strict=True))
    assert "\n\n".join(lines) in header  # one paragraph each, not run together by the renderer


def test_an_update_of_an_update_gives_the_same_file():
    once = merge_update(EXISTING, fresh([2], ["| 2 | t2 | met | z |"]))
    assert merge_update(once, fresh([2], ["| 2 | t2 | met | z |"])) == once


@pytest.mark.parametrize(
    ("numbers", "label"),
    [([4], "Part 4"), ([3, 1], "Parts 1, 3"), ([1, 2, 4, 5, 6, 7, 8], "Parts 1, 2, 4-8"), ([14, 15], "Parts 14, 15")],
)
def test_a_parts_label_reads_back_as_its_numbers(numbers, label):
    assert parts_label(numbers) == label
    assert label_parts(label.split(" ", 1)[1]) == set(numbers)


@pytest.mark.parametrize(
    ("text", "hand"),
    [(section(2, "x"), ""), (section(2, "x", hand=ANALYSIS), ANALYSIS), ("## Part 2: no footer\n", "")],
)
def test_written_by_hand_is_what_follows_a_sections_last_generated_line(text, hand):
    assert written_by_hand(text) == hand


def test_a_part_twice_in_the_file_is_refused():
    with pytest.raises(ValueError, match="part 2 appears twice"):
        split_parts(section(2, "a") + section(2, "b"))


def test_the_checked_in_file_keeps_its_part_12_and_13_analysis_through_an_update_of_other_parts():
    existing = (PROJECT / "BENCHMARKS.md").read_text()
    updated = [1, 3, 4, 8, 14, 15]
    merged = merge_update(existing, fresh(updated, ["| 3 | t3 | met | d |"]))
    old_sections, new_sections = split_parts(existing)[1], split_parts(merged)[1]
    assert {12, 13} <= set(old_sections) - set(updated)
    for number in set(old_sections) - set(updated):
        assert new_sections[number].rstrip("\n") == old_sections[number].rstrip("\n")
    assert written_by_hand(new_sections[13]).startswith("_The analysis below comes from the runs of part 13 alone")
