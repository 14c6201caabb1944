"""Every benchmark figure drawn from a small fixed sample set (no servers): the SVG parses and holds its series."""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ElementTree

import pytest

from bench import plots
from harness.server import PROJECT

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(autouse=True)
def figures_in(tmp_path):
    plots.use_directory(tmp_path)
    yield tmp_path


def ids_in(picture: plots.Picture) -> set[str]:
    root = ElementTree.parse(picture.svg).getroot()  # raises on a file that is not XML
    assert root.tag == f"{SVG}svg"
    return {element.get("id") for element in root.iter() if element.get("id")}


def texts_in(picture: plots.Picture) -> str:
    root = ElementTree.parse(picture.svg).getroot()
    return " ".join(text for element in root.iter(f"{SVG}text") for text in element.itertext())


def csv_rows(picture: plots.Picture) -> list[dict[str, str]]:
    with picture.csv.open(newline="") as handle:
        return list(csv.DictReader(handle))


def path_points(picture: plots.Picture, gid: str) -> int:
    """How many vertices the line with this id has (M and L commands of its path)."""
    root = ElementTree.parse(picture.svg).getroot()
    group = next(element for element in root.iter() if element.get("id") == gid)
    path = next(group.iter(f"{SVG}path"))
    return sum(path.get("d").count(command) for command in ("M ", "L "))


LEAK = [
    plots.Trace(
        "plain", 512, [0.0, 0.05, 0.1, 0.15, 0.2], [40, 300, 512, 60, 200], oom_kill_s=[0.12], new_worker_s=[0.16]
    ),
    plots.Trace("uwsgi", 512, [0.0, 0.05, 0.1], [38, 250, 90], new_worker_s=[0.1]),
    plots.Trace("fitflix", 512, [0.0, 0.05, 0.1, 0.15], [35, 380, 410, 90], new_worker_s=[0.15]),
    plots.Trace("fitflix-cluster", 1024, [0.0, 0.05, 0.1, 0.15], [60, 500, 800, 300]),
]


def test_the_memory_figure_holds_each_peer_its_marks_and_the_levels():
    picture = plots.memory_over_time(
        "leak", "Only FitFlix stays under the limit", LEAK, 80, 90, events=[(0.06, "spike")]
    )
    ids = ids_in(picture)
    for peer in ("plain", "uwsgi", "fitflix", "fitflix-cluster"):
        assert f"trace-{peer}" in ids
    assert path_points(picture, "trace-plain") == 5
    assert path_points(picture, "trace-fitflix-cluster") == 4
    assert {"oom-plain", "new-worker-plain", "new-worker-fitflix"} <= ids
    assert "oom-fitflix" not in ids and "oom-uwsgi" not in ids
    assert {"level-plain-limit-512-mb", "level-fitflix-cluster-limit-1024-mb", "level-uwsgi-critical-90"} <= ids
    assert {"level-fitflix-warn-80", "event-fitflix-spike"} <= ids
    text = texts_in(picture)
    assert "Only FitFlix stays under the limit" in text and "plain: 1 OOM kills, 1 new workers" in text
    rows = csv_rows(picture)
    assert [row["kind"] for row in rows].count("sample") == 16
    kill = next(row for row in rows if row["kind"] == "oom_kill")
    assert (kill["peer"], kill["t_s"], kill["usage_mb"]) == ("plain", "0.12", "512.0")  # the peak just before it
    assert rows[-1]["kind"] == "event: spike"


def test_a_trace_reports_its_sampling_interval():
    assert plots.Trace("x", 512, [0.0, 0.02, 0.041, 0.06], [1, 2, 3, 4]).median_interval_ms() == pytest.approx(
        20, abs=1
    )
    assert plots.Trace("x", 512, [0.0], [1]).median_interval_ms() is None


def test_the_recycle_figure_has_a_panel_per_peer_on_a_log_scale():
    series = [
        plots.AroundRecycles("plain", 2, [(0, -50.0, 3.0), (0, 10.0, 232.0), (1, 5.0, 180.0)]),
        plots.AroundRecycles("uwsgi", 1, [(0, 20.0, 1699.0)]),
        plots.AroundRecycles("fitflix MAX_REQUESTS=50", 2, [(0, 1.0, 23.0), (1, 2.0, 4.0)]),
    ]
    picture = plots.recycle_latency("recycle", "A recycle costs FitFlix 23 ms", series)
    ids = ids_in(picture)
    assert {"requests-plain", "requests-uwsgi", "requests-fitflix-max-requests-50"} <= ids
    text = texts_in(picture)
    assert "plain: 2 recycles" in text and "(log)" in text
    assert len(csv_rows(picture)) == 6


