"""The HTML report's plots, drawn server-side by matplotlib as SVG text for inlining in the page.

Why matplotlib's SVG backend (measured on the 300-item mixed run's 16 plots; the commit that
chose it has the figures): it writes no script (pygal puts a `<script>` holding every label in
each chart) and the smaller file (241 KiB against pygal's 325 KiB); it is the best-kept plotting
library in Python. It is heavy (numpy) and takes a few seconds to import and draw, so it is the
optional `report` extra, imported only when a report is drawn.

Every plot is one `<svg>` whose root id is `plot-NAME`; each drawn mark (a line, a bar) is a
group whose id starts with `mark-NAME-`, so a test can count what was drawn. Text is written as
`<text>` (not glyph outlines, a tenth of the size), escaped by matplotlib's XML writer, with
mathtext off so that a `$` in an error code is just a dollar. Labels taken from the run (error
codes, QPS groups) are clipped to a bounded length.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from ..core.echo import clipped
from .downsample import downsample
from .report_data import CapabilityRow, FailureGroup, GroupTraffic, Histogram, Point, Session, TimeSeries

if TYPE_CHECKING:  # the extra may be missing: only html_report imports this module, after checking
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MAX_POINTS", "cost_plot", "failures_plot", "histogram_plot", "history_plot", "in_flight_plot",
           "requests_plot"]

#: Points per series in a plot: a 10-hour run's 3,600 are merged down to this (`downsample`).
MAX_POINTS = 240
#: Okabe-Ito: told apart by readers with a colour-vision deficiency, and in grey print.
BLUE, ORANGE, GREEN, RED, PURPLE, GREY = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#777777"
WIDTH = 6.0  # inches: 576 px, one column of the page's two at 1:1, so text stays 9 px and up
LABEL = 32  # characters of a label from the run shown on an axis

_RC = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 9,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "legend.frameon": False,
    "legend.fontsize": 8,
    "path.simplify": True,
}


@contextmanager
def _figure(name: str, rows: int = 1, height: float = 2.4, **kwargs: Any) -> Iterator[tuple[Figure, list[Axes]]]:
    """A figure of `rows` stacked axes, with the house style; rendered by `_svg`."""
    import matplotlib
    from matplotlib.figure import Figure

    # The salt makes the ids of clip paths and markers differ from one inlined plot to the next.
    rc: Any = {**_RC, "svg.hashsalt": f"report-{name}", "svg.id": f"plot-{name}"}
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=(WIDTH, height * rows), layout="constrained")
        axes = fig.subplots(rows, 1, squeeze=False, **kwargs)[:, 0].tolist()
        yield fig, axes


def _svg(fig: Figure) -> str:
    """The figure as an `<svg>` element: the XML declaration and DOCTYPE dropped, no metadata."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", transparent=True,
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _mark(artist: Any, name: str, n: int) -> None:
    artist.set_gid(f"mark-{name}-{n}")


def _elapsed(seconds: float, _pos: object = None) -> str:
    """An axis tick: 0:45 (min:s) under an hour, 2h05 above."""
    seconds = max(0.0, seconds)
    if seconds < 3600:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}"


def _time_axis(ax: Axes, end: float) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_xlim(0, max(end, 1.0))
    # Whole seconds only: the ticks read m:ss, so half seconds of a short run showed 0:00 twice.
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 3, 5, 6, 10], integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(_elapsed))


def _xy(points: Sequence[Point], reduce: str = "mean") -> tuple[list[float], list[float]]:
    pts = downsample(points, MAX_POINTS, "max" if reduce == "max" else "mean")
    return [p[0] for p in pts], [p[1] for p in pts]


def _series_end(series: TimeSeries) -> float:
    ends = [s[-1][0] for g in series.groups for s in (g.requests, g.rate_limited) if s]
    ends += [s[-1][0] for s in (series.results, series.in_flight) if s]
    return max(ends, default=0.0)


