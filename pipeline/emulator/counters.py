"""What the emulator saw, so tests can prove what a client did.

``Counters.snapshot()`` (also served by ``GET /_emulator/counters``) returns::

    {
      "requests": {"POST image-analyze create": {"200": 3, "429": 1},
                   "GET image-analyze status": {"200": 9},
                   "POST image-object-detection detect": {"200": 2, "dropped": 1}, ...},
      "requests_total": 16,
      "throttled_total": 1,               # every 429 (window or burst)
      "throttled": {"image-analyze": 1},
      "max_window": {"image-analyze": 10, ...},          # accepted requests counted against
                                                          # the limit, busiest window
      "max_window_offered": {"image-analyze": 11, ...},  # same requests incl. the 429'd ones
      "window_seconds": 0.05,
      "submissions": {"<sha256>": 1, ...},  # accepted creates/detections per distinct body
      "duplicate_submissions": 0,           # sum of (count - 1) over bodies seen twice+
      "tasks_created": {"image-analyze": 3}, "tasks_created_total": 3,
      "tasks_by_status": {"PENDING": 0, "SUCCESS": 3, "FAILED": 0},  # known tasks, now
      "results_delivered": {"SUCCESS": 3, "FAILED": 0},  # distinct tasks whose final status
                                                         # a client has been sent
      "tasks_forgotten": 0,
      "faults": {"error_500": 0, "slow": 0, "dropped": 0, "burst_429": 0, "task_fail": 0,
                 "bad_body": 0},
      "first_offered_at": 1234.5,  # emulator clock (time.monotonic by default) of the first
                                   # request counted against a limit; null before any
      "accepted_span": {"image-analyze": {"first": 1234.5, "last": 1240.1, "count": 57}, ...},
                                   # per capability that had accepted counted requests: clock
                                   # times of the first and the last, and how many there were
      "detection_lag": {"count": 3, "p50": 0.12, "p95": 0.4, "max": 0.41},
                                   # per task whose final status a client was sent: the clock
                                   # time of that first answer minus the task's real end, in
                                   # clock (real) seconds; p50/p95/max are null before any
      "last_task_end_at": 1241.0,  # clock time of the latest real task end so far (tasks
                                   # created since the last reset); null before any
      "chained_chunks_matched": 1,     # summarization creates whose input.chunks were exactly
                                       # the chunks a segmentation of the same source returned
      "chained_chunks_mismatched": 0,  # ... whose chunks differed from them (answered 400)
      "chained_chunks_unchecked": 0,   # ... whose source was never segmented here, or absent
    }

A "submission" is a create (or detection) that was processed: it passed auth, limits, faults
and validation. Its key is :func:`submission_key` of the capability, service id and body.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

from .ratelimit import WindowPeak
from .settings import CAPABILITIES

FAULT_KINDS = ("error_500", "slow", "dropped", "burst_429", "task_fail", "bad_body")
CHAIN_OUTCOMES = ("matched", "mismatched", "unchecked")  # chunks.py: a summarization's chunks
LAG_PERCENTILES = (50, 95)  # reported as "p50", "p95" next to "max"


def percentile(sorted_values: list[float], pct: float) -> float:
    """The nearest-rank percentile of an ascending, non-empty list (an observed value, never interpolated)."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def lag_summary(lags: list[float]) -> dict[str, float | int | None]:
    """``{"count", "p50", "p95", "max"}`` of detection lags; the figures are None when there are none."""
    ordered = sorted(lags)
    summary: dict[str, float | int | None] = {"count": len(ordered)}
    for pct in LAG_PERCENTILES:
        summary[f"p{pct}"] = percentile(ordered, pct) if ordered else None
    summary["max"] = ordered[-1] if ordered else None
    return summary


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def submission_key(capability: str, service_id: str, body: Any) -> str:
    """sha256 of the canonical JSON of capability, service id and request body."""
    text = canonical_json({"capability": capability, "service_id": service_id, "body": body})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def route_name(method: str, capability: str, kind: str) -> str:
    """The key of a route in ``requests``, e.g. ``"POST image-analyze create"``."""
    return f"{method} {capability} {kind}"


