"""The benchmark's pictures: one SVG and one CSV per figure, in figures/ beside BENCHMARKS.md.

Each part hands plain numbers to one function here; the function draws them
with matplotlib (a bench and test requirement, never imported by the service)
in the one house style below, and writes the same numbers as CSV so anyone can
redraw them. Every plotted series carries an SVG id (`gid`), so a test can
find it in the file.
"""

from __future__ import annotations

import csv
import re
import tempfile
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Okabe & Ito's palette: told apart with every common colour-vision deficiency.
BLACK = "#000000"
ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
GREEN = "#009E73"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
GREY = "#777777"
LIGHT_GREY = "#BBBBBB"  # two phases of one peer (idle, after load): told apart by lightness alone
DARK_GREY = "#444444"
PALETTE = (BLUE, VERMILLION, ORANGE, SKY_BLUE, GREEN, PURPLE, BLACK)
# Each peer keeps its colour in every figure, whichever others share it.
PREFERRED = (
    ("fitflix-cluster", SKY_BLUE),
    ("fitflix", BLUE),
    ("plain", VERMILLION),
    ("uwsgi", ORANGE),
    ("granian", GREEN),
    ("waitress", PURPLE),
)
DASHES = ("solid", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (3, 1, 1, 1, 1, 1)), "solid", "solid")

WIDTH_IN = 7.2  # about 700 px wide: the README's column, read without zooming
STYLE = {
    "figure.figsize": (WIDTH_IN, 3.6),
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titlelocation": "left",
    "axes.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "axes.axisbelow": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "lines.linewidth": 1.4,
    "svg.fonttype": "none",  # text stays text: smaller, searchable, crisp at any size
    "svg.hashsalt": "fitflix-bench",  # the same numbers give the same file
}

_directory: Path | None = None


@dataclass(frozen=True)
class Picture:
    """A figure written to disk: the SVG, its CSV and the sentence that says what it shows."""

    svg: Path
    csv: Path
    alt: str


def use_directory(directory: Path) -> Path:
    """Where the parts' figures go from now on (figures/ beside the markdown a run writes)."""
    global _directory
    directory.mkdir(parents=True, exist_ok=True)
    _directory = directory
    return directory


def directory() -> Path:
    """The figures' folder; a fresh temporary one when the run writes no markdown."""
    return _directory if _directory is not None else use_directory(Path(tempfile.mkdtemp(prefix="fitflix-figures-")))


def _mark_new_workers(ax, peer: str, times_s, heights, colour: str) -> None:
    """An open circle where each new worker appeared (none: nothing drawn)."""
    if times_s:
        ax.scatter(
            times_s, heights, marker="o", s=16, facecolors="white", edgecolors=colour, linewidths=1.1, zorder=4
        ).set_gid(f"new-worker-{slug(peer)}")


def _label_at_right_edge(ax, label: str, level: float, colour: str) -> None:
    """A level line's label just past the right edge of the axes, at its height."""
    ax.annotate(
        label,
        (1.0, level),
        xycoords=("axes fraction", "data"),
        xytext=(4, 0),
        textcoords="offset points",
        va="center",
        fontsize=7.5,
        color=colour,
    )


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "series"


def colours(names: Iterable[str]) -> dict[str, tuple[str, object]]:
    """A colour and a dash pattern for each name: the peers keep their colour in every figure."""
    chosen: dict[str, tuple[str, object]] = {}
    used: set[str] = set()
    for name in names:
        colour = next((c for prefix, c in PREFERRED if name.startswith(prefix) and c not in used), None)
        if colour is None:
            colour = next((c for c in PALETTE if c not in used), PALETTE[len(chosen) % len(PALETTE)])
        used.add(colour)
        chosen[name] = (colour, DASHES[len(chosen) % len(DASHES)])
    return chosen


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return matplotlib, plt


# _figure and _save run inside a drawing function, so inside its @_styled house style.
def _figure(height_in: float, rows: int = 1, sharex: bool = False, sharey: bool = False):
    _matplotlib, plt = _pyplot()
    fig, axes = plt.subplots(rows, 1, figsize=(WIDTH_IN, height_in), sharex=sharex, sharey=sharey, squeeze=False)
    return fig, [row[0] for row in axes]


