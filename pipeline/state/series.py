"""Time series a run records as it goes (`series` table), and its histograms (`histograms`).

A sample covers `span` seconds ending `t + span` seconds after its session's start and holds
counts, not rates, so merging two neighbours is exact: requests and 429s per QPS group, result
lines written, and the tasks in flight at its end (a gauge: merging keeps the larger, so a peak
stays visible). Rates are counts ÷ span, worked out by whoever reads them.

Bounded twice: a session keeps at most `MAX_SAMPLES` samples (past that, neighbours are merged
in pairs, `coarsen`, so a 10-hour run at 10 s per sample ends with a few hundred samples of
80 s); and only the last `SERIES_SESSIONS` sessions keep their series and histograms (older
sessions keep their row in the history).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .db import transaction

__all__ = ["MAX_SAMPLES", "SERIES_SESSIONS", "Buckets", "Sample", "SeriesStore", "coarsen"]

MAX_SAMPLES = 720
SERIES_SESSIONS = 20


@dataclass(frozen=True)
class Sample:
    """What happened in `span` seconds from `t` (seconds since the session's start)."""

    t: float
    span: float
    requests: Mapping[str, int] = field(default_factory=dict)  # by QPS group
    rate_limited: Mapping[str, int] = field(default_factory=dict)  # by QPS group
    results: int = 0
    in_flight: int = 0

    def merged(self, later: Sample) -> Sample:
        """This sample and the one right after it, as one."""
        return Sample(self.t, later.t + later.span - self.t, dict(Counter(self.requests) + Counter(later.requests)),
                      dict(Counter(self.rate_limited) + Counter(later.rate_limited)), self.results + later.results,
                      max(self.in_flight, later.in_flight))


#: (upper bounds in seconds, counts): `counts[i]` values fell in (bounds[i-1], bounds[i]]; one
#: more count than bounds, for the values above the last bound.
Buckets = tuple[tuple[float, ...], tuple[int, ...]]


def coarsen(samples: Sequence[Sample]) -> list[Sample]:
    """Neighbours merged in pairs (a last odd one stays as it is)."""
    out = [a.merged(b) for a, b in zip(samples[::2], samples[1::2], strict=False)]
    if len(samples) % 2:
        out.append(samples[-1])
    return out


class SeriesStore:
    """Reads and writes of the `series` and `histograms` tables."""

    def __init__(self, conn: sqlite3.Connection, *, max_samples: int = MAX_SAMPLES,
                 keep_sessions: int = SERIES_SESSIONS) -> None:
        self._conn = conn
        self._max = max_samples
        self._keep = keep_sessions

    def add(self, session: int, sample: Sample, histograms: Mapping[str, Buckets] | None = None) -> None:
        """Append `sample` to `session`'s series (merging neighbours past the bound) and replace its
        histograms, in one transaction."""
        with transaction(self._conn):
            self._conn.execute("INSERT OR REPLACE INTO series (session, t, sample) VALUES (?, ?, ?)",
                               (session, sample.t, _encode(sample)))
            (count,) = self._conn.execute("SELECT COUNT(*) FROM series WHERE session = ?", (session,)).fetchone()
            if count > self._max:
                merged = coarsen(self.samples(session))
                self._conn.execute("DELETE FROM series WHERE session = ?", (session,))
                self._conn.executemany("INSERT INTO series (session, t, sample) VALUES (?, ?, ?)",
                                       [(session, s.t, _encode(s)) for s in merged])
            for name, (bounds, counts) in (histograms or {}).items():
                self._conn.execute("INSERT OR REPLACE INTO histograms (session, name, bounds, counts) "
                                   "VALUES (?, ?, ?, ?)", (session, name, json.dumps(bounds), json.dumps(counts)))

    def forget_before(self, session: int) -> None:
        """Drop the series and histograms of all but the last `keep_sessions` sessions up to `session`."""
        floor = session - self._keep + 1
        with transaction(self._conn):
            self._conn.execute("DELETE FROM series WHERE session < ?", (floor,))
            self._conn.execute("DELETE FROM histograms WHERE session < ?", (floor,))

    def samples(self, session: int) -> list[Sample]:
        """`session`'s samples in time order; none for a state dir from before the series."""
        try:
            rows = self._conn.execute("SELECT t, sample FROM series WHERE session = ? ORDER BY t",
                                      (session,)).fetchall()
        except sqlite3.OperationalError:  # a read-only open of a state dir without the table
            return []
        return [_decode(t, text) for t, text in rows]

    def histograms(self, session: int) -> dict[str, Buckets]:
        """`session`'s histograms by name."""
        try:
            rows = self._conn.execute("SELECT name, bounds, counts FROM histograms WHERE session = ?",
                                      (session,)).fetchall()
        except sqlite3.OperationalError:
            return {}
        return {name: (tuple(json.loads(bounds)), tuple(json.loads(counts))) for name, bounds, counts in rows}


def _encode(sample: Sample) -> str:
    return json.dumps({"span": sample.span, "requests": sample.requests, "rate_limited": sample.rate_limited,
                       "results": sample.results, "in_flight": sample.in_flight}, separators=(",", ":"))


def _decode(t: float, text: str) -> Sample:
    raw = json.loads(text)
    return Sample(t=t, span=float(raw["span"]), requests=raw.get("requests") or {},
                  rate_limited=raw.get("rate_limited") or {}, results=int(raw.get("results") or 0),
                  in_flight=int(raw.get("in_flight") or 0))
