"""bench/cgroup_v2.py: parts 18 and 19 (parts 3 and 8 on cgroup v2, in the guest), without a guest."""

from __future__ import annotations

import pytest

from bench import __main__ as bench_main
from bench import cgroup_v2, plots, servers
from bench.report import Part
from bench.scale import FULL, QUICK
from fitflix.memory.cgroup import Pressure


def test_readings_are_summed_per_peer_over_its_runs():
    readings = [
        (
            "plain",
            {"high": 0, "max": 40, "oom": 2, "oom_kill": 2, "oom_group_kill": 1},
            {"some": Pressure(1, 2_500_000)},
        ),
        ("plain", {"max": 10, "oom": 1, "oom_kill": 1}, {"some": Pressure(0, 500_000), "full": Pressure(0, 250_000)}),
        ("fitflix", {"high": 0, "max": 0, "oom": 0, "oom_kill": 0, "oom_group_kill": 0}, None),
    ]

    lines = cgroup_v2.readings_note(readings)

    assert lines == [
        "plain: memory.events over its runs: max 50 (reached memory.max), oom 3, oom_kill 3, oom_group_kill 1; "
        "memory.pressure: some 3.00 s, full 0.25 s stalled",
        "fitflix: memory.events over its runs: max 0 (reached memory.max), oom 0, oom_kill 0, oom_group_kill 0; "
        "no memory.pressure",
    ]


@pytest.mark.parametrize("parts", ["18", "3,19"])
def test_the_guest_parts_are_refused_off_v2_with_the_command_that_runs_them(monkeypatch, capsys, parts):
    monkeypatch.setattr(cgroup_v2, "v2_problem", lambda: "this host's memory cgroup is v1")

    with pytest.raises(SystemExit):
        bench_main.parse_args(["--parts", parts])

    error = capsys.readouterr().err
    assert "cgroup v2 only" in error and "bash scripts/test-v2 --bench --update --parts" in error


def test_the_default_parts_leave_the_guest_parts_out():
    assert bench_main.parse_args([]).parts.split(",") == [str(number) for number in bench_main.HOST_PARTS]
    assert {18, 19} <= set(bench_main.PARTS) and not {18, 19} & set(bench_main.HOST_PARTS)


class FakeLeak:
    """Stands for bench.leak: a part 3 with a figure, and what it saw of the cgroup options."""

    __name__ = "bench.leak"

    def __init__(self) -> None:
        self.options = None
        self.scale = None

    def run(self, scale) -> Part:
        self.options, self.scale = dict(servers.CGROUP_OPTIONS), scale
        folder = plots.directory()
        (folder / "part3-leak.svg").write_text("<svg>v2</svg>")
        (folder / "part3-leak.csv").write_text("t,mb\n")
        servers.V2_READINGS.append(("fitflix", {"oom_kill": 0, "oom_group_kill": 0}, None))
        part = Part(3, "Leak survival", "The v1 method.", ["peer"], [["fitflix"]])
        part.pictures.append(plots.Picture(folder / "part3-leak.svg", folder / "part3-leak.csv", "alt"))
        return part


def test_a_guest_part_runs_with_oom_group_and_keeps_the_v1_figure(monkeypatch, tmp_path):
    monkeypatch.setattr(cgroup_v2, "v2_problem", lambda: None)
    monkeypatch.setattr(plots, "_directory", None)  # the figures' folder as it was, after the test
    figures = plots.use_directory(tmp_path / "figures")
    (figures / "part3-leak.svg").write_text("<svg>v1</svg>")
    fake = FakeLeak()

    part = cgroup_v2.GuestPart(18, fake, 3, "Leak survival").run(FULL)

    assert fake.options == {"oom_group": True} and servers.CGROUP_OPTIONS == {}
    assert fake.scale is cgroup_v2.GUEST  # a full run is the short guest scale there
    assert (part.number, part.title.startswith("Leak survival on cgroup v2 (Linux ")) == (18, True)
    assert part.method.startswith("Part 3's run on cgroup v2") and part.method.endswith("The v1 method.")
    assert part.notes[-1].startswith("fitflix: memory.events over its runs: max 0")
    assert [picture.svg.name for picture in part.pictures] == ["part18-leak.svg"]
    assert (figures / "part18-leak.svg").read_text() == "<svg>v2</svg>"
    assert (figures / "part3-leak.svg").read_text() == "<svg>v1</svg>"
    assert (figures / "part18-leak.csv").exists()


def test_a_quick_run_keeps_its_scale(monkeypatch, tmp_path):
    monkeypatch.setattr(cgroup_v2, "v2_problem", lambda: None)
    monkeypatch.setattr(plots, "_directory", None)
    plots.use_directory(tmp_path)
    fake = FakeLeak()

    cgroup_v2.GuestPart(18, fake, 3, "Leak survival").run(QUICK)

    assert fake.scale is QUICK


def test_a_guest_part_off_v2_fails_rather_than_writing_a_section(monkeypatch):
    monkeypatch.setattr(cgroup_v2, "v2_problem", lambda: "this host's memory cgroup is v1")

    with pytest.raises(RuntimeError, match="runs on cgroup v2 only"):
        cgroup_v2.GuestPart(19, FakeLeak(), 8, "Spike sweep").run(FULL)


def test_a_run_of_the_guest_parts_alone_keeps_the_machine_the_other_parts_ran_on():
    existing = (
        "# FitFlix benchmarks\n\nWritten by `x` on 2026-11-29.\n\n- Machine: 2 cores, Linux 6.18.44-fc.\n"
        "- uWSGI: installed.\n\n## Targets\n\n| part | target | result | measured |\n| --- | --- | --- | --- |\n"
        "| 3 | t | met | m |\n\n## Part 3: Leak\n\n- a note, not the header's\n"
    )

    assert bench_main.host_bullets(existing) == ["- Machine: 2 cores, Linux 6.18.44-fc.", "- uWSGI: installed."]
