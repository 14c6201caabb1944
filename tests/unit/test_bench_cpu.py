"""Part 14, CPU per request: wrk's output read, the per-request arithmetic and the targets (no servers needed).

tests/live/test_bench_cpu.py runs the floor subprocess once for real."""

from __future__ import annotations

import pytest

from bench import cpu
from bench.cpu import Cell, Run, WrkResult
from bench.report import Part

# wrk 4.x's own summaries, captured on this machine (-t1 -c8, no Lua script).
PLAIN_SYNC_HEALTH = """Running 2s test @ http://127.0.0.1:18765/health
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.53ms    1.43ms  24.95ms   92.77%
    Req/Sec     3.23k   384.03     3.77k    70.00%
  6446 requests in 2.00s, 3.05MB read
Requests/sec:   3217.72
Transfer/sec:      1.52MB
"""
UNKNOWN_PATH = """Running 1s test @ http://127.0.0.1:18765/nope
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.92ms    2.73ms  30.05ms   95.33%
    Req/Sec     2.15k   322.82     2.62k    45.45%
  2360 requests in 1.10s, 1.22MB read
  Non-2xx or 3xx responses: 2360
Requests/sec:   2145.91
Transfer/sec:      1.11MB
"""
CLOSED_WITHOUT_ANSWER = """Running 1s test @ http://127.0.0.1:18766/health
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  0 requests in 1.00s, 0.00B read
  Socket errors: connect 0, read 19546, write 0, timeout 0
Requests/sec:      0.00
Transfer/sec:       0.00B
"""
NEVER_ANSWERED = """Running 2s test @ http://127.0.0.1:18767/health
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  0 requests in 2.00s, 0.00B read
Requests/sec:      0.00
Transfer/sec:       0.00B
"""
CONNECTION_REFUSED = "unable to connect to 127.0.0.1:18765 Connection refused\n"  # stderr; stdout is empty


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (PLAIN_SYNC_HEALTH, WrkResult(6446, 2.0, 0, 0)),
        (UNKNOWN_PATH, WrkResult(2360, 1.1, 2360, 0)),
        (CLOSED_WITHOUT_ANSWER, WrkResult(0, 1.0, 0, 19546)),
        (NEVER_ANSWERED, WrkResult(0, 2.0, 0, 0)),
        # wrk prints the run's time in its own units (format_time_s); the summary line alone.
        ("  120000 requests in 1.00m, 9.00MB read\n", WrkResult(120000, 60.0, 0, 0)),
        ("  12 requests in 500.00ms, 1.00KB read\n", WrkResult(12, 0.5, 0, 0)),
        (
            "  10 requests in 2.00s, 1.00KB read\n  Socket errors: connect 1, read 2, write 3, timeout 4\n",
            WrkResult(10, 2.0, 0, 10),
        ),
    ],
)
def test_wrk_output_is_read_into_answers_and_errors(output, expected):
    assert cpu.parse_wrk(output) == expected


@pytest.mark.parametrize("output", ["", CONNECTION_REFUSED])
def test_wrk_output_without_a_summary_is_refused(output):
    with pytest.raises(ValueError, match="requests in"):
        cpu.parse_wrk(output)


def test_the_rate_is_answers_over_wrks_own_duration():
    assert cpu.WrkResult(6446, 2.0, 0, 0).rps == pytest.approx(3223.0)
    assert cpu.WrkResult(0, 0.0, 0, 0).rps == 0.0


def test_wrk_runs_on_cpu_1_with_one_thread_and_8_connections():
    command = cpu.wrk_command("/usr/bin/wrk", 8000, "/health", 5)
    assert command[:4] == ["taskset", "-c", "1", "/usr/bin/wrk"]
    assert {"-t1", "-c8", "-d5s"} <= set(command)
    assert command[-1] == "http://127.0.0.1:8000/health"


def test_wrk_runs_again_with_one_connection():
    assert cpu.CONNECTION_COUNTS == (8, 1)
    command = cpu.wrk_command("/usr/bin/wrk", 8000, "/health", 3, connections=1)
    assert {"-t1", "-c1", "-d3s"} <= set(command) and "-c8" not in command