def _save(fig, name: str, alt: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Picture:
    _matplotlib, plt = _pyplot()
    folder = directory()
    svg, table = folder / f"{name}.svg", folder / f"{name}.csv"
    fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return Picture(svg, table, alt)


def _styled(function):
    """Run a drawing function inside the house style (rcParams apply when artists are made)."""

    def wrapper(*args, **kwargs):
        matplotlib, _plt = _pyplot()
        with matplotlib.rc_context(STYLE):
            return function(*args, **kwargs)

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return wrapper


def wrapped(title: str, width: int = 88) -> str:
    """A title that states the finding, on as many lines as the column needs."""
    return "\n".join(textwrap.wrap(title, width))


def _plain_log_axis(axis) -> None:
    """1, 10, 100, 1,000 on a log axis rather than 10^0, 10^1..."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0,), numticks=30))
    axis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:,.10g}"))
    axis.set_minor_formatter(NullFormatter())


def _round(value: float | None, digits: int = 3) -> object:
    return "" if value is None else round(value, digits)


# -- memory over time: the leak (part 3) and the spike (part 4) -------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """One peer's cgroup memory over time, and what happened to its workers."""

    peer: str
    limit_mb: float
    t_s: Sequence[float]
    usage_mb: Sequence[float]
    oom_kill_s: Sequence[float] = ()
    new_worker_s: Sequence[float] = ()

    def percent_at(self, t_s: float) -> float:
        """The usage (% of the limit) at the last sample at or before `t_s`."""
        value = self.usage_mb[0] if self.usage_mb else 0.0
        for when, usage in zip(self.t_s, self.usage_mb, strict=True):
            if when > t_s:
                break
            value = usage
        return 100 * value / self.limit_mb

    def peak_percent_before(self, t_s: float, window_s: float = 0.25) -> float:
        """The highest usage (% of the limit) in the `window_s` up to `t_s`: where an OOM kill struck."""
        inside = [usage for when, usage in zip(self.t_s, self.usage_mb, strict=True) if t_s - window_s <= when <= t_s]
        return 100 * max(inside) / self.limit_mb if inside else self.percent_at(t_s)

    def median_interval_ms(self) -> float | None:
        steps = sorted(later - earlier for earlier, later in zip(self.t_s, self.t_s[1:], strict=False))
        return 1000 * steps[len(steps) // 2] if steps else None


@_styled
def memory_over_time(
    name: str,
    title: str,
    traces: Sequence[Trace],
    warn_percent: float,
    critical_percent: float,
    events: Sequence[tuple[float, str]] = (),
    xlabel: str = "seconds since the load started",
    alt: str = "",
    notes: dict[str, str] | None = None,
) -> Picture:
    """A panel per peer: usage as % of its limit; the limit, warn and critical lines; its OOM kills and new workers.

    Panels share both axes, so the peers compare at a glance without their lines crossing.
    """
    fig, axes = _figure(1.0 + 1.2 * len(traces), rows=len(traces), sharex=True, sharey=True)
    style = colours(trace.peer for trace in traces)
    longest = max((trace.t_s[-1] for trace in traces if trace.t_s), default=1.0)
    for ax, trace in zip(axes, traces, strict=True):
        colour, _dash = style[trace.peer]
        percent = [100 * usage / trace.limit_mb for usage in trace.usage_mb]
        (line,) = ax.plot(trace.t_s, percent, color=colour, linewidth=1.2, zorder=3)
        line.set_gid(f"trace-{slug(trace.peer)}")
        if trace.oom_kill_s:
            kills = ax.scatter(
                trace.oom_kill_s,
                [trace.peak_percent_before(t) for t in trace.oom_kill_s],
                marker="x",
                s=30,
                linewidths=1.5,
                color=BLACK,
                zorder=5,
            )
            kills.set_gid(f"oom-{slug(trace.peer)}")
        _mark_new_workers(ax, trace.peer, trace.new_worker_s, [trace.percent_at(t) for t in trace.new_worker_s], colour)
        levels = [
            (100.0, f"limit {trace.limit_mb:g} MB", BLACK, "solid"),
            (critical_percent, f"critical {critical_percent:g}%", GREY, (0, (1, 1.5))),
            (warn_percent, f"warn {warn_percent:g}%", GREY, (0, (5, 2))),
        ]
        for level, label, level_colour, dash in levels:
            ax.axhline(level, color=level_colour, linestyle=dash, linewidth=0.8, zorder=2).set_gid(
                f"level-{slug(trace.peer)}-{slug(label)}"
            )
            if level == 100.0:
                _label_at_right_edge(ax, label, level, level_colour)
        for when, label in events:
            ax.axvline(when, color=GREY, linewidth=0.8, linestyle=(0, (2, 2)), zorder=1).set_gid(
                f"event-{slug(trace.peer)}-{slug(label)}"
            )
        summary = f"{len(trace.oom_kill_s)} OOM kills, {len(trace.new_worker_s)} new workers"
        extra = (notes or {}).get(trace.peer)
        ax.set_title(
            f"{trace.peer}: {summary}" + (f"; {extra}" if extra else ""),
            fontsize=8.5,
            color=colour,
            fontweight="bold",
            pad=2,
        )
        ax.set_yticks([0, 50, 100])
    for when, label in events:
        axes[0].annotate(label, (when, 104), xytext=(3, 0), textcoords="offset points", fontsize=7.5, color=GREY)
    axes[0].set_ylim(0, 118)
    axes[0].set_xlim(0, max(longest * 1.01, 0.1))
    axes[-1].set_xlabel(xlabel)
    fig.supylabel("cgroup memory usage, % of its limit", fontsize=9.5)
    handles = [
        axes[0].scatter([], [], marker="x", color=BLACK, label="OOM kill (the kernel killed a process)"),
        axes[0].scatter([], [], marker="o", facecolors="white", edgecolors=GREY, label="new worker started"),
        axes[0].plot(
            [], [], color=GREY, linestyle=(0, (1, 1.5)), linewidth=0.8, label=f"critical {critical_percent:g}%"
        )[0],
        axes[0].plot([], [], color=GREY, linestyle=(0, (5, 2)), linewidth=0.8, label=f"warn {warn_percent:g}%")[0],
    ]
    fig.suptitle(wrapped(title), x=0.01, ha="left", fontsize=10.5)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.02), ncol=4)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    rows: list[list[object]] = []
    for trace in traces:
        rows += [
            [trace.peer, trace.limit_mb, _round(t), _round(usage, 2), "sample"]
            for t, usage in zip(trace.t_s, trace.usage_mb, strict=True)
        ]
        rows += [
            [
                trace.peer,
                trace.limit_mb,
                _round(t),
                _round(trace.peak_percent_before(t) * trace.limit_mb / 100, 2),
                "oom_kill",
            ]
            for t in trace.oom_kill_s
        ]
        rows += [
            [trace.peer, trace.limit_mb, _round(t), _round(trace.percent_at(t) * trace.limit_mb / 100, 2), "new_worker"]
            for t in trace.new_worker_s
        ]
    rows += [["", "", _round(when), "", f"event: {label}"] for when, label in events]
    return _save(fig, name, alt or title, ["peer", "limit_mb", "t_s", "usage_mb", "kind"], rows)


