"""Counts, usage, estimated cost and throughput of a run: what progress shows and the summary says.

`RunStats` is fed by the runner (requests, retries, 429s, queue and in-flight gauges) and by
the sink (every written line), so its done/failed counts are exactly the lines in the file.
`summarize()` turns it, or a checkpoint read after the fact, into the summary dict that is
printed and written as JSON next to the results.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config.pricing import estimate_cost
from ..core.capabilities import CAPABILITIES
from ..core.results import ResultLine
from .distribution import DURATION_BOUNDS, LAG_BOUNDS, Distribution


@dataclass
class CapabilityStats:
    queued: int = 0  # waiting in the capability's queue
    in_flight: int = 0  # submitted and not yet finished
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # already done in an earlier run
    requests: int = 0
    rate_limited: int = 0  # 429 answers
    retries: int = 0
    submits: int = 0  # create/detect requests accepted
    polls: int = 0
    #: Seconds requests waited for the QPS pacer, and how many waited, per lane ("submit", "poll").
    paced_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    paced: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    #: service id -> usage key -> total
    usage: defaultdict[str, defaultdict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    #: service id -> successful items (for per-request prices)
    successes_by_service: Counter[str] = field(default_factory=Counter)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed


class RunStats:
    """Live counters of one run, per capability."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.caps: dict[str, CapabilityStats] = {name: CapabilityStats() for name in CAPABILITIES}
        self.rejected = 0
        self._clock = clock
        self.started = clock()
        self.finished: float | None = None
        self.ambiguous = 0  # creates re-sent after a timeout or dropped connection: possibly billed twice
        self.uploaded_bytes = 0  # local files' bytes sent to OSS this session
        # Manifest records read and the (item, analysis) units they held: progress scales the
        # manifest's line count by their ratio to estimate the lines a run will write.
        self.records_read = 0
        self.units_read = 0
        self.read_complete = False  # the reader has read the whole manifest: units_read is final
        # For the report's histograms: seconds from submit to result line, and how long a task's
        # end may have gone unnoticed (the poller's `on_lag`).
        self.durations = Distribution(DURATION_BOUNDS)
        self.detection_lag = Distribution(LAG_BOUNDS)

    def units_per_record(self) -> float:
        return self.units_read / self.records_read if self.records_read else 1.0

    def elapsed(self) -> float:
        return (self.finished or self._clock()) - self.started

    # ---- hooks -----------------------------------------------------------------------------
    def on_response(self, capability: str, status: int) -> None:
        stats = self.caps[capability]
        stats.requests += 1
        if status == 429:
            stats.rate_limited += 1

    def on_retry(self, capability: str) -> None:
        self.caps[capability].retries += 1

    def on_uploaded(self, n: int) -> None:
        self.uploaded_bytes += n

    def on_ambiguous(self, capability: str) -> None:
        self.ambiguous += 1

    def on_line(self, line: ResultLine) -> None:
        """Called by the sink for every line made durable."""
        record(self.caps[line.capability], line.status.value, line.service_id, line.usage, line.error_code)
        if line.elapsed_s is not None:
            self.durations.add(line.elapsed_s)

    def on_detected(self, lag: float) -> None:
        """A poll saw a task's end `lag` seconds after the last poll that saw it PENDING."""
        self.detection_lag.add(lag)

    def totals(self) -> CapabilityStats:
        total = CapabilityStats()
        for s in self.caps.values():
            for name in ("succeeded", "failed", *LIVE_FIELDS):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.errors.update(s.errors)
        return total


class Finished(Protocol):
    """What the counts need of a finished (item, analysis): a checkpoint's outcome row, say."""

    @property
    def capability(self) -> str: ...
    @property
    def service_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def usage(self) -> Mapping[str, Any] | None: ...