def test_the_full_part_fits_its_time_limit():
    """Ten servers, three routes, two connection counts a round: the runs alone fit the rounds' limit."""
    knobs = cpu.KNOBS["full"]
    per_round_s = 10 * len(cpu.ROUTES) * len(cpu.CONNECTION_COUNTS) * (knobs.run_s + cpu.SETTLE_S)
    assert knobs.rounds * per_round_s <= knobs.time_limit_s <= 600


def test_the_worker_gunicorn_names_is_read_from_its_log():
    text = "[INFO] Starting gunicorn 23.0.0\n[INFO] Using worker: fitflix.serving.h1worker.FitflixWorker\n"
    assert cpu.worker_class(text) == "fitflix.serving.h1worker.FitflixWorker"
    assert cpu.worker_class("nothing") is None


@pytest.mark.parametrize(
    ("result", "broken"),
    [
        (WrkResult(6446, 2.0, 0, 0), False),
        (WrkResult(2360, 1.1, 2360, 0), True),  # error answers: the route is broken, not cheap
        (WrkResult(100, 1.0, 0, 1), True),
        (WrkResult(0, 2.0, 0, 0), True),  # nothing answered
    ],
)
def test_a_run_with_any_error_or_no_answer_is_broken(result, broken):
    assert Run(result, 1_000_000).broken is broken


@pytest.mark.parametrize(
    ("cpu_ns", "requests", "expected_us"),
    [(1_000_000_000, 10_000, 100.0), (352_000, 1, 352.0), (5_000, 0, None)],
)
def test_cpu_per_request_is_the_cgroups_cpu_over_the_answers(cpu_ns, requests, expected_us):
    assert cpu.cpu_per_request_us(cpu_ns, requests) == expected_us


def run_of(cpu_us: float, requests: int = 1000, errors: int = 0) -> Run:
    return Run(WrkResult(requests, 1.0, errors, 0), int(cpu_us * 1000 * requests))


def test_medians_come_from_the_clean_runs_and_the_broken_ones_are_counted():
    cell = cpu.summarize([run_of(100), run_of(300), run_of(200), run_of(5, errors=10)])
    assert cell == Cell(rps=1000.0, cpu_us=200.0, low_us=100.0, high_us=300.0, runs=4, broken=1)


def test_a_server_without_a_clean_run_has_no_figure():
    assert cpu.summarize([run_of(5, errors=10)]) == Cell(None, None, None, None, 1, 1)
    assert cpu.summarize([]) == Cell(None, None, None, None, 0, 0)


def test_the_floor_is_the_median_of_its_rounds():
    assert cpu.floor_cell([12.0, 10.0, 11.0]) == Cell(None, 11.0, 10.0, 12.0, 3, 0)
    assert cpu.floor_cell([]).cpu_us is None


@pytest.mark.parametrize(
    ("server_us", "floor_us", "expected"),
    [(345.9, 10.9, 335.0), (10.0, 11.0, -1.0), (None, 10.0, None), (100.0, None, None)],
)
def test_what_a_server_adds_is_its_cost_less_the_apps_own(server_us, floor_us, expected):
    assert cpu.added_us(server_us, floor_us) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("value", "reference", "factor", "expected"),
    [
        (100.0, 200.0, 0.5, True),  # exactly at the bound
        (101.0, 200.0, 0.5, False),
        (70.0, 36.0, 2.0, True),
        (80.0, 36.0, 2.0, False),
        (-3.0, 200.0, 0.5, True),  # under the floor (noise): nothing added
        (None, 200.0, 0.5, None),  # a broken or missing server: not measured
        (100.0, None, 0.5, None),
        (100.0, 0.0, 0.5, None),  # the reference adds nothing: no yardstick
        (100.0, -5.0, 0.5, None),
    ],
)
def test_within_decides_a_target_or_says_it_could_not(value, reference, factor, expected):
    assert cpu.within(value, reference, factor) is expected


@pytest.mark.parametrize(
    ("value", "reference", "expected"), [(50.0, 200.0, 0.25), (None, 200.0, None), (1.0, None, None), (1.0, 0.0, None)]
)
def test_ratio(value, reference, expected):
    assert cpu.ratio(value, reference) == expected


def test_capacity_is_what_a_tenth_of_a_cpu_pays_for():
    assert cpu.capacity_rps(250.0, 0.1) == pytest.approx(400.0)
    assert cpu.capacity_rps(None, 0.1) is None


