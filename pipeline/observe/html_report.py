"""The run report as one self-contained HTML file: `render_report(ReportData) -> str`.

The page is a Jinja2 template (`templates/report.html.j2`, autoescaped: every id, message and
error code from the run is escaped, so an id `<script>` is text) with the plots inlined as SVG
(`report_charts`). It loads nothing from anywhere: no script at all, no font, no stylesheet, no
image but the inline SVG; so it opens offline, with JavaScript off, and from a mail attachment.
CSS alone makes it readable on a phone (the plots scroll sideways in their frame rather than
shrinking their text away), printable, and dark when the reader's system is.

Jinja2 and matplotlib are the optional `report` extra; without them, or when one of them fails to
import (a broken install), `render_report` raises `ReportUnavailable` (exit 2), whose message names
the module and says how to install or repair it.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.echo import clipped
from ..core.errors import UsageError
from .report_data import FailureGroup, ReportData, Session

if TYPE_CHECKING:
    from markupsafe import Markup

__all__ = ["EXTRA", "MAX_CODES", "MAX_EXAMPLES", "MAX_SESSIONS", "ReportUnavailable", "available", "render_report",
           "report_ours", "require"]

#: What to install for the report: named in the error when it is missing.
EXTRA = "pip install 'opensearch-media-pipeline[report]'"
_NEEDS = ("jinja2", "matplotlib")
#: Everything the report imports from the extra: a broken install fails here, named, not mid-draw.
_IMPORTS = ("jinja2", "markupsafe", "matplotlib", "matplotlib.figure", "matplotlib.ticker")
#: The characters of an import error's text the message carries.
ERROR_CHARS = 300
#: Bounds on what one report lists, whatever the run: the error codes and examples of each, the
#: sessions of the history, the characters of an id and of a message.
MAX_CODES = 12
MAX_EXAMPLES = 3
MAX_SESSIONS = 30
ID_CHARS = 80
MESSAGE_CHARS = 300


#: Every report carries this line in its head (the template's): how a report is known before it is replaced.
GENERATOR = b'<meta name="generator" content="opensearch-media-pipeline">'
_SNIFF = 4096


def report_ours(path: Path) -> str | None:
    """None when the existing file at `path` is a report this pipeline wrote (it may be replaced),
    otherwise why it may not be, in words that say how to go on (`state.paths.Target.ours`)."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
    if head.lstrip().lower().startswith(b"<!doctype html") and GENERATOR in head:
        return None
    return ("already exists and is not a run report this pipeline wrote: move it away or give a path of its own; "
            "a report replaces only an earlier report")


class ReportUnavailable(UsageError):
    """The `report` extra (Jinja2, matplotlib) is not installed, or does not import (exit 2: the
    command cannot run as the machine is; the message says what to install)."""


def available() -> bool:
    """Whether the `report` extra is installed (without importing it)."""
    return _missing() == []


def _missing() -> list[str]:
    missing = []
    for name in _NEEDS:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a half-imported or broken package: `require` names its error
            found = True
        if not found:
            missing.append(name)
    return missing


def require() -> None:
    """Import the `report` extra, or raise `ReportUnavailable`: naming what is not installed and
    the extra to install, or the module that fails to import and its (bounded) error."""
    missing = _missing()
    if missing:
        raise ReportUnavailable(f"the HTML report needs the optional `report` extra ({', '.join(missing)} "
                                f"not installed): {EXTRA}")
    for name in _IMPORTS:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any error at import is a broken install, said as such
            raise ReportUnavailable(
                f"the HTML report needs the optional `report` extra, but {name} fails to import "
                f"({type(exc).__name__}: {clipped(str(exc), ERROR_CHARS)}): repair the install, e.g. "
                f"{EXTRA.replace('pip install', 'pip install --force-reinstall', 1)}") from None


@dataclass(frozen=True)
class Plots:
    """The inline SVG of each plot the data allows; None where there is nothing to draw."""

    requests: Markup | None
    in_flight: Markup | None
    durations: Markup | None
    detection_lag: Markup | None
    failures: Markup | None
    cost: Markup | None
    history: Markup | None


def render_report(data: ReportData, *, zone: tzinfo | None = None) -> str:
    """The report of `data` as an HTML document. Times are shown in `zone` (the machine's local
    time zone when None). Raises `ReportUnavailable` without the `report` extra."""
    require()
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("pipeline.observe", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=lambda t: _when(t, zone), duration=_duration, money=_money, ratio=_ratio,
                       clip=clipped, code_spans=_code_spans)
    codes = _top_codes(data.failures.groups)
    sessions = data.history.sessions[-MAX_SESSIONS:] if data.history else ()
    return env.get_template("report.html.j2").render(
        data=data, plots=_plots(data, codes, sessions, zone), codes=codes,
        codes_left=data.failures.groups[MAX_CODES:], sessions=tuple(reversed(sessions)),
        sessions_left=len(data.history.sessions) - len(sessions) if data.history else 0,
        MAX_EXAMPLES=MAX_EXAMPLES, ID_CHARS=ID_CHARS, MESSAGE_CHARS=MESSAGE_CHARS)


def _top_codes(groups: Sequence[FailureGroup]) -> tuple[FailureGroup, ...]:
    """The most frequent error codes first, at most `MAX_CODES` of them."""
    return tuple(sorted(groups, key=lambda g: -g.count)[:MAX_CODES])


def _plots(data: ReportData, codes: Sequence[FailureGroup], sessions: Sequence[Session],
           zone: tzinfo | None) -> Plots:
    from markupsafe import Markup

    from . import report_charts as charts

    def safe(svg: str | None) -> Markup | None:
        # matplotlib's XML writer escaped every text it wrote: the SVG is markup, not text.
        return Markup(svg) if svg is not None else None

    series = data.series
    return Plots(
        requests=safe(charts.requests_plot(series)) if series else None,
        in_flight=safe(charts.in_flight_plot(series)) if series else None,
        durations=safe(charts.histogram_plot("durations", "task duration, submit to result", data.durations))
        if data.durations else None,
        detection_lag=safe(charts.histogram_plot("detection-lag", "detection lag, task end to its result",
                                                 data.detection_lag)) if data.detection_lag else None,
        failures=safe(charts.failures_plot(codes)),
        cost=safe(charts.cost_plot(data.capabilities, data.currency)),
        history=safe(charts.history_plot(sessions, zone)),
    )


def _when(epoch: float | None, zone: tzinfo | None) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, zone).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z").strip()


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60):02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _money(value: float) -> str:
    return f"{value:,.4f}" if value < 1 else f"{value:,.2f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _code_spans(text: str) -> Markup:
    """`text` escaped, its `backquoted` parts as <code>: the exit-code table's advice reads as in README."""
    from markupsafe import Markup, escape

    parts = str(text).split("`")
    return Markup("").join(Markup("<code>%s</code>") % part if i % 2 else escape(part)
                           for i, part in enumerate(parts))