@_styled
def memory_mb_over_time(
    name: str,
    title: str,
    traces: Sequence[Trace],
    references: Sequence[tuple[float, str]] = (),
    xlabel: str = "seconds since the load started; each panel its own time span",
    alt: str = "",
) -> Picture:
    """Part 16, where no limit exists: a panel per peer, its cgroup's usage in MB (no limit to divide by), the
    `references` (MB, label) as dashed lines, its new workers and OOM kills marked; the panels share the MB axis,
    each has its own time span (a leak at full speed lasts seconds, a slow one longer)."""
    fig, axes = _figure(1.0 + 1.3 * len(traces), rows=len(traces), sharey=True)
    style = colours(trace.peer for trace in traces)
    highest = max([usage for trace in traces for usage in trace.usage_mb] + [mb for mb, _label in references] + [1.0])
    dashes = ((0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))
    for ax, trace in zip(axes, traces, strict=True):
        colour, _dash = style[trace.peer]
        (line,) = ax.plot(trace.t_s, trace.usage_mb, color=colour, linewidth=1.2, zorder=3)
        line.set_gid(f"trace-{slug(trace.peer)}")

        def usage_at(t_s: float, trace: Trace = trace) -> float:
            before = [usage for when, usage in zip(trace.t_s, trace.usage_mb, strict=True) if when <= t_s]
            return before[-1] if before else (trace.usage_mb[0] if trace.usage_mb else 0.0)

        _mark_new_workers(ax, trace.peer, trace.new_worker_s, [usage_at(t) for t in trace.new_worker_s], colour)
        if trace.oom_kill_s:
            kills = ax.scatter(
                trace.oom_kill_s, [usage_at(t) for t in trace.oom_kill_s], marker="x", s=30, color=BLACK, zorder=5
            )
            kills.set_gid(f"oom-{slug(trace.peer)}")
        for index, (level, label) in enumerate(references):
            ax.axhline(level, color=GREY, linestyle=dashes[index % len(dashes)], linewidth=0.8, zorder=2).set_gid(
                f"level-{slug(trace.peer)}-{slug(label)}"
            )
            _label_at_right_edge(ax, label, level, GREY)
        summary = f"{len(trace.oom_kill_s)} OOM kills, {len(trace.new_worker_s)} new workers"
        ax.set_title(f"{trace.peer}: {summary}", fontsize=8.5, color=colour, fontweight="bold", pad=2)
        ax.set_xlim(0, max((trace.t_s[-1] if trace.t_s else 0.0) * 1.01, 0.1))
    axes[0].set_ylim(0, highest * 1.12)
    axes[-1].set_xlabel(xlabel)
    fig.supylabel("cgroup memory usage, MB (no limit)", fontsize=9.5)
    handles = [
        axes[0].scatter([], [], marker="x", color=BLACK, label="OOM kill"),
        axes[0].scatter([], [], marker="o", facecolors="white", edgecolors=GREY, label="new worker started"),
    ]
    fig.suptitle(wrapped(title), x=0.01, ha="left", fontsize=10.5)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.02), ncol=2)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    rows: list[list[object]] = []
    for trace in traces:
        samples = zip(trace.t_s, trace.usage_mb, strict=True)
        rows += [[trace.peer, _round(t), _round(usage, 2), "sample"] for t, usage in samples]
        rows += [[trace.peer, _round(t), "", "new_worker"] for t in trace.new_worker_s]
        rows += [[trace.peer, _round(t), "", "oom_kill"] for t in trace.oom_kill_s]
    rows += [["", "", _round(level, 2), f"reference: {label}"] for level, label in references]
    return _save(fig, name, alt or title, ["peer", "t_s", "usage_mb", "kind"], rows)


