"""The catalog's side of the `jobs` rows: what each key was computed from, which keys this
session's read found, and which ones vanished.

- `lookup(keys)`: what the checkpoint knows of a batch of keys (`Known`), one query per batch
  (`BATCH_KEYS` at a time), never one per key.
- `apply(...)`: one transaction per batch of decisions: keys seen (`jobs.seen`: the read that
  found them, so memory stays flat however large the catalog, and a read resumed past an
  unchanged prefix still counts that prefix's keys found), fingerprints adopted by
  rows from before fingerprints, keys restored, and keys superseded (a changed key goes back in
  play, `retry`, with its new fingerprint: its old line is no longer current).
- `vanish()`: after a complete read, every live key the read did not find is marked vanished by
  this session (never billed; out of the current view, counts and exports).
- the session number (meta `session`), counted up by each run (`begin_session`), which the
  lines a session writes note (`written`) for `export --changes`; and the first session of the
  run under way (meta `run_began`: a session that resumes an unfinished one belongs to its run),
  so that a night interrupted and resumed is one run to `export --changes` and to `--force`
  (meta `forced_from`: lines a forced run's earlier sessions wrote are not forced again).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from ..core.job import KEY_SEP
from ..core.results import ItemStatus
from .cursor import Cursor, CursorStore
from .db import transaction
from .jobs import JobState
from .meta import MetaStore

#: The meta key of what superseded lines counted and used (`CatalogStore.superseded_totals`).
SUPERSEDED_TOTALS = "superseded_totals"

__all__ = ["BATCH_KEYS", "SESSION_KEY", "CatalogStore", "Known"]

#: Keys per lookup query (under SQLite's oldest limit of 999 variables).
BATCH_KEYS = 500
#: The meta key of the last session's number.
SESSION_KEY = "session"
#: The meta key of the last complete session's catalog counts (JSON).
LAST_CATALOG_KEY = "last_catalog"
#: A state column's value to its `JobState` (a dict lookup: the enum's call is slower, per key).
_STATES = {state.value: state for state in JobState}
#: The meta key of the first session of the run under way (its sessions resume one another).
RUN_BEGAN_KEY = "run_began"
#: The meta key of a forced run's first session and what it forces (JSON {"session", "scope"}).
FORCED_FROM_KEY = "forced_from"


class Known(NamedTuple):
    """What the checkpoint holds of one key (a tuple: one is built per key a catalog reads,
    and a frozen dataclass costs three times as much to build)."""

    state: JobState
    fingerprint: str | None
    vanished: int | None
    line_at: int | None
    written: int | None = None  # the session that wrote its current line


class CatalogStore:
    """Reads and writes of the catalog's columns (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._meta = MetaStore(conn)

    def session(self) -> int:
        """The number of the last session begun (0: none yet)."""
        return int(self._meta.get(SESSION_KEY) or 0)

    def begin_session(self, *, resumes: bool = False, force: str | None = None) -> int:
        """Count a new session; returns its number. `resumes`: the last session did not finish,
        so this one carries on its run (which keeps its first session); `force`: what this
        session forces (None: nothing), the same as the forced session it resumes or not."""
        with transaction(self._conn):
            number = self.session() + 1
            self._meta.set(SESSION_KEY, str(number))
            began = self._meta.get(RUN_BEGAN_KEY)
            if not resumes or began is None:
                # A state dir from before this record, resumed: its run began at the latest with
                # the unfinished session before this one.
                began = str(number - 1 if resumes and number > 1 else number)
            self._meta.set(RUN_BEGAN_KEY, began)
            forced = _json_dict(self._meta.get(FORCED_FROM_KEY))
            if force is None:
                self._conn.execute("DELETE FROM meta WHERE key = ?", (FORCED_FROM_KEY,))
            elif not (resumes and forced is not None and forced.get("scope") == force):
                self._meta.set(FORCED_FROM_KEY, json.dumps({"session": number, "scope": force}))
        return number

    def run_began(self) -> int | None:
        """The first session of the run under way or last finished (None: not recorded, a state
        dir from before the record)."""
        began = self._meta.get(RUN_BEGAN_KEY)
        return int(began) if began else None

    def forced_from(self) -> int | None:
        """The first session of the forced run this session carries on: a key whose current line
        a session from it on wrote was forced already (None: this session forces nothing)."""
        forced = _json_dict(self._meta.get(FORCED_FROM_KEY))
        session = forced.get("session") if forced is not None else None
        return session if isinstance(session, int) else None

    def lookup(self, keys: Sequence[str]) -> dict[str, Known]:
        """What the checkpoint knows of each of `keys` it has a row for."""
        found: dict[str, Known] = {}
        for start in range(0, len(keys), BATCH_KEYS):
            chunk = keys[start:start + BATCH_KEYS]
            marks = ",".join("?" * len(chunk))
            for key, state, fingerprint, vanished, line_at, written in self._conn.execute(
                    f"SELECT id, state, fingerprint, vanished, line_at, written FROM jobs WHERE id IN ({marks})",
                    chunk):
                found[key] = Known(_STATES[state], fingerprint, vanished, line_at, written)
        return found

    def apply(self, *, seen: Iterable[str], adopt: Iterable[tuple[str, str, str]] = (),
              restore: Iterable[str] = (), supersede: Iterable[tuple[str, str, str]] = (), session: int,
              read: int | None = None, cursor: Cursor | None = None,
              open_keys: Iterable[tuple[str, int, int]] = (), closed: Iterable[str] = (),
              seen_items: Iterable[str] = ()) -> None:
        """One batch's decisions, in one transaction: `seen` keys are noted found by the read
        `read` (a source's pass, `cursor.Cursor.pass_`; default: this session); `adopt`
        (fingerprint, source, key): a done row from before fingerprints takes its item's;
        `restore`: a vanished key found again, unchanged, is live again (and current from this
        session on); `supersede` (fingerprint, source, key): a changed key goes back in play with
        its new fingerprint. With the same commit, where the read got to (`cursor`) and the keys
        read with work left (`open_keys`: key, line start byte, line number), so a crash at any
        instant leaves the position and what it covers in agreement; `closed`: open keys read
        again that have no work left (their line became durable outside a read); `seen_items`:
        ids of items on lines the read rejected: every key of theirs counts as found (present,
        only refused tonight: their last good lines stay current)."""
        read = session if read is None else read
        supersede = list(supersede)
        with transaction(self._conn):
            self._keep_superseded_totals([key for _fp, _source, key in supersede])
            self._conn.executemany("UPDATE jobs SET seen = ? WHERE id = ?", ((read, key) for key in seen))
            self._conn.executemany("UPDATE jobs SET seen = ? WHERE id >= ? AND id < ?",
                                   ((read, *_item_range(item_id)) for item_id in seen_items))
            self._conn.executemany("UPDATE jobs SET fingerprint = ?, source = ? WHERE id = ?", adopt)
            self._conn.executemany("UPDATE jobs SET vanished = NULL, written = ? WHERE id = ?",
                                   ((session, key) for key in restore))
            self._conn.executemany(
                "UPDATE jobs SET state = ?, fingerprint = ?, source = ?, task_id = NULL, status = NULL, "
                "error_code = NULL, vanished = NULL WHERE id = ?",
                ((JobState.RETRY, fp, source, key) for fp, source, key in supersede))
            self._conn.executemany("DELETE FROM open_keys WHERE id = ?", ((key,) for key in closed))
            if cursor is not None:
                cursors = CursorStore(self._conn)
                cursors.add_open(cursor.source, open_keys)
                cursors.save(cursor)

    def _keep_superseded_totals(self, keys: list[str]) -> None:
        """What the done lines of `keys` (about to be superseded) counted and used, added to the
        meta `superseded_totals`: they were billed, and a changed key's new line is billed again,
        so the run's spend is the current lines' plus these (`superseded_totals`)."""
        if not keys:
            return
        marks = ",".join("?" * len(keys))
        rows = self._conn.execute(f"SELECT capability, service_id, status, usage FROM jobs WHERE state = ? "
                                  f"AND id IN ({marks})", [JobState.DONE, *keys]).fetchall()
        if not rows:
            return
        meta = MetaStore(self._conn)
        kept = json.loads(meta.get(SUPERSEDED_TOTALS) or '{"counts": {}, "usage": {}}')
        _fold(kept, rows)
        meta.set(SUPERSEDED_TOTALS, json.dumps(kept))

    def superseded_totals(self) -> tuple[list[tuple[str, str, ItemStatus, None, int]],
                                         list[tuple[str, str, str, float]]]:
        """Counts and successful usage of every line a changed key superseded, as `JobStore.totals`
        gives them for current lines (status as its JSON value)."""
        return _as_totals(json.loads(MetaStore(self._conn).get(SUPERSEDED_TOTALS) or '{"counts": {}, "usage": {}}'))

    def vanished_totals(self) -> tuple[list[tuple[str, str, ItemStatus, None, int]],
                                       list[tuple[str, str, str, float]]]:
        """Counts and successful usage of the done lines of vanished keys, as `superseded_totals`:
        out of the current view and its totals, but billed all the same (O(vanished keys))."""
        try:
            rows = self._conn.execute(
                "SELECT capability, service_id, status, usage FROM jobs WHERE state = ? AND vanished IS NOT NULL",
                (JobState.DONE,)).fetchall()
        except sqlite3.OperationalError:  # a state dir from before catalogs, read only: nothing vanished
            return [], []
        folded: dict[str, Any] = {"counts": {}, "usage": {}}
        _fold(folded, rows)
        return _as_totals(folded)

    def seen_by_read(self, item_id: str, read: int) -> bool:
        """Whether a key of item `item_id` was found by the read `read` (in a session before this
        one, for the part of the source it skipped): a second line with that id is a duplicate."""
        low, high = _item_range(item_id)
        return self._conn.execute("SELECT 1 FROM jobs WHERE id >= ? AND id < ? AND seen = ? LIMIT 1",
                                  (low, high, read)).fetchone() is not None or \
            self._conn.execute("SELECT 1 FROM open_keys WHERE id >= ? AND id < ? LIMIT 1",
                               (low, high)).fetchone() is not None

    def analysis_names(self) -> set[str]:
        """The analysis names of the run's keys (one scan of the table)."""
        rows = self._conn.execute("SELECT DISTINCT substr(id, instr(id, char(31)) + 1) FROM jobs "
                                  "WHERE instr(id, char(31)) > 0")
        return {name for (name,) in rows}

    def begin_preview(self) -> None:
        """An empty record of keys seen, for a read-only look at the delta (`validate --state-dir`)."""
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY) WITHOUT ROWID")
        self._conn.execute("DELETE FROM temp.seen")

    def note_seen(self, keys: Iterable[str]) -> None:
        """Keys a read-only look found (only the temporary table is written)."""
        self._conn.executemany("INSERT OR IGNORE INTO temp.seen (id) VALUES (?)", ((key,) for key in keys))

    def note_seen_items(self, item_ids: Iterable[str]) -> None:
        """Items of lines a read-only look rejected: their keys count as found (as `apply`'s `seen_items`)."""
        for item_id in item_ids:
            self._conn.execute("INSERT OR IGNORE INTO temp.seen (id) SELECT id FROM jobs WHERE id >= ? AND id < ?",
                               _item_range(item_id))

    def count_unseen(self, admitted: Callable[[str], bool] | None = None) -> int:
        """Live keys no read of this connection found (of those `admitted`, when given): what a
        complete run would mark vanished."""
        where = self._admitted_sql(admitted)
        return int(self._conn.execute(
            f"SELECT COUNT(*) FROM jobs WHERE vanished IS NULL AND id NOT IN (SELECT id FROM temp.seen){where}"
        ).fetchone()[0])

    def vanish(self, session: int, read: int | None = None, admitted: Callable[[str], bool] | None = None) -> int:
        """Mark every live key the read `read` (default: this session's) did not find vanished
        by `session`; returns how many. Only after a complete read (the caller's rule): a partial
        one would vanish what it did not reach. A read that skipped an unchanged prefix found its
        keys in an earlier session of the same read (`seen`), so they stay live. `admitted`: a
        key it says False of (an item outside the run's --include/--exclude) stays live too."""
        read = session if read is None else read
        where = self._admitted_sql(admitted)
        with transaction(self._conn):
            cursor = self._conn.execute(
                f"UPDATE jobs SET vanished = ? WHERE vanished IS NULL AND (seen IS NULL OR seen != ?){where}",
                (session, read))
        return int(cursor.rowcount)

    def _admitted_sql(self, admitted: Callable[[str], bool] | None) -> str:
        """The SQL condition (with its leading AND) that keeps the keys `admitted` says True of."""
        if admitted is None:
            return ""
        self._conn.create_function("pipeline_admitted", 1, lambda key: int(admitted(key)), deterministic=True)
        return " AND pipeline_admitted(id)"

    def save_counts(self, counts: dict[str, Any]) -> None:
        """The catalog counts of the last session that read its catalog to the end (for `status`)."""
        self._meta.set(LAST_CATALOG_KEY, json.dumps(counts))

    def last_counts(self) -> dict[str, Any] | None:
        """What `save_counts` kept, if anything."""
        try:
            value = json.loads(self._meta.get(LAST_CATALOG_KEY) or "null")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    # ---- the delta, for `export --changes` --------------------------------------------------
    def changed_lines(self, since: int) -> Iterator[tuple[str, int]]:
        """(key, line start) of every live done key whose current line a session after `since`
        wrote, in key order."""
        yield from self._conn.execute(
            "SELECT id, line_at FROM jobs WHERE state = ? AND vanished IS NULL AND written > ? ORDER BY id",
            (JobState.DONE, since))

    def vanished_keys(self, since: int) -> Iterator[str]:
        """Keys a session after `since` found vanished, in key order."""
        for (key,) in self._conn.execute("SELECT id FROM jobs WHERE vanished > ? ORDER BY id", (since,)):
            yield key


