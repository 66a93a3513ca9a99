"""The run history: one row per session in the `sessions` table, kept across resumes and nights.

A session's row is written when it starts (outcome "running") and completed when it ends, with
its outcome, exit code, stop reason and what it did (items by status and by capability, cost,
requests and 429s). While it runs its counts are brought up to date now and then (`progress`),
so a session killed with `kill -9` keeps what it had done by its last update; the next session
to start finds its row still "running" (the state-dir lock says no other process can be writing
it) and records it as "interrupted". `catalog` is a JSON object of catalog delta counts (new,
changed, unchanged, vanished) that the catalog work fills in; NULL until then.

Bounded: past `MAX_SESSIONS` rows, the oldest are folded into the one `sessions_older` row
(how many, from when to when, and their totals), so nothing is dropped without a trace.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .db import transaction

__all__ = ["INTERRUPTED", "MAX_SESSIONS", "RUNNING", "HistoryStore", "OlderTotals", "SessionCounts",
           "SessionRow"]

#: Sessions listed one by one; older ones are folded into `sessions_older`.
MAX_SESSIONS = 1000
#: The outcome of a session that has not recorded its end, and of one found so by the next start.
RUNNING = "running"
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class SessionCounts:
    """What one session did: totals and `by_capability` ({capability: {succeeded, failed,
    skipped, requests, rate_limited, cost}})."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    rejected: int = 0
    cost: float = 0.0
    requests: int = 0
    rate_limited: int = 0
    by_capability: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionRow:
    """One session as the history keeps it; `ended` is None until it records its end."""

    id: int
    started: float
    ended: float | None
    outcome: str
    exit_code: int | None
    stop_reason: str | None
    counts: SessionCounts
    catalog: Mapping[str, int] | None = None


@dataclass(frozen=True)
class OlderTotals:
    """The sessions folded away: how many, the first and last start, and their totals."""

    count: int
    first_started: float
    last_started: float
    succeeded: int
    failed: int
    cost: float
    requests: int
    rate_limited: int


_COUNT_COLUMNS = ("succeeded", "failed", "skipped", "rejected", "cost", "requests", "rate_limited")
_SELECT = ("SELECT id, started, ended, outcome, exit_code, stop_reason, " + ", ".join(_COUNT_COLUMNS)
           + ", by_capability, catalog FROM sessions")


class HistoryStore:
    """Reads and writes of the `sessions` and `sessions_older` tables."""

    def __init__(self, conn: sqlite3.Connection, *, max_sessions: int = MAX_SESSIONS) -> None:
        self._conn = conn
        self._max = max_sessions

    def start(self, started: float) -> int:
        """A new session, "running" from `started`; sessions still "running" (killed) become
        "interrupted", and the oldest beyond the bound are folded. Returns its id."""
        with transaction(self._conn):
            self._conn.execute("UPDATE sessions SET outcome = ? WHERE outcome = ?", (INTERRUPTED, RUNNING))
            cursor = self._conn.execute("INSERT INTO sessions (started, outcome) VALUES (?, ?)", (started, RUNNING))
            self._fold()
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def progress(self, session: int, counts: SessionCounts) -> None:
        """What a running session has done so far (kept if it is killed)."""
        self._conn.execute(
            "UPDATE sessions SET " + ", ".join(f"{c} = ?" for c in _COUNT_COLUMNS) + ", by_capability = ? "
            "WHERE id = ?", (*_count_values(counts), json.dumps(counts.by_capability), session))

    def end(self, session: int, *, ended: float, outcome: str, exit_code: int, stop_reason: str | None,
            counts: SessionCounts) -> None:
        """The session's end: how it ended and what it did."""
        with transaction(self._conn):
            self.progress(session, counts)
            self._conn.execute("UPDATE sessions SET ended = ?, outcome = ?, exit_code = ?, stop_reason = ? "
                               "WHERE id = ?", (ended, outcome, exit_code, stop_reason, session))

    def set_catalog(self, session: int, delta: Mapping[str, int]) -> None:
        """The catalog delta counts of `session` (for the catalog work to fill in)."""
        self._conn.execute("UPDATE sessions SET catalog = ? WHERE id = ?", (json.dumps(dict(delta)), session))

    def sessions(self) -> list[SessionRow]:
        """Every session listed, oldest first; none for a state dir from before the history."""
        try:
            rows = self._conn.execute(_SELECT + " ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # a read-only open of a state dir without the table
            return []
        return [_row(r) for r in rows]

    def older(self) -> OlderTotals | None:
        """The totals of the sessions folded away, if any were."""
        try:
            row = self._conn.execute(
                "SELECT count, first_started, last_started, succeeded, failed, cost, requests, rate_limited "
                "FROM sessions_older WHERE id = 1").fetchone()
        except sqlite3.OperationalError:
            return None
        return OlderTotals(*row) if row else None

    def _fold(self) -> None:
        (count,) = self._conn.execute("SELECT COUNT(*) FROM sessions").fetchone()
        excess = count - self._max
        if excess <= 0:
            return
        ids = "SELECT id FROM sessions ORDER BY id LIMIT ?"
        row = self._conn.execute(
            "SELECT COUNT(*), MIN(started), MAX(started), COALESCE(SUM(succeeded), 0), COALESCE(SUM(failed), 0), "
            f"COALESCE(SUM(cost), 0), COALESCE(SUM(requests), 0), COALESCE(SUM(rate_limited), 0) FROM sessions "
            f"WHERE id IN ({ids})", (excess,)).fetchone()
        self._conn.execute(
            "INSERT INTO sessions_older (id, count, first_started, last_started, succeeded, failed, cost, requests, "
            "rate_limited) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "count = count + excluded.count, first_started = MIN(first_started, excluded.first_started), "
            "last_started = MAX(last_started, excluded.last_started), succeeded = succeeded + excluded.succeeded, "
            "failed = failed + excluded.failed, cost = cost + excluded.cost, "
            "requests = requests + excluded.requests, rate_limited = rate_limited + excluded.rate_limited", row)
        self._conn.execute(f"DELETE FROM sessions WHERE id IN ({ids})", (excess,))


def _count_values(counts: SessionCounts) -> tuple[Any, ...]:
    return tuple(getattr(counts, c) for c in _COUNT_COLUMNS)


def _row(r: tuple[Any, ...]) -> SessionRow:
    n = len(_COUNT_COLUMNS)
    values = dict(zip(_COUNT_COLUMNS, r[6:6 + n], strict=True))
    by_capability, catalog = r[6 + n], r[7 + n]
    counts = SessionCounts(**values, by_capability=_json_object(by_capability) or {})
    return SessionRow(id=r[0], started=r[1], ended=r[2], outcome=r[3], exit_code=r[4], stop_reason=r[5],
                      counts=counts, catalog=_json_object(catalog))


def _json_object(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