@pytest.mark.parametrize(
    ("round_index", "expected"),
    [(0, ["a", "b", "c"]), (1, ["b", "c", "a"]), (2, ["c", "a", "b"]), (3, ["a", "b", "c"])],
)
def test_each_round_starts_one_place_further_along(round_index, expected):
    assert cpu.rotated(["a", "b", "c"], round_index) == expected


def test_rotating_nothing_is_nothing():
    assert cpu.rotated([], 2) == []


def cells_with(added: dict[tuple, float | None], floor_us: float = 10.0):
    """Cells from what each (server, route) or (server, route, connections) adds; two keys mean 8 connections."""
    floor = {path: Cell(None, floor_us, floor_us, floor_us, 1, 0) for path in cpu.ROUTES}
    cells = {
        (key if len(key) == 3 else (*key, cpu.CONNECTIONS)): Cell(
            1000.0, None if value is None else value + floor_us, None, None, 1, 0
        )
        for key, value in added.items()
    }
    return floor, cells


def verdicts(floor, cells) -> list[bool | None]:
    part = Part(14, "t", "m", ["c"])
    cpu.add_targets(part, floor, cells)
    return [target.met for target in part.targets]


def test_targets_met_when_fitflix_adds_little():
    floor, cells = cells_with(
        {
            (cpu.FITFLIX, cpu.HEALTH): 40.0,
            (cpu.PLAIN_LOGGED, cpu.HEALTH): 300.0,
            (cpu.FITFLIX, cpu.JSON_API): 150.0,
            (cpu.PLAIN_LOGGED, cpu.JSON_API): 300.0,
            (cpu.FITFLIX, cpu.WAIT): 50.0,
            (cpu.GRANIAN, cpu.HEALTH): 40.0,  # exactly granian's: met
            (cpu.GRANIAN, cpu.JSON_API): 160.0,
            (cpu.GRANIAN, cpu.WAIT): 60.0,
            (cpu.FITFLIX, cpu.HEALTH, 1): 50.0,  # 1.25x granian's at 1 connection: met
            (cpu.GRANIAN, cpu.HEALTH, 1): 40.0,
            (cpu.FITFLIX, cpu.JSON_API, 1): 100.0,
            (cpu.GRANIAN, cpu.JSON_API, 1): 100.0,
            (cpu.FITFLIX, cpu.WAIT, 1): 70.0,
            (cpu.GRANIAN, cpu.WAIT, 1): 60.0,
        }
    )
    assert verdicts(floor, cells) == [True] * 9


def test_targets_missed_and_not_measured():
    floor, cells = cells_with(
        {
            (cpu.FITFLIX, cpu.HEALTH): 360.0,
            (cpu.PLAIN_LOGGED, cpu.HEALTH): 335.0,
            (cpu.FITFLIX, cpu.JSON_API): None,  # every run broken
            (cpu.PLAIN_LOGGED, cpu.JSON_API): 400.0,
        },  # granian not installed
        floor_us=200.0,  # over 352 / 2
    )
    assert verdicts(floor, cells) == [False, None] + [None] * 6 + [False]


def test_fitflix_is_held_to_granian_at_8_connections_and_to_a_quarter_more_at_1():
    floor, cells = cells_with(
        {
            (cpu.FITFLIX, cpu.HEALTH): 41.0,  # just over granian's at 8 connections: missed
            (cpu.GRANIAN, cpu.HEALTH): 40.0,
            (cpu.FITFLIX, cpu.HEALTH, 1): 51.0,  # just over 1.25x at 1 connection: missed
            (cpu.GRANIAN, cpu.HEALTH, 1): 40.0,
            (cpu.FITFLIX, cpu.WAIT, 1): 45.0,
            (cpu.GRANIAN, cpu.WAIT, 1): 40.0,
        }
    )
    part = Part(14, "t", "m", ["c"])
    cpu.add_targets(part, floor, cells)
    granian = [target for target in part.targets if "granian" in target.text]
    assert [target.text.split(",")[1].strip() for target in granian] == ["at 8 connections"] * 3 + [
        "at 1 connection"
    ] * 3
    assert [target.met for target in granian] == [False, None, None, False, None, True]
    assert "1.25x what granian adds" in granian[3].text and "1.25x" not in granian[0].text
    assert "fitflix adds 41.0 us, granian 40.0 us: 1.02x" == granian[0].measured


