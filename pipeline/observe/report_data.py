"""What the HTML run report shows, as plain frozen data (the renderer is `html_report`).

The renderer takes one `ReportData` and reads nothing else (no state dir, no config, no
environment), so nothing it was not given, a secret least of all, can reach the file. Whoever
builds a `ReportData` (the `run` command at the end of a run, `report --state-dir`) fills it from
the summary, the run history and the time series in the state dir.

Times are epoch seconds (UTC); points of a time series are seconds since `ReportData.started`.
Every field that may be absent has a default, so a state dir from before the history existed is
a `ReportData` with `history=None` and `series=None`: the report says so and shows the summary.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..core.exit_codes import ExitCode
from ..core.outcome import NO_ITEMS

__all__ = [
    "CapabilityRow",
    "CatalogDelta",
    "FailureExample",
    "FailureGroup",
    "Failures",
    "GroupTraffic",
    "Histogram",
    "History",
    "OlderSessions",
    "Outcome",
    "Point",
    "ReportData",
    "Session",
    "TimeSeries",
    "Tone",
]

#: (seconds since the run's start, value)
Point = tuple[float, float]
#: How the outcome line is coloured: green, amber, red, or blue for a run still going.
Tone = Literal["ok", "warn", "bad", "live"]

#: Codes that mean "run it again and it goes on": amber, not red (README's exit-code table).
_WARN_CODES = frozenset({ExitCode.PARTIAL, ExitCode.INTERRUPTED})


@dataclass(frozen=True)
class Outcome:
    """How the run ended, in the exit-code table's terms.

    `exit_code` is None while the run is live; `words` is `RunOutcome`'s value ("completed",
    "completed with failures", "stopped") or "running"; `stop_reason` is `str(Stop)` when a stop
    ended the session ("interrupted: Ctrl-C").
    """

    exit_code: int | None
    words: str
    stop_reason: str | None = None

    @property
    def code(self) -> ExitCode | None:
        """The exit code as the enum; None while live or for a code this version does not know."""
        try:
            return None if self.exit_code is None else ExitCode(self.exit_code)
        except ValueError:
            return None

    @property
    def empty(self) -> bool:
        """Exit 1 because the catalog held no items (nothing failed, nothing rejected)."""
        return self.code is ExitCode.PARTIAL and self.stop_reason == NO_ITEMS

    @property
    def meaning(self) -> str:
        code = self.code
        if self.empty:
            return "finished, but the catalog held no items: nothing was sent"
        return code.meaning if code is not None else ("still running" if self.exit_code is None else "unknown")

    @property
    def advice(self) -> str:
        """What to do next: the exit-code table's advice, or what a live snapshot means."""
        if self.exit_code is None:
            return "the run is still going: this is a snapshot; open the report again when it has ended"
        code = self.code
        if self.empty:
            return "give the run a catalog with items (`validate SOURCE` says what it holds)"
        return code.advice if code is not None else f"exit code {self.exit_code} is not in this version's table"

    @property
    def tone(self) -> Tone:
        code = self.code
        if self.exit_code is None:
            return "live"
        if code is ExitCode.OK:
            return "ok"
        return "warn" if code in _WARN_CODES else "bad"


@dataclass(frozen=True)
class CapabilityRow:
    """One capability's line of the per-capability table (the summary's `capabilities` entry).

    `request_rate` is the rate achieved (requests/s, None when the session was too short to say,
    see `report.MIN_RATE_SECONDS`); `limit` is its QPS group's limit in requests/s.
    """

    name: str
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    requests: int = 0
    rate_limited: int = 0
    request_rate: float | None = None
    limit: float | None = None
    cost: float = 0.0

    @property
    def rate_vs_limit(self) -> float | None:
        if self.request_rate is None or not self.limit:
            return None
        return self.request_rate / self.limit