def _item_range(item_id: str) -> tuple[str, str]:
    """The key range of every (item, analysis) of `item_id`: [id + SEP, id + the next character)."""
    return item_id + KEY_SEP, item_id + chr(ord(KEY_SEP) + 1)


def _json_dict(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _fold(kept: dict[str, Any], rows: Iterable[tuple[str, str, str, str | None]]) -> None:
    """Add done rows (capability, service id, status, usage JSON) to `kept`'s per-(capability,
    service id) counts by status and successful usage by unit (`superseded_totals`' JSON shape)."""
    for capability, service_id, status, usage in rows:
        where = f"{capability}{KEY_SEP}{service_id}"
        counts = kept["counts"].setdefault(where, {})
        counts[status] = counts.get(status, 0) + 1
        try:
            numbers = json.loads(usage) if usage else {}
        except ValueError:
            numbers = {}
        units = kept["usage"].setdefault(where, {})
        for unit, value in (numbers.items() if isinstance(numbers, dict) and status == "SUCCESS" else ()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                units[unit] = units.get(unit, 0.0) + float(value)


def _as_totals(kept: dict[str, Any]) -> tuple[list[tuple[str, str, ItemStatus, None, int]],
                                              list[tuple[str, str, str, float]]]:
    """`kept` as `JobStore.totals` gives the current lines' (count rows, usage rows)."""
    counts = [(*where.split(KEY_SEP, 1), ItemStatus(status), None, n) for where, by in kept["counts"].items()
              for status, n in by.items()]
    usage = [(*where.split(KEY_SEP, 1), unit, total) for where, by in kept["usage"].items()
             for unit, total in by.items()]
    return counts, usage