def test_the_table_shows_both_connection_counts_side_by_side():
    names = [cpu.GRANIAN, cpu.FITFLIX, cpu.FITFLIX_GTHREAD]
    added = {(name, path, count): 10.0 * (index + 1) * count for index, name in enumerate(names)
             for path in cpu.ROUTES for count in cpu.CONNECTION_COUNTS}  # fmt: skip
    floor, cells = cells_with(added)
    columns = cpu.columns()
    rows = cpu.table_rows(floor, cells, names)
    assert len(rows) == len(cpu.ROUTES) * (1 + len(names))
    assert all(len(row) == len(columns) for row in rows)
    assert {"c=8 CPU us/req", "c=1 CPU us/req", "c=8 adds vs granian", "c=1 adds vs granian"} <= set(columns)
    fitflix = next(row for row in rows if row[:2] == [cpu.HEALTH, cpu.FITFLIX])
    by_column = dict(zip(columns, fitflix, strict=True))
    assert by_column["c=8 adds us"] == "160.0" and by_column["c=1 adds us"] == "20.0"
    assert by_column["c=8 adds vs granian"] == "2.00x" and by_column["c=1 adds vs granian"] == "2.00x"
    assert by_column[columns[-1]] == "0/1, 0/1"
    assert rows[0][:2] == [cpu.HEALTH, cpu.FLOOR]


def test_a_figure_per_connection_count_is_drawn(tmp_path):
    from bench import plots

    plots.use_directory(tmp_path)
    names = [cpu.GRANIAN, cpu.FITFLIX, cpu.FITFLIX_GTHREAD]
    added = {(name, path, count): 10.0 * (index + 1) for index, name in enumerate(names)
             for path in cpu.ROUTES for count in cpu.CONNECTION_COUNTS}  # fmt: skip
    added[(cpu.FITFLIX_GTHREAD, cpu.JSON_API, 1)] = None  # no clean run: "n/a"
    floor, cells = cells_with(added)
    pictures = cpu.figures(floor, cells, names)
    assert [picture.svg.name for picture in pictures] == [
        "part14-cpu-per-request.svg",
        "part14-cpu-per-request-1-connection.svg",
    ]
    assert "At 8 connections" in pictures[0].alt and "2.00x granian's" in pictures[0].alt
    assert "At 1 connection," in pictures[1].alt
    assert all(picture.svg.stat().st_size > 0 and picture.csv.stat().st_size > 0 for picture in pictures)


def test_the_floor_target_says_where_its_reference_comes_from():
    part = Part(14, "t", "m", ["c"])
    cpu.add_targets(part, *cells_with({}))
    assert "352 us" in part.targets[-1].text and "2026-11-29" in part.targets[-1].text


def test_the_floor_runs_the_app_on_cpu_0():
    command = cpu.floor_command(100, 3, ["/health", "/api/workouts"])
    assert command[:3] == ["taskset", "-c", "0"]
    assert command[-5:] == ["bench.floor", "100", "3", "/health", "/api/workouts"]


def test_the_floors_json_line_is_read_past_anything_printed_before_it():
    stdout = 'a warning\n{"/health": {"status": "200 OK", "per_call_us": [9.5, 10.5]}}\n'
    assert cpu.parse_floor(stdout) == {"/health": ("200 OK", [9.5, 10.5])}
    with pytest.raises(ValueError):
        cpu.parse_floor("Traceback ...\n")


@pytest.mark.parametrize(
    ("value", "reference", "expected"),
    [(50.0, 100.0, 0.5), (-7.5, 100.0, -0.075), (50.0, -31.8, None), (50.0, 0.0, None), (None, 1.0, None)],
)
def test_a_ratio_of_what_servers_add_needs_a_reference_that_adds_something(value, reference, expected):
    assert cpu.added_ratio(value, reference) == (pytest.approx(expected) if expected is not None else None)


def test_cells_under_the_floor_are_named():
    floor, cells = cells_with({(cpu.GRANIAN, cpu.WAIT): -31.8, (cpu.FITFLIX, cpu.WAIT, 1): 5.0})
    assert cpu.under_the_floor(floor, cells) == ["granian on /bench/wait?ms=1 at 8 connections"]
