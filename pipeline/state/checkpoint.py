"""Durable job state in `--state-dir`: SQLite in WAL mode.

What is stored, per (item id, analysis) key (`job.job_key`; the `id` column holds the key):
- `submitted`: the service accepted the task and gave `task_id`; on resume it is polled,
  never submitted again (docs/design.md, invariant 2).
- `done`: its result line is in the results file. Its outcome (status, error code, usage)
  is kept too, so `status` and the summary read counts without scanning the results.
- `retry`: a failed item that `run --retry-failed` put back in play (its line was removed).

The results file and this store are kept consistent by one rule: a line is appended and
flushed to the file first, then marked done here together with the file's new size
(`sink_offset`). After a crash, lines past `sink_offset` are re-read and marked done, and a
torn last line is cut off (see `resume.reconcile`). Every write here is its own transaction,
so `kill -9` at any instant leaves a consistent store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..core.errors import StateError
from .schema import KEY_FORMAT, SCHEMA, Outcome, PendingTask, UploadRecord, upgrade
from .spend_store import SpendStore

__all__ = ["KEY_FORMAT", "Checkpoint", "Outcome", "PendingTask"]

class Checkpoint(SpendStore):
    """The state store of one run. Open with `Checkpoint.open(state_dir)`; `close()` is safe twice.
    The spend ledger's methods (`reserve`, `spend`, …) come from `checkpoint_spend.SpendStore`."""

    DB_NAME = "checkpoint.sqlite3"

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn  # autocommit mode; transactions are explicit
        self.path = path
        self._totals: list[float] | None = None  # [settled, reserved], read lazily, then kept

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r})"

    @classmethod
    def open(cls, state_dir: str | Path, *, read_only: bool = False) -> Checkpoint:
        """Open (or, unless read-only, create) the store; a corrupt file raises `StateError`."""
        try:
            return cls._open(Path(state_dir), read_only=read_only)
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"{Path(state_dir) / cls.DB_NAME} is not a readable checkpoint ({exc}): the state dir is "
                "damaged; move it away to start the run afresh (lines already in the results file stay "
                "there)") from None

    @classmethod
    def _open(cls, state_dir: Path, *, read_only: bool) -> Checkpoint:
        path = state_dir / cls.DB_NAME
        if read_only:
            if not path.exists():
                raise FileNotFoundError(f"no checkpoint at {path}: is this a state dir of a run?")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("SELECT COUNT(*) FROM jobs").fetchone()  # fails now, not later, on a bad file
            return cls(conn, path)
        state_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives process crashes (kill -9); only an OS crash or power
        # loss can drop the last transactions, which then replay as resubmits/re-polls.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(SCHEMA)
        conn.execute("SELECT COUNT(*) FROM jobs").fetchone()
        upgrade(conn)
        return cls(conn, path)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    # ---- run identity --------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ---- the run's manifests, their counts, and how the last session stopped -------------
    def manifests(self) -> list[str]:
        """The manifests of this run, oldest first (a state dir from before `--append` has one)."""
        raw = self.get_meta("manifests") or self.get_meta("manifest") or ""
        return [m for m in raw.split("\n") if m]

    def add_manifest(self, key: str) -> None:
        """`key` joins the run's manifests and becomes the current one."""
        self.set_meta("manifests", "\n".join([*self.manifests(), key]))
        self.set_meta("manifest", key)

    def save_manifest_counts(self, key: str, *, rejected: int, items: int | None,
                             shared: int | None = None) -> None:
        """A manifest's rejected lines and items, as a session that read it saw them. `items`
        None: the session stopped part-way, so its rejects are a lower bound. `shared`: of its
        items, those an earlier manifest of the run already holds (given by the session that
        joined it with `--append`, the only one that can tell them apart)."""
        if items is None:
            rejected = max(rejected, int(self.get_meta(f"rejected:{key}") or 0))
        else:
            self.set_meta(f"items:{key}", str(items))
        if shared is not None:
            self.set_meta(f"shared:{key}", str(max(shared, int(self.get_meta(f"shared:{key}") or 0))))
        self.set_meta(f"rejected:{key}", str(rejected))

    def set_empty(self, key: str, empty: bool) -> None:
        """Whether a manifest, read to its end, held no item at all (for any shard)."""
        self.set_meta(f"empty:{key}", "1" if empty else "0")

    def catalog_empty(self) -> bool:
        """Every manifest of the run was read to its end and held no item: nothing to succeed."""
        manifests = self.manifests()
        return bool(manifests) and all(self.get_meta(f"empty:{m}") == "1" for m in manifests)

    def rejected_lines(self) -> int:
        """Rejected lines over every manifest of the run (they count in its outcome)."""
        return sum(int(self.get_meta(f"rejected:{m}") or 0) for m in self.manifests())

    def item_count(self) -> int | None:
        """Distinct valid (item, analysis) units over every manifest of the run (a unit repeated
        by an appended manifest counts once); None until each was read to its end."""
        manifests = self.manifests()
        counts = [self.get_meta(f"items:{m}") for m in manifests]
        if not counts or not all(counts):
            return None
        shared = sum(int(self.get_meta(f"shared:{m}") or 0) for m in manifests)
        return max(sum(int(n) for n in counts if n) - shared, 0)

    def last_stop(self) -> dict[str, Any] | None:
        """How the last session stopped (`outcome.Stop.to_record()`), or None (it finished)."""
        try:
            record = json.loads(self.get_meta("last_stop") or "null")
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def set_last_stop(self, record: dict[str, Any] | None) -> None:
        self.set_meta("last_stop", json.dumps(record))

    # ---- resume --------------------------------------------------------------------------
    def count_done(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0])

    def iter_done_ids(self) -> Iterator[str]:
        yield from (row[0] for row in self._conn.execute("SELECT id FROM jobs WHERE state = 'done'"))

    def pending(self) -> dict[str, PendingTask]:
        """Every unfinished job the store knows (bounded by the in-flight cap of past runs)."""
        rows = self._conn.execute(
            "SELECT id, state, task_id, submitted_at, attempts, resubmits, error_code "
            "FROM jobs WHERE state != 'done'"
        )
        return {r[0]: PendingTask(*r) for r in rows}

    # ---- transitions ---------------------------------------------------------------------
    def record_submitted(self, job_id: str, capability: str, service_id: str, task_id: str, *,
                         attempts: int, resubmits: int = 0) -> float:
        """Durably note that the service accepted `job_id` as `task_id`. Returns the time."""
        now = time.time()
        self._conn.execute(
            "INSERT INTO jobs (id, capability, service_id, state, task_id, submitted_at, attempts, resubmits) "
            "VALUES (?, ?, ?, 'submitted', ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET state = 'submitted', task_id = excluded.task_id, "
            "submitted_at = excluded.submitted_at, attempts = jobs.attempts + excluded.attempts, "
            "resubmits = excluded.resubmits, status = NULL, error_code = NULL",
            (job_id, capability, service_id, task_id, now, attempts, resubmits),
        )
        return now

    def mark_done(self, outcomes: Iterable[Outcome], sink_offset: int,
                  costs: Iterable[tuple[str, float]] = ()) -> None:
        """Mark a batch of items done and move the results-file offset, in one transaction;
        `costs` (id, settled cost) replace those items' spend reservations."""
        now = time.time()
        costs = list(costs)
        with self._transaction():
            if costs:
                self._settle(costs)
            self._conn.executemany(
                "INSERT INTO jobs (id, capability, service_id, state, task_id, status, error_code, usage, "
                "elapsed, finished_at, attempts, line_at) VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = 'done', task_id = excluded.task_id, "
                "status = excluded.status, error_code = excluded.error_code, usage = excluded.usage, "
                "elapsed = excluded.elapsed, finished_at = excluded.finished_at, "
                "attempts = MAX(jobs.attempts, excluded.attempts), line_at = excluded.line_at",
                [
                    (o.id, o.capability, o.service_id, o.task_id, o.status, o.error_code,
                     json.dumps(o.usage) if o.usage is not None else None, o.elapsed, now, o.attempts, o.line_at)
                    for o in outcomes
                ],
            )
            self.set_meta("sink_offset", str(sink_offset))

    # ---- where each line is in the results file ------------------------------------------
    def done_line(self, key: str) -> tuple[bool, int | None]:
        """(whether `key` is done, where its line starts when known)."""
        row = self._conn.execute("SELECT state, line_at FROM jobs WHERE id = ?", (key,)).fetchone()
        if row is None or row[0] != "done":
            return False, None
        return True, (int(row[1]) if row[1] is not None else None)

    def done_lines(self) -> Iterator[tuple[str, int | None]]:
        """(key, line start) of every done key, in key order, so an item's analyses come
        together (every key of an item starts with its id and the separator). Streams: the
        primary key's index gives the order, nothing is sorted in memory."""
        yield from self._conn.execute("SELECT id, line_at FROM jobs WHERE state = 'done' ORDER BY id")

    def set_line_offsets(self, offsets: Iterable[tuple[int, str]]) -> None:
        """(line start, key) pairs: where lines are after the results file was rewritten or indexed."""
        with self._transaction():
            self._conn.executemany("UPDATE jobs SET line_at = ? WHERE id = ?", offsets)

    # ---- uploads (per item id: an item's analyses share its one source) -------------------
    def record_upload(self, job_id: str, bucket: str, key: str, size: int, sha256: str, *,
                      mtime_ns: int | None = None) -> None:
        """Durably note the OSS object holding `job_id`'s local file (of `size` bytes, modified
        at `mtime_ns` when it was hashed)."""
        with self._transaction():
            self._conn.execute("INSERT OR REPLACE INTO uploads (id, bucket, key, size, sha256) VALUES (?, ?, ?, ?, ?)",
                               (job_id, bucket, key, size, sha256))
            self._conn.execute("DELETE FROM upload_stamps WHERE id = ?", (job_id,))
            if mtime_ns is not None:
                self._conn.execute("INSERT INTO upload_stamps (id, mtime_ns) VALUES (?, ?)", (job_id, mtime_ns))

    def upload_record(self, job_id: str) -> UploadRecord | None:
        """What `record_upload` noted for `job_id`, if anything."""
        row = self._conn.execute(
            "SELECT u.bucket, u.key, u.size, u.sha256, s.mtime_ns FROM uploads u "
            "LEFT JOIN upload_stamps s ON s.id = u.id WHERE u.id = ?", (job_id,)).fetchone()
        return UploadRecord(str(row[0]), str(row[1]), int(row[2]), str(row[3]),
                            None if row[4] is None else int(row[4])) if row else None

    def uploaded(self, job_id: str) -> tuple[str, str] | None:
        """(bucket, key) of the object `job_id`'s file was uploaded to, if it was."""
        row = self._conn.execute("SELECT bucket, key FROM uploads WHERE id = ?", (job_id,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def sink_offset(self) -> int:
        value = self.get_meta("sink_offset")
        return int(value) if value is not None else 0

    def reopen_failed(self, *, skip_codes: Iterable[str] = ()) -> list[str]:
        """Put FAILED items back in play for `--retry-failed`; returns their ids.

        Their lines must then be removed from the results file (`resume.drop_lines`) before the
        run writes new ones. A `PollTimeout` keeps its task id, so it is polled, not resubmitted.
        """
        skip = list(skip_codes)
        where = "state = 'done' AND status = 'FAILED'"
        if skip:  # an empty NOT IN ('') would also skip failures that have no error code
            where += f" AND COALESCE(error_code, '') NOT IN ({','.join('?' for _ in skip)})"
        with self._transaction():
            ids = [r[0] for r in self._conn.execute(f"SELECT id FROM jobs WHERE {where}", skip)]
            self._conn.execute(
                "UPDATE jobs SET state = 'retry', task_id = CASE WHEN error_code = 'PollTimeout' "
                f"THEN task_id ELSE NULL END WHERE {where}", skip)
        return ids

    def iter_keys(self, state: str, status: str | None = None) -> Iterator[str]:
        """The keys in `state` (and, for done ones, of `status`), streamed: `status` over several
        state dirs counts each (item, analysis) once from these."""
        if status is None:
            yield from (r[0] for r in self._conn.execute("SELECT id FROM jobs WHERE state = ?", (state,)))
        else:
            yield from (r[0] for r in self._conn.execute(
                "SELECT id FROM jobs WHERE state = ? AND status = ?", (state, status)))

    def ids_in_state(self, state: str) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT id FROM jobs WHERE state = ?", (state,))}

    def reset_to_pending(self, ids: Iterable[str]) -> tuple[int, int]:
        """Items whose lines are not in the results file after all: run them again, polling
        the recorded task when there is one. Returns (to poll, to submit again)."""
        ids = list(ids)
        with self._transaction():
            self._conn.executemany(
                "UPDATE jobs SET state = CASE WHEN task_id IS NULL THEN 'retry' ELSE 'submitted' END, "
                "status = NULL, error_code = NULL WHERE id = ?", [(i,) for i in ids])
        repoll = sum(1 for i in ids if self._task_id(i))
        return repoll, len(ids) - repoll

    def _task_id(self, job_id: str) -> str | None:
        row = self._conn.execute("SELECT task_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    # ---- read-only views for status and the summary --------------------------------------
    def outcomes(self) -> Iterator[Outcome]:
        rows = self._conn.execute(
            "SELECT id, capability, service_id, status, task_id, error_code, usage, elapsed, attempts "
            "FROM jobs WHERE state = 'done'")
        for r in rows:
            yield Outcome(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else None, r[7], r[8])

    def totals(self) -> tuple[list[tuple[str, str, str, str | None, int]], list[tuple[str, str, str, float]]]:
        """Finished items grouped in SQL, so a summary of a million items costs no Python loop:
        (capability, service_id, status, error_code, count) rows and (capability, service_id,
        usage key, sum) rows of the successful ones. Without SQLite's JSON functions, the usage
        rows are summed in Python (the slow way, one outcome at a time)."""
        counts = self._conn.execute(
            "SELECT capability, service_id, status, error_code, COUNT(*) FROM jobs WHERE state = 'done' "
            "GROUP BY capability, service_id, status, error_code").fetchall()
        try:
            usage = self._conn.execute(
                "SELECT j.capability, j.service_id, u.key, SUM(u.value) FROM jobs AS j, json_each(j.usage) AS u "
                "WHERE j.state = 'done' AND j.status = 'SUCCESS' AND j.usage IS NOT NULL "
                "AND u.type IN ('integer', 'real') GROUP BY j.capability, j.service_id, u.key").fetchall()
        except sqlite3.OperationalError:  # no json_each in this SQLite
            sums: defaultdict[tuple[str, str, str], float] = defaultdict(float)
            for o in self.outcomes():
                if o.status == "SUCCESS":
                    for key, value in (o.usage or {}).items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            sums[(o.capability, o.service_id, key)] += value
            usage = [(*group, float(total)) for group, total in sums.items()]
        return counts, usage

    def counts(self) -> dict[str, dict[str, int]]:
        """{capability: {"submitted": n, "retry": n, "SUCCESS": n, "FAILED": n}}."""
        out: dict[str, dict[str, int]] = {}
        for cap, state, status, n in self._conn.execute(
            "SELECT capability, state, status, COUNT(*) FROM jobs GROUP BY capability, state, status"
        ):
            key = status if state == "done" else state
            out.setdefault(cap, {})[key] = out.get(cap, {}).get(key, 0) + n
        return out

    # ---- plumbing ------------------------------------------------------------------------
    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> None:
            self.conn.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: Any, *_: Any) -> None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _transaction(self) -> Checkpoint._Tx:
        return Checkpoint._Tx(self._conn)