# -- the recycle gap (part 5) --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AroundRecycles:
    """Each request's latency by its end time relative to the recycle nearest it (one peer)."""

    peer: str
    recycles: int
    points: Sequence[tuple[int, float, float]]  # (recycle index, ms from the old worker's last answer, latency ms)
    note: str = ""  # shown after the peer's name, such as the median gap


@_styled
def recycle_latency(name: str, title: str, series: Sequence[AroundRecycles], alt: str = "") -> Picture:
    """One panel per peer: every request around a recycle, latency on a log scale (shared); time on each its own."""
    fig, axes = _figure(1.0 + 1.1 * len(series), rows=len(series), sharey=True)
    style = colours(item.peer for item in series)
    highest = max((latency for item in series for _i, _t, latency in item.points), default=10.0)
    for ax, item in zip(axes, series, strict=True):
        colour, _dash = style[item.peer]
        shown = [(t, latency) for _i, t, latency in item.points]
        dots = ax.scatter(
            [t for t, _latency in shown],
            [max(latency, 0.1) for _t, latency in shown],
            s=5,
            color=colour,
            alpha=0.55,
            linewidths=0,
        )
        dots.set_gid(f"requests-{slug(item.peer)}")
        ax.axvline(0, color=GREY, linewidth=0.8, linestyle=(0, (2, 2)))
        ax.set_yscale("log")
        ax.set_ylim(0.5, max(highest * 2, 100))
        if shown:
            low, high = min(t for t, _latency in shown), max(t for t, _latency in shown)
            ax.set_xlim(low - 0.03 * (high - low + 1), high + 0.03 * (high - low + 1))
        ax.grid(True, axis="both", which="major")
        _plain_log_axis(ax.yaxis)
        label = f"{item.peer}: {item.recycles} recycles" + (f", {item.note}" if item.note else "")
        ax.set_title(label, fontsize=8.5, color=colour, fontweight="bold", pad=2)
    fig.suptitle(wrapped(title), x=0.01, ha="left", fontsize=10.5)
    axes[-1].set_xlabel("ms from the old worker's last answer (0); each panel its own time span")
    fig.supylabel("request latency, ms (log)", fontsize=9.5)
    fig.tight_layout()
    rows = [
        [item.peer, index, _round(t, 2), _round(latency, 2)] for item in series for index, t, latency in item.points
    ]
    return _save(fig, name, alt or title, ["peer", "recycle", "t_from_last_old_answer_ms", "latency_ms"], rows)