@pytest.mark.parametrize("horizontal", [True, False], ids=["horizontal", "vertical"])
def test_bars_write_every_value_including_zero_and_missing(horizontal):
    data = plots.Bars(
        ["restart 1", "restart 2", "restart 3"],
        {"fitflix": [0, 0, 0], "plain": [12, 7, None]},
        "failed requests",
        references=[(5, "five")],
        horizontal=horizontal,
        digits=0,
    )
    picture = plots.bars("restarts", "FitFlix lost none", data)
    ids = ids_in(picture)
    assert {f"bars-{peer}-{index}" for peer in ("fitflix", "plain") for index in range(3)} <= ids
    assert "reference-five" in ids
    text = texts_in(picture)
    assert text.count("n/a") == 1 and "12" in text and "failed requests" in text
    rows = csv_rows(picture)
    assert len(rows) == 6
    assert {(row["group"], row["series"], row["value"]) for row in rows} >= {("restart 3", "plain", "")}


def test_the_probe_figure_marks_probes_without_an_answer():
    series = {"fitflix": [0.004, 0.005, 0.003], "plain gthread": [0.004, None, None, 4.2]}
    picture = plots.probe_latency("slow", "FitFlix answers through the flood", series, 5, 1, every_s=0.25)
    ids = ids_in(picture)
    assert {"probes-fitflix", "probes-plain-gthread", "failed-plain-gthread", "reference-target"} <= ids
    assert "failed-fitflix" not in ids
    assert path_points(picture, "probes-plain-gthread") == 2
    rows = csv_rows(picture)
    assert [row["outcome"] for row in rows].count("no answer") == 2 and len(rows) == 7
    # A probe waits for the one before it: plain's starts at 0, 0.25, then 5.25 (after a 5 s timeout), 10.25.
    assert [row["sent_s"] for row in rows if row["peer"] == "plain gthread"] == ["0.0", "0.25", "5.25", "10.25"]


def test_peers_keep_their_colours_and_no_two_series_share_one():
    chosen = plots.colours(["uwsgi", "fitflix", "plain", "fitflix-cluster", "fitflix B", "fitflix C", "x", "y"])
    assert chosen["fitflix"][0] == plots.BLUE and chosen["plain"][0] == plots.VERMILLION
    assert chosen["uwsgi"][0] == plots.ORANGE and chosen["fitflix-cluster"][0] == plots.SKY_BLUE
    first_seven = [colour for colour, _dash in list(chosen.values())[:7]]
    assert len(set(first_seven)) == 7


def test_the_same_numbers_draw_the_same_file(tmp_path):
    first = plots.memory_over_time("a", "t", LEAK, 80, 90).svg.read_bytes()
    plots.use_directory(tmp_path / "again")
    assert plots.memory_over_time("a", "t", LEAK, 80, 90).svg.read_bytes() == first


def test_each_parts_picture_comes_above_its_table_with_its_numbers_linked():
    from bench.report import Part, markdown

    picture = plots.bars("part9-x", "A finding | with a pipe", plots.Bars(["a"], {"s": [1.0]}, "MB"))
    part = Part(9, "Title", "How.", ["peer", "MB"], [["fitflix", "1.0"]], pictures=[picture])
    text = markdown([part], ["header"]).splitlines()
    image = text.index("![A finding \\| with a pipe](figures/part9-x.svg)")
    assert image < text.index("| peer | MB |")
    assert "[part9-x.csv](figures/part9-x.csv)" in text[image + 2]


IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+\.svg)\)")


def test_the_readme_opens_with_the_leak_picture_and_every_linked_picture_is_committed_with_its_numbers():
    readme = (PROJECT / "README.md").read_text().splitlines()
    first = next(line for line in readme[1:] if line.strip())  # the first thing under the title
    assert IMAGE.fullmatch(first) and IMAGE.fullmatch(first).group(1) == "figures/part3-leak.svg", first
    benchmarks = (PROJECT / "BENCHMARKS.md").read_text()
    linked = IMAGE.findall(benchmarks) + IMAGE.findall("\n".join(readme))
    assert "figures/part3-leak.svg" in IMAGE.findall(benchmarks)
    for link in linked:
        svg = PROJECT / link
        assert ElementTree.parse(svg).getroot().tag == f"{SVG}svg", link
        assert svg.with_suffix(".csv").stat().st_size > 0, link


def test_every_part_of_benchmarks_shows_a_picture_above_its_table():
    sections = re.split(r"^## ", (PROJECT / "BENCHMARKS.md").read_text(), flags=re.M)
    parts = [section for section in sections if section.startswith("Part ")]
    assert len(parts) >= 13
    for section in parts:
        image = IMAGE.search(section)
        table = re.search(r"^\| ", section, flags=re.M)
        assert image and table and image.start() < table.start(), section.splitlines()[0]


def test_a_ratio_near_one_is_drawn_as_dots_on_an_axis_that_shows_the_difference():
    data = plots.Bars(["1", "2", "3"], {"A / B": [1.02, 0.97, 1.05]}, "ratio", [(1.0, "no cost")], False, 3, dots=True)
    picture = plots.bars("ratio", "Recycling costs nothing", data)
    ids = ids_in(picture)
    assert "dots-a-b" in ids and "reference-no-cost" in ids
    assert not any(name.startswith("bars-") for name in ids)
    text = texts_in(picture)
    assert all(value in text for value in ("1.020", "0.970", "1.050"))  # each value at its dot
    assert "no cost" in text  # the reference line is named in the legend
