"""The `jobs` table: one row per (item id, analysis) key (`core.job.job_key`), in one of three
states (`JobState`), and what it ended with once done.

- `submitted`: the service accepted the task and gave `task_id`; on resume it is polled,
  never submitted again (docs/design.md, invariant 2).
- `done`: its result line is in the results file, starting at byte `line_at`. Its outcome
  (status, error code, usage) is kept too, so `status` and the summary count without reading
  the results file.
- `retry`: put back in play after it was done: a FAILED item `run --retry-failed` reopened (its
  line is removed), or an item whose line a results file cut short no longer holds.

The column `id` holds the key (its name is the first version's, when a key was the item id).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from operator import itemgetter
from typing import Any, NamedTuple

from ..core.results import ItemStatus
from . import totals
from .db import transaction

__all__ = ["Accepted", "CountRow", "JobState", "JobStore", "Outcome", "PendingTask", "UsageRow"]

#: The error code of a task still pending when its poll timeout ran out: `--retry-failed` polls
#: it again under its task id instead of submitting it again (`engine.decisions.poll_timeout`).
POLL_TIMEOUT_CODE = "PollTimeout"

class Accepted(NamedTuple):
    """A task the service accepted, to be recorded as submitted (`JobStore.record_accepted`)."""

    key: str
    capability: str
    service_id: str
    task_id: str
    attempts: int
    resubmits: int = 0
    fingerprint: str | None = None


#: (capability, service id, status, error code, count) of done keys.
CountRow = tuple[str, str, ItemStatus, "str | None", int]
#: (capability, service id, usage key, total) over the successful done keys.
UsageRow = tuple[str, str, str, float]

_first = itemgetter(0)


class JobState(str, Enum):
    """Where a key is in its life in the checkpoint (the `jobs.state` column)."""

    SUBMITTED = "submitted"
    DONE = "done"
    RETRY = "retry"


@dataclass(frozen=True)
class PendingTask:
    """A key the store knows but has not finished: what resume needs to carry it on."""

    key: str
    state: JobState
    task_id: str | None
    submitted_at: float | None
    attempts: int
    resubmits: int
    error_code: str | None


@dataclass(frozen=True)
class Outcome:
    """What the store keeps of a finished (item, analysis) `key`. The result line itself lives
    in the results file, at byte `line_at`."""

    key: str
    capability: str
    service_id: str
    status: ItemStatus
    task_id: str | None
    error_code: str | None
    usage: dict[str, Any] | None
    elapsed: float | None
    attempts: int = 0
    line_at: int | None = None
    fingerprint: str | None = None  # what the line was computed from (`core.fingerprint`)
    source: str | None = None


class JobStore:
    """Reads and transitions of the `jobs` rows. Each write is its own transaction, or part of
    the caller's (`db.transaction`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        columns = {column[1] for column in conn.execute("PRAGMA table_info(jobs)")}
        # Rows the catalog found vanished are out of every count and view; a state dir from
        # before the catalog columns, opened read-only, has none.
        self._live = " AND vanished IS NULL" if "vanished" in columns else ""
        #: The session writing (`catalog.CatalogStore.begin_session`): each line marked done
        #: notes it, for `export --changes`.
        self.session = 0
        #: The read under way (`cursor.Cursor.pass_`): a row a session creates notes it as `seen`,
        #: so a key read before its row existed is not taken for vanished. None: no read yet.
        self.seen_pass: int | None = None

    # ---- resume ----------------------------------------------------------------------------
    def count_done(self) -> int:
        """Done, live keys: from the running totals (O(groups)), else counted."""
        try:
            return sum(row[4] for row in totals.read(self._conn)[0])
        except sqlite3.OperationalError:  # no running totals: an older file, read-only
            return int(self._conn.execute(f"SELECT COUNT(*) FROM jobs WHERE state = ?{self._live}",
                                          (JobState.DONE,)).fetchone()[0])

    def iter_done_keys(self) -> Iterator[str]:
        """Every done key, streamed (a resume reads a million of them: no row objects kept)."""
        return map(_first, self._conn.execute(f"SELECT id FROM jobs WHERE state = ?{self._live}", (JobState.DONE,)))

    def pending(self) -> dict[str, PendingTask]:
        """Every key not done, by key: tasks recorded as submitted (at most the in-flight cap of
        the last session), and keys put back in play (`retry`: up to every failure that
        `--retry-failed` reopened)."""
        rows = self._conn.execute(
            "SELECT id, state, task_id, submitted_at, attempts, resubmits, error_code FROM jobs WHERE state IN (?, ?)",
            (JobState.SUBMITTED, JobState.RETRY))  # through the state index: O(unfinished), not O(keys)
        return {r[0]: PendingTask(r[0], JobState(r[1]), *r[2:]) for r in rows}

    # ---- transitions -------------------------------------------------------------------------
    def record_submitted(self, key: str, capability: str, service_id: str, task_id: str, *,
                         attempts: int, resubmits: int = 0, fingerprint: str | None = None) -> float:
        """Durably note that the service accepted `key` as `task_id` (for the work of
        `fingerprint`, when known). Returns the time."""
        return self.record_accepted([Accepted(key, capability, service_id, task_id, attempts, resubmits,
                                              fingerprint)])

    def record_accepted(self, accepted: Iterable[Accepted]) -> float:
        """`record_submitted` for many tasks, in one transaction (a group commit). Returns the time."""
        now = time.time()
        rows = [(a.key, a.capability, a.service_id, JobState.SUBMITTED, a.task_id, now, a.attempts, a.resubmits,
                 a.fingerprint, self.seen_pass) for a in accepted]
        with transaction(self._conn):
            self._conn.executemany(
                "INSERT INTO jobs (id, capability, service_id, state, task_id, submitted_at, attempts, resubmits, "
                "fingerprint, seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state, task_id = excluded.task_id, "
                "capability = excluded.capability, service_id = excluded.service_id, "
                "submitted_at = excluded.submitted_at, attempts = jobs.attempts + excluded.attempts, "
                "resubmits = excluded.resubmits, status = NULL, error_code = NULL, "
                "fingerprint = COALESCE(excluded.fingerprint, jobs.fingerprint), "
                "seen = COALESCE(excluded.seen, jobs.seen)",
                rows)
        return now

    def mark_done(self, outcomes: Iterable[Outcome]) -> None:
        """Mark each outcome's key done with what it ended with (in the caller's transaction, if
        any: `Checkpoint.mark_done` moves the results file's recorded size in the same one)."""
        now = time.time()
        rows = [(o.key, o.capability, o.service_id, JobState.DONE, o.task_id, o.status, o.error_code,
                 json.dumps(o.usage) if o.usage is not None else None, o.elapsed, now, o.attempts, o.line_at,
                 o.fingerprint, o.source, self.session, self.seen_pass)
                for o in outcomes]
        with transaction(self._conn):
            # The line just written is the key's current one: it supersedes any earlier line of the
            # key (the row points at one line only), and the key is live again if it had vanished.
            self._conn.executemany(
                "INSERT INTO jobs (id, capability, service_id, state, task_id, status, error_code, usage, "
                "elapsed, finished_at, attempts, line_at, fingerprint, source, written, seen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state, task_id = excluded.task_id, "
                "capability = excluded.capability, service_id = excluded.service_id, "  # a changed service's price
                "status = excluded.status, error_code = excluded.error_code, usage = excluded.usage, "
                "elapsed = excluded.elapsed, finished_at = excluded.finished_at, "
                "attempts = MAX(jobs.attempts, excluded.attempts), line_at = excluded.line_at, "
                "fingerprint = COALESCE(excluded.fingerprint, jobs.fingerprint), "
                "source = COALESCE(excluded.source, jobs.source), written = excluded.written, vanished = NULL, "
                "seen = COALESCE(excluded.seen, jobs.seen)",
                rows)
            if self.seen_pass is not None:
                # A key with its line durable has no work left: its manifest line need not be read
                # again. Not outside a read (a crash's lines recovered at the start): the line is
                # read again instead, so the read notes the key seen.
                self._conn.executemany("DELETE FROM open_keys WHERE id = ?", ((row[0],) for row in rows))

    def reopen_failed(self, *, skip_codes: Iterable[str] = ()) -> list[str]:
        """Put FAILED keys back in play (`retry`) for `--retry-failed`, except those whose error
        code is in `skip_codes`; returns their keys. A `PollTimeout` keeps its task id, so it is
        polled, not submitted again."""
        skip = list(skip_codes)
        where = f"state = ? AND status = ?{self._live}"
        params: list[Any] = [JobState.DONE, ItemStatus.FAILED]
        if skip:  # an empty NOT IN ('') would also skip failures that have no error code
            where += f" AND COALESCE(error_code, '') NOT IN ({','.join('?' for _ in skip)})"
            params += skip
        with transaction(self._conn):
            keys = [r[0] for r in self._conn.execute(f"SELECT id FROM jobs WHERE {where}", params)]
            self._conn.execute(
                f"UPDATE jobs SET state = ?, task_id = CASE WHEN error_code = ? THEN task_id ELSE NULL END "
                f"WHERE {where}", [JobState.RETRY, POLL_TIMEOUT_CODE, *params])
        return keys

    def reset_to_pending(self, keys: Iterable[str]) -> tuple[int, int]:
        """Keys whose lines are not in the results file after all: run them again, polling the
        recorded task when there is one (`submitted`), else submitting (`retry`). Returns (to
        poll, to submit again)."""
        keys = list(keys)
        with transaction(self._conn):
            self._conn.executemany(
                "UPDATE jobs SET state = CASE WHEN task_id IS NULL THEN ? ELSE ? END, status = NULL, "
                "error_code = NULL WHERE id = ?", [(JobState.RETRY, JobState.SUBMITTED, k) for k in keys])
        repoll = sum(1 for k in keys if self._task_id(k))
        return repoll, len(keys) - repoll

    def _task_id(self, key: str) -> str | None:
        row = self._conn.execute("SELECT task_id FROM jobs WHERE id = ?", (key,)).fetchone()
        return row[0] if row else None

    # ---- where each line is in the results file ----------------------------------------------
    def done_line(self, key: str) -> tuple[bool, int | None]:
        """(whether `key` is done, where its line starts when known)."""
        row = self._conn.execute("SELECT line_at FROM jobs WHERE id = ? AND state = ?",
                                 (key, JobState.DONE)).fetchone()
        if row is None:
            return False, None
        return True, (int(row[0]) if row[0] is not None else None)

    def done_lines(self) -> Iterator[tuple[str, int | None]]:
        """(key, line start) of every done key, in key order, so an item's analyses come
        together (every key of an item starts with its id and the separator). Streams: the
        primary key's index gives the order, nothing is sorted in memory."""
        yield from self._conn.execute(f"SELECT id, line_at FROM jobs WHERE state = ?{self._live} ORDER BY id",
                                      (JobState.DONE,))

    def set_line_offsets(self, offsets: Iterable[tuple[int, str]]) -> None:
        """(line start, key) pairs: where lines are after the results file was rewritten or indexed."""
        with transaction(self._conn):
            self._conn.executemany("UPDATE jobs SET line_at = ? WHERE id = ?", offsets)

    # ---- read-only views for status and the summary ------------------------------------------
    def iter_keys(self, state: JobState, status: ItemStatus | None = None) -> Iterator[str]:
        """The keys in `state` (and, for done ones, of `status`), streamed: `status` over several
        state dirs counts each (item, analysis) once from these."""
        if status is None:
            return map(_first, self._conn.execute(f"SELECT id FROM jobs WHERE state = ?{self._live}", (state,)))
        return map(_first, self._conn.execute(f"SELECT id FROM jobs WHERE state = ? AND status = ?{self._live}",
                                              (state, status)))

    def keys_in_state(self, state: JobState) -> set[str]:
        return set(self.iter_keys(state))

    def outcomes(self) -> Iterator[Outcome]:
        """Every done key's outcome, one at a time (the summary's slow path, and tests)."""
        rows = self._conn.execute(
            "SELECT id, capability, service_id, status, task_id, error_code, usage, elapsed, attempts, line_at "
            f"FROM jobs WHERE state = ?{self._live}", (JobState.DONE,))
        for r in rows:
            yield Outcome(r[0], r[1], r[2], ItemStatus(r[3]), r[4], r[5], json.loads(r[6]) if r[6] else None,
                          r[7], r[8], r[9])

    def totals(self) -> tuple[list[CountRow], list[UsageRow]]:
        """Done keys grouped in SQL, so a summary of a million items costs no Python loop:
        (capability, service_id, status, error_code, count) rows and (capability, service_id,
        usage key, sum) rows of the successful ones. Without SQLite's JSON functions, the usage
        rows are summed in Python (the slow way, one outcome at a time). The running totals
        (`totals.py`) answer first, in O(groups); this scan is for a file from before them,
        opened read-only."""
        try:
            kept = totals.read(self._conn)
            return [(cap, sid, ItemStatus(status), code, n) for cap, sid, status, code, n in kept[0]], kept[1]
        except sqlite3.OperationalError:  # no such table: an older file, read-only
            pass
        counts = [(cap, service_id, ItemStatus(status), code, n) for cap, service_id, status, code, n in
                  self._conn.execute(
                      "SELECT capability, service_id, status, error_code, COUNT(*) FROM jobs "
                      f"WHERE state = ?{self._live} "
                      "GROUP BY capability, service_id, status, error_code", (JobState.DONE,))]
        live = self._live.replace("vanished", "j.vanished")
        try:
            usage = self._conn.execute(
                "SELECT j.capability, j.service_id, u.key, SUM(u.value) FROM jobs AS j, json_each(j.usage) AS u "
                f"WHERE j.state = ? AND j.status = ? AND j.usage IS NOT NULL{live} "
                "AND u.type IN ('integer', 'real') GROUP BY j.capability, j.service_id, u.key",
                (JobState.DONE, ItemStatus.SUCCESS)).fetchall()
        except sqlite3.OperationalError:  # no json_each in this SQLite
            sums: defaultdict[tuple[str, str, str], float] = defaultdict(float)
            for o in self.outcomes():
                if o.status is ItemStatus.SUCCESS:
                    for name, value in (o.usage or {}).items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            sums[(o.capability, o.service_id, name)] += value
            usage = [(*group, float(total)) for group, total in sums.items()]
        return counts, usage

    def counts(self) -> dict[str, dict[JobState | ItemStatus, int]]:
        """{capability: {JobState.SUBMITTED: n, JobState.RETRY: n, ItemStatus.SUCCESS: n,
        ItemStatus.FAILED: n}}: done keys by their status, the others by their state (the
        members are strings, so `counts()[cap]["submitted"]` reads the same)."""
        out: dict[str, dict[JobState | ItemStatus, int]] = {}
        try:  # done keys from the running totals, the others by the state index: O(groups + unfinished)
            done = [(cap, JobState.DONE.value, status, n) for cap, _, status, _, n in totals.read(self._conn)[0]]
            rows: Iterable[tuple[str, str, str | None, int]] = [*done, *self._conn.execute(
                f"SELECT capability, state, status, COUNT(*) FROM jobs WHERE state IN (?, ?){self._live} "
                "GROUP BY capability, state, status", (JobState.SUBMITTED, JobState.RETRY))]
        except sqlite3.OperationalError:  # no running totals: an older file, read-only
            rows = self._conn.execute(
                f"SELECT capability, state, status, COUNT(*) FROM jobs WHERE 1{self._live} "
                "GROUP BY capability, state, status")
        for cap, state, status, n in rows:
            job_state = JobState(state)
            group: JobState | ItemStatus = ItemStatus(status) if job_state is JobState.DONE else job_state
            by_cap = out.setdefault(cap, {})
            by_cap[group] = by_cap.get(group, 0) + n
        return out