def requests_plot(series: TimeSeries) -> str | None:
    """Requests/s per QPS group against its limit over time, one panel per group that sent any;
    429s/s on the same panel. None when no group has a point."""
    groups = [g for g in series.groups if g.requests]
    if not groups:
        return None
    end = _series_end(series)
    with _figure("requests", rows=len(groups), height=1.35, sharex=True) as (fig, axes):
        n = 0
        for ax, group in zip(axes, groups, strict=True):
            n = _group_panel(ax, group, n)
            _time_axis(ax, end)
        axes[0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.12), ncol=3)
        axes[-1].set_xlabel("time since the session started")
        return _svg(fig)


def _group_panel(ax: Axes, group: GroupTraffic, n: int) -> int:
    t, v = _xy(group.requests)
    (line,) = ax.plot(t, v, color=BLUE, lw=1.2, label="requests/s")
    _mark(line, "requests", n)
    limit = ax.axhline(group.limit, color=GREY, lw=1, ls="--", label="limit")
    _mark(limit, "requests-limit", n)
    if any(p[1] for p in group.rate_limited):
        t429, v429 = _xy(group.rate_limited, "max")
        (throttled,) = ax.plot(t429, v429, color=RED, lw=1, label="429s/s")
        _mark(throttled, "requests-429", n)
    top = max([group.limit, *v])
    ax.set_ylim(0, top * 1.15)
    ax.set_title(f"{clipped(group.group, LABEL)} (limit {group.limit:g}/s)", fontsize=9, pad=3)
    return n + 1


def in_flight_plot(series: TimeSeries) -> str | None:
    """Tasks in flight, and result lines written per second, over time. None without either."""
    panels = [(s, label, colour) for s, label, colour in (
        (series.in_flight, "tasks in flight", PURPLE), (series.results, "results written per second", GREEN)) if s]
    if not panels:
        return None
    end = _series_end(series)
    with _figure("in-flight", rows=len(panels), height=1.6, sharex=True) as (fig, axes):
        for n, (ax, (points, label, colour)) in enumerate(zip(axes, panels, strict=True)):
            t, v = _xy(points)
            (line,) = ax.plot(t, v, color=colour, lw=1.2)
            ax.fill_between(t, v, color=colour, alpha=0.12, lw=0)
            _mark(line, "in-flight", n)
            ax.set_ylim(0, max(v) * 1.15 or 1)
            ax.set_title(label, fontsize=9, pad=3)
            _time_axis(ax, end)
        axes[-1].set_xlabel("time since the session started")
        return _svg(fig)


def _bucket_labels(bounds: Sequence[float]) -> list[str]:
    labels = [f"≤{_seconds(b)}" for b in bounds]
    if bounds and math.isinf(bounds[-1]):
        labels[-1] = f">{_seconds(bounds[-2])}" if len(bounds) > 1 else "all"
    return labels


def _seconds(s: float) -> str:
    return f"{s / 60:g} min" if s >= 120 else f"{s:g} s"


def histogram_plot(name: str, title: str, histogram: Histogram) -> str | None:
    """A histogram's buckets as bars, labelled by their bounds. None when it holds no observation."""
    if not histogram.total:
        return None
    counts = list(histogram.counts)
    if histogram.bounds and math.isinf(histogram.bounds[-1]) and not counts[-1]:
        counts, bounds = counts[:-1], histogram.bounds[:-1]  # an empty overflow bucket says nothing
    else:
        bounds = histogram.bounds
    with _figure(name, height=2.4) as (fig, (ax,)):
        bars = ax.bar(range(len(counts)), counts, color=BLUE, width=0.8)
        for n, bar in enumerate(bars):
            _mark(bar, name, n)
        ax.set_xticks(range(len(counts)), _bucket_labels(bounds), rotation=40, ha="right", fontsize=8)
        ax.grid(axis="x", visible=False)
        ax.set_title(f"{title} ({histogram.total:,} in all)", fontsize=9)
        ax.set_ylabel("count")
        return _svg(fig)