# -- bars: the footprint (part 1), failures per restart (part 11) and every other part's headline ------------------


@dataclass(frozen=True)
class Bars:
    """Grouped bars: `groups` along the axis, one bar per series in each group."""

    groups: Sequence[str]
    series: dict[str, Sequence[float | None]]
    unit: str  # the value axis label
    references: Sequence[tuple[float, str]] = field(default_factory=tuple)  # (value, label) lines across the bars
    horizontal: bool = True
    digits: int = 1
    log: bool = False
    dots: bool = False  # a ratio near 1: dots on an axis that need not start at 0 (bars would hide the differences)


@_styled
def bars(
    name: str,
    title: str,
    data: Bars,
    alt: str = "",
    series_colours: dict[str, str] | None = None,
    xlabel: str = "",
) -> Picture:
    """Grouped bars with each value written at the bar's end (0 shows as '0', a missing value as 'n/a')."""
    count = len(data.series)
    size = max(len(data.groups) * (0.28 * count + 0.25) + 1.1, 2.2) if data.horizontal else 3.6
    fig, (ax,) = _figure(size)
    style = colours(data.series)
    thickness = 0.8 / max(count, 1)
    # Each value at its bar, unless long numbers would run into each other (the CSV has them all).
    labelled = data.horizontal or data.digits == 0 or len(data.groups) * count <= 14
    values_all = [value for values in data.series.values() for value in values if value is not None]
    top = max(values_all + [reference for reference, _label in data.references], default=1.0) or 1.0
    for position, (label, values) in enumerate(data.series.items()):
        colour = (series_colours or {}).get(label, style[label][0])
        offsets = [index - 0.4 + thickness * (position + 0.5) for index in range(len(data.groups))]
        heights = [0.0 if value is None else value for value in values]
        if data.dots:
            shown = [(offset, value) for offset, value in zip(offsets, values, strict=True) if value is not None]
            xs, ys = [offset for offset, _v in shown], [value for _o, value in shown]
            (ax.plot(ys, xs) if data.horizontal else ax.plot(xs, ys))[0].set(
                linestyle="none", marker="o", markersize=6, color=colour, label=label, gid=f"dots-{slug(label)}"
            )
        else:
            drawn = (ax.barh if data.horizontal else ax.bar)(
                offsets, heights, thickness * 0.92, color=colour, label=label
            )
            for index, patch in enumerate(drawn.patches):
                patch.set_gid(f"bars-{slug(label)}-{index}")
        for offset, value in zip(offsets, values, strict=True):
            if not labelled:
                break
            text = "n/a" if value is None else f"{value:,.{data.digits}f}"
            at = 0.0 if value is None else value
            if data.horizontal:
                ax.annotate(text, (at, offset), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7.5)
            else:
                ax.annotate(text, (offset, at), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7.5)
    reference_dashes = ((0, (4, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))
    for index, (value, label) in enumerate(data.references):
        dash = reference_dashes[index % len(reference_dashes)]
        draw = ax.axvline if data.horizontal else ax.axhline
        draw(value, color=BLACK, linewidth=0.9, linestyle=dash, label=label).set_gid(f"reference-{slug(label)}")
    positions = list(range(len(data.groups)))
    if xlabel:
        (ax.set_ylabel if data.horizontal else ax.set_xlabel)(xlabel)
    if data.horizontal:
        ax.set_yticks(positions, ["\n".join(textwrap.wrap(group, 30)) for group in data.groups])
        ax.invert_yaxis()
        ax.set_xlabel(data.unit)
        ax.grid(False, axis="y")
        ax.grid(True, axis="x")
        if data.log:
            ax.set_xscale("log")
        else:
            ax.set_xlim(0, top * 1.15)
    else:
        ax.set_xticks(positions, data.groups)
        ax.set_ylabel(data.unit)
        if data.log:
            ax.set_yscale("log")
        elif data.dots:
            low = min(values_all + [reference for reference, _label in data.references], default=0.0)
            span = max(top - low, 0.01)
            ax.set_ylim(low - 0.15 * span, top + 0.2 * span)
        else:
            ax.set_ylim(0, top * 1.18)
    fig.suptitle(wrapped(title), x=0.01, ha="left", fontsize=10.5)
    fig.tight_layout()
    if (count > 1 or data.references) and data.horizontal:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), ncol=1)
    elif count > 1 or data.references:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2 if xlabel else -0.12), ncol=4)
    rows = [
        [group, label, _round(values[index], 4)]
        for label, values in data.series.items()
        for index, group in enumerate(data.groups)
    ]
    return _save(fig, name, alt or title, ["group", "series", "value"], rows)