@dataclass(frozen=True)
class CatalogDelta:
    """How tonight's catalog differs from the last one, when the catalog work has counted it."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    vanished: int = 0


@dataclass(frozen=True)
class Session:
    """One session of the run history (one process from start to end, a resume included).

    `ended` is None for a session that never recorded its end (killed): the history then says
    how it was found at the next start, in `outcome` ("interrupted").
    """

    started: float
    ended: float | None
    outcome: str
    exit_code: int | None
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    rejected: int = 0
    cost: float = 0.0
    requests: int = 0
    rate_limited: int = 0
    catalog: CatalogDelta | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.ended is None else max(0.0, self.ended - self.started)


@dataclass(frozen=True)
class OlderSessions:
    """What a bounded history keeps of the sessions it no longer lists one by one."""

    count: int
    first_started: float
    last_started: float
    succeeded: int = 0
    failed: int = 0
    cost: float = 0.0


@dataclass(frozen=True)
class History:
    """The run history, oldest session first; `older` sums up what was folded away."""

    sessions: tuple[Session, ...]
    older: OlderSessions | None = None


@dataclass(frozen=True)
class GroupTraffic:
    """One QPS group's traffic over time: requests/s and 429s/s, against the group's limit."""

    group: str
    limit: float
    requests: tuple[Point, ...]
    rate_limited: tuple[Point, ...] = ()


@dataclass(frozen=True)
class TimeSeries:
    """What was recorded as the run went, every `step_s` seconds (downsampled for long runs:
    `downsample.downsample` bounds each series, and the renderer applies it again)."""

    step_s: float
    groups: tuple[GroupTraffic, ...]
    results: tuple[Point, ...] = ()  # result lines written per second
    in_flight: tuple[Point, ...] = ()  # tasks submitted and not finished


@dataclass(frozen=True)
class Histogram:
    """A distribution in buckets (seconds): `counts[i]` observations fell in
    (`bounds[i-1]`, `bounds[i]`]; the last bound may be `math.inf`. Not cumulative."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.counts):
            raise ValueError(f"a histogram needs one count per bound: {len(self.bounds)} bounds, "
                             f"{len(self.counts)} counts")
        if any(b <= a for a, b in itertools.pairwise(self.bounds)):
            raise ValueError("a histogram's bounds must increase")
        if any(c < 0 for c in self.counts):
            raise ValueError("a histogram's counts cannot be negative")

    @classmethod
    def of(cls, samples: Iterable[float], bounds: Iterable[float]) -> Histogram:
        """The histogram of `samples` over `bounds` (an observation above the last bound goes in
        an added `inf` bucket)."""
        edges = list(bounds)
        if not edges or edges[-1] != math.inf:
            edges.append(math.inf)
        counts = [0] * len(edges)
        for value in samples:
            counts[bisect.bisect_left(edges, value)] += 1
        return cls(tuple(edges), tuple(counts))

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class FailureExample:
    """One failed (item, analysis), as its result line has it."""

    id: str
    analysis: str
    message: str


@dataclass(frozen=True)
class FailureGroup:
    """The failures of one error code; `retried` is False for the codes `run --retry-failed`
    leaves alone (`state.resume.NOT_RETRIED_CODES`: they would fail the same way)."""

    code: str
    count: int
    examples: tuple[FailureExample, ...] = ()
    by_capability: Mapping[str, int] = field(default_factory=dict)
    retried: bool = True


@dataclass(frozen=True)
class Failures:
    """Failures by error code, most frequent first, and the command that sends them again.

    `retry_command` is shown as given: build it from the run's own arguments, never with a
    credential in it (a `--limiter` or `--pushgateway` URL with a password must be left out).
    """

    groups: tuple[FailureGroup, ...] = ()
    retry_command: str | None = None

    @property
    def total(self) -> int:
        return sum(g.count for g in self.groups)


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows. `title` names the run (the results file, say); `started` is
    when the run's (latest) session started, the origin of the time series."""

    title: str
    generated_at: float
    outcome: Outcome
    capabilities: tuple[CapabilityRow, ...]
    started: float | None = None
    wall_time_s: float | None = None
    live: bool = False
    currency: str = "CNY"
    rejected_lines: int = 0
    history: History | None = None
    series: TimeSeries | None = None
    durations: Histogram | None = None
    detection_lag: Histogram | None = None
    failures: Failures = field(default_factory=Failures)

    @property
    def cost(self) -> float:
        return sum(c.cost for c in self.capabilities)

    @property
    def succeeded(self) -> int:
        return sum(c.succeeded for c in self.capabilities)

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.capabilities)