def _hbars(name: str, title: str, labels: Sequence[str], values: Sequence[float], *, colour: str,
           fmt: Callable[[float], str]) -> str:
    with _figure(name, height=max(1.4, 0.32 * len(values) + 0.8)) as (fig, (ax,)):
        rows = list(range(len(values)))[::-1]  # the first (largest) on top
        bars = ax.barh(rows, values, color=colour, height=0.7)
        for n, bar in enumerate(bars):
            _mark(bar, name, n)
        ax.set_yticks(rows, [clipped(label, LABEL) for label in labels])
        ax.bar_label(bars, [fmt(v) for v in values], padding=3, fontsize=8)
        ax.set_xlim(0, max(values, default=0) * 1.25 or 1)
        ax.grid(axis="y", visible=False)
        ax.set_title(title, fontsize=9)
        return _svg(fig)


def failures_plot(groups: Sequence[FailureGroup]) -> str | None:
    """Failed (item, analysis) counts by error code, most frequent on top. None without failures."""
    shown = [g for g in groups if g.count]
    if not shown:
        return None
    return _hbars("failures", "failed analyses by error code", [g.code for g in shown],
                  [g.count for g in shown], colour=RED, fmt=lambda v: f"{v:,.0f}")


def cost_plot(rows: Sequence[CapabilityRow], currency: str) -> str | None:
    """Estimated cost by capability. None when nothing cost anything."""
    priced = sorted((r for r in rows if r.cost > 0), key=lambda r: -r.cost)
    if not priced:
        return None
    return _hbars("cost", f"estimated cost by capability ({clipped(currency, 8)})", [r.name for r in priced],
                  [r.cost for r in priced], colour=ORANGE, fmt=lambda v: f"{v:,.2f}")


def history_plot(sessions: Sequence[Session], zone: tzinfo | None) -> str | None:
    """Recent sessions side by side: analyses done (succeeded and failed), failures, cost and
    duration per session. A session killed before it recorded its end has no duration bar and
    a cross instead. None without sessions."""
    if not sessions:
        return None
    x = list(range(len(sessions)))
    labels = [datetime.fromtimestamp(s.started, zone).strftime("%m-%d %H:%M") for s in sessions]
    with _figure("history", rows=4, height=1.25, sharex=True) as (fig, axes):
        done, failed, cost, duration = axes
        ok = [s.succeeded for s in sessions]
        bad = [s.failed for s in sessions]
        _bars(done, x, ok, GREEN, "history-items", label="succeeded")
        _bars(done, x, bad, RED, "history-items-failed", bottom=ok, label="failed")
        done.set_title("analyses done per session", fontsize=9, pad=3)
        done.legend(loc="upper right", bbox_to_anchor=(1.0, 1.45), ncol=2)
        _bars(failed, x, bad, RED, "history-failed")
        failed.set_title("failed", fontsize=9, pad=3)
        _bars(cost, x, [s.cost for s in sessions], ORANGE, "history-cost")
        cost.set_title("estimated cost", fontsize=9, pad=3)
        minutes = [(s.duration_s or 0.0) / 60 for s in sessions]
        _bars(duration, x, minutes, BLUE, "history-duration")
        killed = [i for i, s in enumerate(sessions) if s.duration_s is None]
        if killed:
            crosses = duration.plot(killed, [0] * len(killed), "x", color=RED, ms=6, mew=1.5, clip_on=False)
            _mark(crosses[0], "history-killed", 0)
        duration.set_title("duration (minutes)" + ("; ×: killed, no end recorded" if killed else ""), fontsize=9,
                           pad=3)
        for ax in axes:
            ax.grid(axis="x", visible=False)
            ax.set_ylim(bottom=0)
        step = max(1, math.ceil(len(x) / 12))  # at most a dozen dates under the bars
        duration.set_xticks(x[::step], labels[::step], rotation=40, ha="right", fontsize=7)
        return _svg(fig)


def _bars(ax: Axes, x: list[int], values: Sequence[float], colour: str, name: str, *,
          bottom: Sequence[float] | None = None, label: str | None = None) -> None:
    bars = ax.bar(x, values, color=colour, width=0.75, bottom=bottom, label=label)
    for n, bar in enumerate(bars):
        if bar.get_height():
            _mark(bar, name, n)
