"""Durable run state in `--state-dir`: one SQLite file in WAL mode, and the one object the rest
of the pipeline talks to about it (`Checkpoint`).

The file holds, each kept by a store of its own that shares the connection:
- the jobs, one row per (item id, analysis) key (`jobs`: submitted, done or retry);
- the run's identity and session facts (`meta`) and its manifests (`manifests`);
- the OSS objects local files went to, per item id (`uploads`);
- the spend ledger's reservations and settlements, per key (`ledger`);
- the catalog's fingerprints, keys seen and vanished, over the jobs rows (`catalog`).
- the run history, one row per session (`history`), and the time series and histograms the
  last sessions recorded (`series`).
What each table holds and how an older file is upgraded: `schema`.

The results file and this store are kept consistent by one rule: a batch of lines is appended
and flushed to the file first, then marked done here together with the file's new size
(`sink_offset`) and the batch's costs, in one transaction (`mark_done`). After a crash, lines
past `sink_offset` are re-read and marked done, and a torn last line is cut off (see
`resume.reconcile`). Every write is a transaction, so `kill -9` at any instant leaves a
consistent store.

`key` is always a (item id, analysis) key (`core.job.job_key`); `item_id` an item's id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import StateError
from ..core.results import ItemStatus
from .catalog import CatalogStore
from .cursor import CursorStore
from .db import connect, transaction
from .history import HistoryStore, OlderTotals, SessionCounts, SessionRow
from .jobs import Accepted, CountRow, JobState, JobStore, Outcome, PendingTask, UsageRow
from .ledger import LedgerStore, StaleReservation
from .manifests import ManifestStore
from .meta import MetaKey, MetaStore
from .schema import EARLIER_VERSION, KEY_FORMAT, SCHEMA, create, missing_columns, upgrade
from .series import Buckets, Sample, SeriesStore
from .uploads import UploadRecord, UploadStore

__all__ = ["KEY_FORMAT", "Accepted", "Buckets", "Checkpoint", "JobState", "MetaKey", "OlderTotals", "Outcome",
           "PendingTask", "Sample", "SessionCounts", "SessionRow", "UploadRecord"]


class Checkpoint:
    """The state store of one run. Open with `Checkpoint.open(state_dir)`; `close()` is safe twice."""

    DB_NAME = "checkpoint.sqlite3"

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._jobs = JobStore(conn)
        self._meta = MetaStore(conn)
        self._manifests = ManifestStore(conn)
        self._uploads = UploadStore(conn)
        self._ledger = LedgerStore(conn)
        #: The catalog's side of the jobs rows (fingerprints, keys seen, vanished): `catalog.py`.
        self.catalog = CatalogStore(conn)
        self._history = HistoryStore(conn)
        self._series = SeriesStore(conn)
        self.session: int | None = None  # this process's session in the history, once started
        #: How far each source was read, and the keys read with work left (`cursor.py`).
        self.cursors = CursorStore(conn)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r})"

    @classmethod
    def open(cls, state_dir: str | Path, *, read_only: bool = False) -> Checkpoint:
        """Open (or, unless read-only, create and upgrade) the store; a corrupt file raises `StateError`."""
        state_dir = Path(state_dir)
        path = state_dir / cls.DB_NAME
        if read_only and not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}: is this a state dir of a run?")
        try:
            if not read_only:
                state_dir.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    create(path)
            conn = connect(path, read_only=read_only)
            try:
                if not read_only:
                    conn.executescript(SCHEMA)
                conn.execute("SELECT COUNT(*) FROM jobs").fetchone()  # fails now, not later, on a bad file
                if not read_only:
                    upgrade(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"{path} is not a readable checkpoint ({exc}): the state dir is damaged; move it away to start "
                "the run afresh (lines already in the results file stay there)") from None
        return cls(conn, path)

    def require_today(self) -> None:
        """Refuse (`StateError`, exit 2) a file of an earlier version that lacks today's columns:
        a read-only open cannot upgrade it, and what reads the catalog needs them."""
        missing = missing_columns(self._conn)
        if missing:
            raise StateError(f"{EARLIER_VERSION} (its checkpoint has no {', '.join(missing)} column yet)")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    # ---- the run's identity and session facts (meta) ---------------------------------------
    def get_meta(self, name: str) -> str | None:
        """The meta value `name` (a `MetaKey`), or None when it was never set."""
        return self._meta.get(name)

    def set_meta(self, name: str, value: str) -> None:
        self._meta.set(name, value)

    def flag(self, name: MetaKey) -> bool:
        """Whether the meta flag `name` is set."""
        return self._meta.flag(name)

    def set_flag(self, name: MetaKey, on: bool) -> None:
        self._meta.set_flag(name, on)

    def sink_offset(self) -> int:
        """Bytes of the results file whose lines are marked done."""
        return self._meta.sink_offset()

    def last_stop(self) -> dict[str, Any] | None:
        """How the last session stopped (`outcome.Stop.to_record()`), or None (it finished)."""
        return self._meta.last_stop()

    def set_last_stop(self, record: dict[str, Any] | None) -> None:
        self._meta.set_last_stop(record)

    def bind(self, meta: Mapping[str, str], manifest: str, stop: dict[str, Any]) -> None:
        """A new state dir's identity (`meta`: its results file, creation time, shard), its first
        manifest and how its last session stopped (unfinished, until it records its end), in one
        transaction: a kill -9 leaves all of them or none, never a run without a manifest."""
        with transaction(self._conn):
            for name, value in meta.items():
                self._meta.set(name, value)
            self._manifests.add(manifest)
            self._meta.set_last_stop(stop)

    def begin_session(self, *, resumes: bool = False, force: str | None = None) -> int:
        """Count a new session (a run of `run`): the lines it marks done note its number.
        `resumes` and `force`: see `CatalogStore.begin_session`."""
        self._jobs.session = self.catalog.begin_session(resumes=resumes, force=force)
        return self._jobs.session

    def drop_cursor(self, source: str) -> None:
        """Forget where `source` was read to (its next read starts from the beginning)."""
        with transaction(self._conn):
            self.cursors.drop(source)

    def set_read(self, read: int | None) -> None:
        """The read under way (`cursor.Cursor.pass_`): rows created from now on note it as `seen`."""
        self._jobs.seen_pass = read

    # ---- the run's manifests -------------------------------------------------------------------
    def manifests(self) -> list[str]:
        """The manifests of this run, oldest first (the last is the current one)."""
        return self._manifests.names()

    def add_manifest(self, manifest: str) -> None:
        """`manifest` joins the run's manifests and becomes the current one."""
        self._manifests.add(manifest)

    def save_manifest_counts(self, manifest: str, *, rejected: int, items: int | None,
                             shared: int | None = None) -> None:
        """A manifest's rejected lines and items as a session saw them (`ManifestStore.save_counts`)."""
        self._manifests.save_counts(manifest, rejected=rejected, items=items, shared=shared)

    def retire_joined_manifests(self, catalog: str) -> None:
        """After vanished was decided by a complete read of `catalog` (`ManifestStore.retire_joined`)."""
        self._manifests.retire_joined(catalog)

    def set_empty(self, manifest: str, empty: bool) -> None:
        """Whether a manifest, read to its end, held no item at all (for any shard)."""
        self._manifests.set_empty(manifest, empty)

    def catalog_empty(self) -> bool:
        """Every manifest of the run was read to its end and held no item: nothing to succeed."""
        return self._manifests.catalog_empty()

    def rejected_lines(self) -> int:
        """Rejected lines over every manifest of the run."""
        return self._manifests.rejected_lines()

    def item_count(self) -> int | None:
        """Distinct (item, analysis) units over every manifest; None until each was read to its end."""
        return self._manifests.item_count()

    # ---- jobs: resume ------------------------------------------------------------------------
    def count_done(self) -> int:
        return self._jobs.count_done()

    def iter_done_keys(self) -> Iterator[str]:
        """Every done key, streamed."""
        return self._jobs.iter_done_keys()

    def iter_done_ids(self) -> Iterator[str]:
        """`iter_done_keys` under its first name (it yields keys, not item ids); kept while
        engine/ calls it."""
        return self._jobs.iter_done_keys()

    def pending(self) -> dict[str, PendingTask]:
        """Every key not done, by key (`JobStore.pending`)."""
        return self._jobs.pending()

    # ---- jobs: transitions ---------------------------------------------------------------------
    def record_submitted(self, key: str, capability: str, service_id: str, task_id: str, *,
                         attempts: int, resubmits: int = 0, fingerprint: str | None = None) -> float:
        """Durably note that the service accepted `key` as `task_id` (the work of `fingerprint`). Returns the time."""
        return self._jobs.record_submitted(key, capability, service_id, task_id, attempts=attempts,
                                           resubmits=resubmits, fingerprint=fingerprint)

    def record_accepted(self, accepted: Iterable[Accepted]) -> float:
        """`record_submitted` for many tasks in one transaction (a group commit). Returns the time."""
        return self._jobs.record_accepted(accepted)

    def mark_done(self, outcomes: Iterable[Outcome], sink_offset: int,
                  costs: Iterable[tuple[str, float]] = ()) -> None:
        """Mark a batch of keys done and move the results file's recorded size, in one
        transaction; `costs` (key, settled cost) replace those keys' spend reservations."""
        try:
            with transaction(self._conn):
                self._ledger.settle(costs)
                self._jobs.mark_done(outcomes)
                self._meta.set(MetaKey.SINK_OFFSET, str(sink_offset))
        except BaseException:
            self._ledger.forget_totals()  # the rollback undid the settlement its totals counted
            raise

    def reopen_failed(self, *, skip_codes: Iterable[str] = ()) -> list[str]:
        """Put FAILED keys back in play for `--retry-failed`; returns their keys.

        Their lines must then be removed from the results file (`resume.drop_lines`) before the
        run writes new ones. A `PollTimeout` keeps its task id, so it is polled, not resubmitted.
        """
        return self._jobs.reopen_failed(skip_codes=skip_codes)

    def reset_to_pending(self, keys: Iterable[str]) -> tuple[int, int]:
        """Keys whose lines are not in the results file after all: run them again. Returns (to
        poll, to submit again)."""
        return self._jobs.reset_to_pending(keys)

    # ---- jobs: where each line is in the results file ----------------------------------------
    def done_line(self, key: str) -> tuple[bool, int | None]:
        """(whether `key` is done, where its line starts when known)."""
        return self._jobs.done_line(key)

    def done_lines(self) -> Iterator[tuple[str, int | None]]:
        """(key, line start) of every done key, in key order (`JobStore.done_lines`)."""
        return self._jobs.done_lines()

    def set_line_offsets(self, offsets: Iterable[tuple[int, str]]) -> None:
        """(line start, key) pairs: where lines are after the results file was rewritten or indexed."""
        self._jobs.set_line_offsets(offsets)

    # ---- jobs: read-only views for status and the summary ------------------------------------
    def iter_keys(self, state: JobState, status: ItemStatus | None = None) -> Iterator[str]:
        """The keys in `state` (and, for done ones, of `status`), streamed."""
        return self._jobs.iter_keys(state, status)

    def keys_in_state(self, state: JobState) -> set[str]:
        return self._jobs.keys_in_state(state)

    def outcomes(self) -> Iterator[Outcome]:
        """Every done key's outcome, one at a time."""
        return self._jobs.outcomes()

    def totals(self) -> tuple[list[CountRow], list[UsageRow]]:
        """Done keys' counts and successful usage, grouped in SQL (`JobStore.totals`)."""
        return self._jobs.totals()

    def counts(self) -> dict[str, dict[JobState | ItemStatus, int]]:
        """{capability: {state or, once done, status: count}} (`JobStore.counts`)."""
        return self._jobs.counts()

    # ---- uploads (per item id: an item's analyses share its one source) ----------------------
    def record_upload(self, item_id: str, bucket: str, object_key: str, size: int, sha256: str, *,
                      mtime_ns: int | None = None) -> None:
        """Durably note the OSS object holding item `item_id`'s local file."""
        self._uploads.record(item_id, bucket, object_key, size, sha256, mtime_ns=mtime_ns)

    def upload_record(self, item_id: str) -> UploadRecord | None:
        """What `record_upload` noted for item `item_id`, if anything."""
        return self._uploads.get(item_id)

    def uploaded(self, item_id: str) -> tuple[str, str] | None:
        """(bucket, object key) of the object item `item_id`'s file was uploaded to, if it was."""
        record = self._uploads.get(item_id)
        return (record.bucket, record.key) if record is not None else None

    # ---- the spend ledger ----------------------------------------------------------------------
    def reserve(self, key: str, amount: float, cap: float | None, *, settled: float | None = None) -> bool:
        """Reserve `amount` for submitting `key` unless settled + reserved would pass `cap`
        (`settled`: the run's, when the caller knows it; `LedgerStore.reserve`)."""
        return self._ledger.reserve(key, amount, cap, settled=settled)

    def reserved_of(self, key: str) -> float:
        """What is reserved for `key` now (0 when nothing is)."""
        return self._ledger.reserved_of(key)

    def spend(self) -> tuple[float, float]:
        """(settled, reserved) over the whole run."""
        return self._ledger.spend()

    def stale_reservations(self) -> list[StaleReservation]:
        """Reservations no accepted task stands behind (`LedgerStore.stale_reservations`)."""
        return self._ledger.stale_reservations()

    def clear_reservations(self, *, settle: Iterable[tuple[str, float]], release: Iterable[str]) -> None:
        """In one transaction: settle done keys at their cost, and drop the reservations of `release`."""
        self._ledger.clear_reservations(settle=settle, release=release)

    def highest_costs(self, prices: Mapping[str, Mapping[str, float]]) -> dict[tuple[str, str], float]:
        """The highest cost so far, by `prices`, of a successful key per (capability, service id)."""
        return self._ledger.highest_costs(prices)

    # ---- the run history and time series -------------------------------------------------------
    def start_session(self, started: float) -> int:
        """Record this process's session as running from `started` (a session still "running"
        is one that was killed: it becomes "interrupted"); the last sessions keep their series."""
        self.session = self._history.start(started)
        self._series.forget_before(self.session)
        return self.session

    def record_progress(self, sample: Sample, histograms: Mapping[str, Buckets], counts: SessionCounts) -> None:
        """One step of this session's time series, its histograms so far and its counts so far."""
        if self.session is None:
            raise StateError("no session started: call start_session first")
        with transaction(self._conn):
            self._series.add(self.session, sample, histograms)
            self._history.progress(self.session, counts)

    def end_session(self, *, ended: float, outcome: str, exit_code: int, stop_reason: str | None,
                    counts: SessionCounts) -> None:
        """How this session ended and what it did (nothing when no session was started)."""
        if self.session is not None:
            self._history.end(self.session, ended=ended, outcome=outcome, exit_code=exit_code,
                              stop_reason=stop_reason, counts=counts)

    def set_session_catalog(self, delta: Mapping[str, int], session: int | None = None) -> None:
        """The catalog delta counts (new, changed, unchanged, vanished) of `session` (default: this one)."""
        target = session if session is not None else self.session
        if target is None:
            raise StateError("no session started: call start_session first")
        self._history.set_catalog(target, delta)

    def history(self) -> tuple[list[SessionRow], OlderTotals | None]:
        """The sessions listed, oldest first, and the totals of those folded away."""
        return self._history.sessions(), self._history.older()

    def samples(self, session: int) -> list[Sample]:
        """`session`'s time series (empty when it recorded none or is no longer kept)."""
        return self._series.samples(session)

    def histograms(self, session: int) -> dict[str, Buckets]:
        """`session`'s histograms by name."""
        return self._series.histograms(session)

    @property
    def in_transaction(self) -> bool:
        """Whether a write is under way (one cut short by a cancellation is rolled back, not added to)."""
        return self._conn.in_transaction

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read in the block sees the store as it was at its first read: one consistent
        snapshot of a live run (SQLite's WAL keeps it for a reader's transaction)."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.commit()  # ends the read transaction (a no-op outside one)