def record(stats: CapabilityStats, status: str, service_id: str, usage: Mapping[str, Any] | None,
           error_code: str | None) -> None:
    """Count one finished (item, analysis) in `stats`."""
    if status == "SUCCESS":
        stats.succeeded += 1
        stats.successes_by_service[service_id] += 1
        for key, value in (usage or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                stats.usage[service_id][key] += value
    else:
        stats.failed += 1
        stats.errors[error_code or "Unknown"] += 1


CountRow = tuple[str, str, str, "str | None", int]  # capability, service id, status, error code, count
UsageRow = tuple[str, str, str, float]  # capability, service id, usage key, total (successes only)


def stats_from_totals(counts: Iterable[CountRow], usage: Iterable[UsageRow]) -> dict[str, CapabilityStats]:
    """Per-capability counts and usage from grouped rows (the checkpoint's `totals()`)."""
    caps: dict[str, CapabilityStats] = {name: CapabilityStats() for name in CAPABILITIES}
    for capability, service_id, status, code, n in counts:
        stats = caps.setdefault(capability, CapabilityStats())
        if status == "SUCCESS":
            stats.succeeded += n
            stats.successes_by_service[service_id] += n
        else:
            stats.failed += n
            stats.errors[code or "Unknown"] += n
    for capability, service_id, key, total in usage:
        caps.setdefault(capability, CapabilityStats()).usage[service_id][key] += total
    return caps


def stats_from_outcomes(outcomes: Iterable[Finished]) -> dict[str, CapabilityStats]:
    """Per-capability counts and usage, one finished (item, analysis) at a time."""
    caps: dict[str, CapabilityStats] = {name: CapabilityStats() for name in CAPABILITIES}
    for o in outcomes:
        record(caps.setdefault(o.capability, CapabilityStats()), o.status, o.service_id, o.usage, o.error_code)
    return caps


#: Sessions shorter than this (wall seconds) report no request rate against the limit.
MIN_RATE_SECONDS = 5.0

LIVE_FIELDS = ("queued", "in_flight", "skipped", "requests", "rate_limited", "retries", "submits", "polls")


def with_live_counters(totals: dict[str, CapabilityStats],
                       live: Mapping[str, CapabilityStats]) -> dict[str, CapabilityStats]:
    """Outcome counts from the checkpoint, traffic counters from this session."""
    for name, stats in live.items():
        target = totals.setdefault(name, CapabilityStats())
        for field_name in LIVE_FIELDS:
            setattr(target, field_name, getattr(stats, field_name))
    return totals


def summarize(caps: Mapping[str, CapabilityStats], *, prices: Mapping[str, Mapping[str, float]],
              elapsed: float | None, qps: Mapping[str, float] | None = None,
              rejected: int = 0, outcome: str | None = None, extra: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
    """The summary: per capability and in total. JSON-safe."""
    per_cap: dict[str, Any] = {}
    total_cost = 0.0
    unpriced_all: list[str] = []
    for name, s in caps.items():
        if not (s.done or s.skipped or s.requests or s.in_flight or s.queued):
            continue
        usage = {sid: dict(counter) for sid, counter in s.usage.items()}
        cost, unpriced = estimate_cost(usage, s.successes_by_service, prices)
        total_cost += cost
        unpriced_all += unpriced
        entry: dict[str, Any] = {
            "succeeded": s.succeeded,
            "failed": s.failed,
            "failed_by_code": dict(s.errors),
            "usage": _merge_usage(usage),
            "estimated_cost": cost,
        }
        if s.requests:
            entry.update(requests=s.requests, rate_limited=s.rate_limited, retries=s.retries,
                         polls=s.polls, submits=s.submits)
            # A rate over a few seconds says little (one burst of polls reads as "1.56 of the
            # limit"), so it is left out of short sessions.
            if elapsed and elapsed >= MIN_RATE_SECONDS and qps and name in qps:
                entry["request_rate"] = round(s.requests / elapsed, 3)
                entry["rate_vs_limit"] = round(s.requests / elapsed / qps[name], 3)
        if s.in_flight or s.queued:
            entry.update(in_flight=s.in_flight, queued=s.queued)
        if s.skipped:
            entry["skipped_already_done"] = s.skipped
        per_cap[name] = entry
    succeeded = sum(s.succeeded for s in caps.values())
    failed = sum(s.failed for s in caps.values())
    summary: dict[str, Any] = {
        "outcome": outcome,
        "succeeded": succeeded,
        "failed": failed,
        "rejected_lines": rejected,
        "estimated_cost": round(total_cost, 6),
        "cost_note": "estimate from the price table in the config; async tasks are billed on success only",
        "unpriced_services": sorted(set(unpriced_all)),
        "wall_time_s": round(elapsed, 3) if elapsed is not None else None,
        "capabilities": per_cap,
    }
    if extra:
        summary.update(extra)
    return summary


def _merge_usage(by_service: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    merged: defaultdict[str, float] = defaultdict(float)
    for usage in by_service.values():
        for key, value in usage.items():
            merged[key] += value
    return {k: round(v, 3) for k, v in merged.items()}


def format_summary(summary: Mapping[str, Any]) -> str:
    """A short human-readable rendering of `summarize()`'s dict."""
    lines = [
        f"outcome: {summary.get('outcome')}   succeeded {summary['succeeded']}   failed {summary['failed']}"
        f"   rejected lines {summary['rejected_lines']}   wall time {summary.get('wall_time_s')} s"
        f"   estimated cost {summary['estimated_cost']:.4f}",
    ]
    for name, c in summary["capabilities"].items():
        parts = [f"  {name:<20} ok {c['succeeded']:>6}  failed {c['failed']:>5}"]
        if c.get("failed_by_code"):
            parts.append("(" + ", ".join(f"{k} {v}" for k, v in sorted(c["failed_by_code"].items())) + ")")
        if "requests" in c:
            parts.append(f"requests {c['requests']} (429s {c['rate_limited']}, retries {c['retries']})")
        if "rate_vs_limit" in c:
            parts.append(f"rate {c['request_rate']}/s = {c['rate_vs_limit']:.2f} of limit")
        if c.get("usage"):
            parts.append("usage " + ", ".join(f"{k}={v:g}" for k, v in sorted(c["usage"].items())))
        parts.append(f"cost {c['estimated_cost']:.4f}")
        lines.append("  ".join(parts))
    if summary.get("unpriced_services"):
        lines.append(f"  no price configured for: {', '.join(summary['unpriced_services'])}")
    if summary.get("possible_double_billing"):
        lines.append(f"  possible double billing: {summary['possible_double_billing']} creates were sent again after "
                     "an answer that never came (the service may have billed each twice)")
    return "\n".join(lines)