# -- /health under the slow-client flood (part 10) ------------------------------------------------------------------


def probe_starts(latencies: Sequence[float | None], every_s: float, timeout_s: float) -> list[float]:
    """When each probe of a series started: on its tick, or when the one before it ended, if later."""
    starts, free_at = [], 0.0
    for index, latency in enumerate(latencies):
        start = max(index * every_s, free_at)
        starts.append(start)
        free_at = start + (timeout_s if latency is None else latency)
    return starts


@_styled
def probe_latency(
    name: str,
    title: str,
    series: dict[str, Sequence[float | None]],
    timeout_s: float,
    target_s: float,
    every_s: float,
    alt: str = "",
) -> Picture:
    """Each /health probe's latency by when it was sent (log scale), per peer; no answer is an x at the timeout."""
    fig, (ax,) = _figure(3.6)
    style = colours(series)
    rows = []
    for peer, latencies in series.items():
        colour, dash = style[peer]
        starts = probe_starts(latencies, every_s, timeout_s)
        answered = [(start, 1000 * value) for start, value in zip(starts, latencies, strict=True) if value is not None]
        failed = [start for start, value in zip(starts, latencies, strict=True) if value is None]
        (line,) = ax.plot(
            [start for start, _ms in answered],
            [max(ms, 0.1) for _start, ms in answered],
            color=colour,
            linestyle=dash,
            marker=".",
            markersize=3,
            label=peer,
        )
        line.set_gid(f"probes-{slug(peer)}")
        if failed:
            ax.scatter(
                failed,
                [1000 * timeout_s] * len(failed),
                marker="x",
                color=colour,
                s=30,
                zorder=5,
                label=f"{peer}: no answer in {timeout_s:g} s",
            ).set_gid(f"failed-{slug(peer)}")
        rows += [
            [
                peer,
                index + 1,
                _round(start),
                "" if value is None else round(1000 * value, 2),
                "no answer" if value is None else "answered",
            ]
            for index, (start, value) in enumerate(zip(starts, latencies, strict=True))
        ]
    ax.axhline(1000 * target_s, color=BLACK, linewidth=0.9, linestyle=(0, (4, 2))).set_gid("reference-target")
    ax.annotate(
        f"target p99 < {target_s:g} s",
        (1.0, 1000 * target_s),
        xycoords=("axes fraction", "data"),
        xytext=(4, 0),
        textcoords="offset points",
        va="center",
        fontsize=8,
    )
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set_ylim(0.5, 1000 * timeout_s * 2)
    ax.set_xlim(left=0)
    ax.set_xlabel(
        f"seconds into the probe window (a probe every {every_s * 1000:.0f} ms, one at a time, each on a "
        "fresh connection)"
    )
    ax.set_ylabel("/health latency, ms (log)")
    fig.suptitle(wrapped(title), x=0.01, ha="left", fontsize=10.5)
    fig.tight_layout()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=4)
    return _save(fig, name, alt or title, ["peer", "probe", "sent_s", "latency_ms", "outcome"], rows)