class Counters:
    """Mutable tallies, owned by the event loop that serves the emulator."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self.reset()

    def reset(self) -> None:
        """Zero every count (tasks themselves are untouched)."""
        self.requests: dict[str, Counter[str]] = {}  # route -> status text -> n
        self.throttled: Counter[str] = Counter()  # capability -> 429s
        self.peak_accepted = {c: WindowPeak(self.window_seconds) for c in CAPABILITIES}
        self.peak_offered = {c: WindowPeak(self.window_seconds) for c in CAPABILITIES}
        self.submissions: Counter[str] = Counter()  # submission key -> accepted count
        self.tasks_created: Counter[str] = Counter()  # capability -> tasks
        self.results_delivered: Counter[str] = Counter()  # final status -> distinct tasks
        self.tasks_forgotten = 0
        self.faults: Counter[str] = Counter()  # fault kind -> times injected
        self.first_offered_at: float | None = None  # clock time of the first counted request
        self.accepted_span: dict[str, list[float]] = {}  # capability -> [first, last, count]
        self.detection_lags: list[float] = []  # per detected task: first final answer - real end
        self._pending_ends: list[float] = []  # heap: real end times of tasks not yet past
        self.last_task_end_at: float | None = None  # latest real end already past, as of the last look
        self.chained_chunks: Counter[str] = Counter()  # chunks.py outcome -> summarization creates

    def record_request(self, route: str, status: int | str) -> None:
        """Count one answer (an HTTP status, or ``"dropped"``) on ``route``."""
        self.requests.setdefault(route, Counter())[str(status)] += 1

    def record_offered(self, capability: str, now: float) -> None:
        """A request that counts against the limit arrived (before the limiter decides)."""
        self.peak_offered[capability].observe(now)
        if self.first_offered_at is None:
            self.first_offered_at = now

    def record_accepted(self, capability: str, now: float) -> None:
        """A request that counts against the limit was let through by the limiter."""
        self.peak_accepted[capability].observe(now)
        span = self.accepted_span.get(capability)
        if span is None:
            self.accepted_span[capability] = [now, now, 1]
        else:
            span[1] = now
            span[2] += 1

    def record_throttled(self, capability: str) -> None:
        """Count a 429 for ``capability``."""
        self.throttled[capability] += 1

    def record_submission(self, key: str) -> int:
        """Count an accepted submission; returns how many times this body was accepted."""
        self.submissions[key] += 1
        return self.submissions[key]

    def record_fault(self, kind: str) -> None:
        """Count one injected fault of ``kind`` (one of FAULT_KINDS)."""
        self.faults[kind] += 1

    def record_task_end(self, ends_at: float) -> None:
        """A task was created that will really end at clock time ``ends_at``."""
        heapq.heappush(self._pending_ends, ends_at)

    def record_detection(self, ended_at: float, seen_at: float) -> None:
        """A client was first sent the final status of a task that ended at ``ended_at``."""
        self.detection_lags.append(seen_at - ended_at)

    def _advance_ends(self, now: float) -> float | None:
        """Move real ends that are past ``now`` out of the heap; returns the latest of them."""
        pending = self._pending_ends
        while pending and pending[0] <= now:
            self.last_task_end_at = heapq.heappop(pending)  # popped in order: the last is the latest
        return self.last_task_end_at

    def snapshot(self, tasks_by_status: Mapping[str, int], now: float) -> dict[str, Any]:
        """A JSON-ready copy of every count at clock time ``now`` (shape in the module docstring)."""
        requests = {route: dict(statuses) for route, statuses in sorted(self.requests.items())}
        return {
            "requests": requests,
            "requests_total": sum(sum(s.values()) for s in requests.values()),
            "throttled_total": sum(self.throttled.values()),
            "throttled": dict(self.throttled),
            "max_window": {c: p.peak for c, p in self.peak_accepted.items()},
            "max_window_offered": {c: p.peak for c, p in self.peak_offered.items()},
            "window_seconds": self.window_seconds,
            "submissions": dict(self.submissions),
            "duplicate_submissions": sum(n - 1 for n in self.submissions.values() if n > 1),
            "tasks_created": dict(self.tasks_created),
            "tasks_created_total": sum(self.tasks_created.values()),
            "tasks_by_status": dict(tasks_by_status),
            "results_delivered": {s: self.results_delivered[s] for s in ("SUCCESS", "FAILED")},
            "tasks_forgotten": self.tasks_forgotten,
            "faults": {kind: self.faults[kind] for kind in FAULT_KINDS},
            "first_offered_at": self.first_offered_at,
            "accepted_span": {c: {"first": s[0], "last": s[1], "count": int(s[2])}
                              for c, s in self.accepted_span.items()},
            "detection_lag": lag_summary(self.detection_lags),
            "last_task_end_at": self._advance_ends(now),
            **{f"chained_chunks_{o}": self.chained_chunks[o] for o in CHAIN_OUTCOMES},
        }
