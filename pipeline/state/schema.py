"""What the checkpoint file holds (every table, in one place), and how a file written by an
earlier version becomes today's (`upgrade`, run on every writable open; a read-only open
never changes the file, and the stores read what an older one holds).

The upgrades, oldest first; each is one transaction and does nothing on a file that needs none:
1. Keys gain their analysis (`KEY_FORMAT` "2"): rows keyed by the item id alone become
   (id, capability), the analysis such an item has; the lines' offsets are then indexed from
   the results file by `resume.prepare` (meta `needs_line_index`).
2. The run's manifests move from meta keys into the `manifests` table (`manifests.adopt_legacy`).
3. The catalog's columns (`CATALOG_COLUMNS`: fingerprint, source, written, vanished) are added
   to `jobs`. Rows done before have no fingerprint: the first session that reads their items
   adopts the fingerprint each item has then (`catalog`), so nothing runs again for it. Logged
   once, by the open that adds them.
4. The run history and time series (`sessions`, `sessions_older`, `series`, `histograms`) are
   new tables: `SCHEMA` creates them in an older file, empty (its history starts with the next
   session); a read-only open of an older file reads them as empty (`history`, `series`).
5. `jobs.seen` (the read that last found a key, `cursor`): added empty; a state dir without it
   has no read position either, so its next run compares the whole catalog once (logged).
6. The running totals (`totals`): tables and triggers, filled once from the rows.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ..core.job import KEY_SEP
from . import totals
from .db import connect, transaction
from .jobs import JobState
from .manifests import ManifestStore
from .meta import MetaKey, MetaStore

__all__ = ["CATALOG_COLUMNS", "EARLIER_VERSION", "KEY_FORMAT", "SCHEMA", "missing_columns", "upgrade"]

log = logging.getLogger("pipeline.run")

#: How the `jobs` rows are keyed: "2" is (item id, analysis); before it, the item id alone.
KEY_FORMAT = "2"

_STATES = ", ".join(f"'{state.value}'" for state in JobState)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- One row per (item id, analysis) key, held in `id` (jobs.py).
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    capability   TEXT NOT NULL,
    service_id   TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ({_STATES})),
    task_id      TEXT,
    submitted_at REAL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    resubmits    INTEGER NOT NULL DEFAULT 0,
    status       TEXT,
    error_code   TEXT,
    usage        TEXT,
    elapsed      REAL,
    finished_at  REAL,
    line_at      INTEGER, -- where its line starts in the results file, once done
    fingerprint  TEXT,    -- of the current line (done), or of the work in flight (catalog.py)
    source       TEXT,    -- the source the current line was computed from
    written      INTEGER, -- the session that wrote the current line (export --changes)
    vanished     INTEGER, -- the session whose complete read no longer found it; NULL: live
    seen         INTEGER  -- the read (a source's pass, cursor.py) that last found it
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
-- The run's manifests in the order they joined it (manifests.py).
CREATE TABLE IF NOT EXISTS manifests (
    position INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    rejected INTEGER NOT NULL DEFAULT 0,
    items    INTEGER,  -- NULL until a session read it to its end
    shared   INTEGER NOT NULL DEFAULT 0,
    empty    INTEGER   -- 1: read to its end, no item at all; NULL: not known yet
);
-- Local files uploaded to OSS, per item id (uploads.py): a resume never hashes or uploads them again.
CREATE TABLE IF NOT EXISTS uploads (
    id     TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key    TEXT NOT NULL,
    size   INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
-- The local file's modification time when the object above was hashed (a table of its own, so
-- state dirs from before it need no upgrade): a reuse of an upload re-checks size and mtime.
CREATE TABLE IF NOT EXISTS upload_stamps (
    id       TEXT PRIMARY KEY,
    mtime_ns INTEGER NOT NULL
);
-- The spend ledger, per (item id, analysis) key held in `id` (ledger.py): a pessimistic
-- reservation made before each submission, replaced by the settled cost when the key's line
-- is written (in the same transaction).
-- How far each source was read, and the keys read with work left (cursor.py).
CREATE TABLE IF NOT EXISTS cursors (source TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS open_keys (
    id     TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    at     INTEGER NOT NULL,
    line   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS open_keys_source ON open_keys (source, at);
CREATE TABLE IF NOT EXISTS spend (
    id       TEXT PRIMARY KEY,
    reserved REAL NOT NULL DEFAULT 0,
    settled  REAL NOT NULL DEFAULT 0
);
-- The run history, one row per session (history.py); the oldest folded into `sessions_older`.
CREATE TABLE IF NOT EXISTS sessions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    started       REAL NOT NULL,
    ended         REAL,     -- NULL until the session records its end
    outcome       TEXT NOT NULL,  -- 'running' until then; 'interrupted' when the next start finds it so
    exit_code     INTEGER,
    stop_reason   TEXT,
    succeeded     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    skipped       INTEGER NOT NULL DEFAULT 0,
    rejected      INTEGER NOT NULL DEFAULT 0,
    cost          REAL NOT NULL DEFAULT 0,
    requests      INTEGER NOT NULL DEFAULT 0,
    rate_limited  INTEGER NOT NULL DEFAULT 0,
    by_capability TEXT,     -- JSON: per capability succeeded, failed, skipped, requests, rate_limited, cost
    catalog       TEXT      -- JSON catalog delta counts (new, changed, unchanged, vanished), or NULL
);
CREATE TABLE IF NOT EXISTS sessions_older (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    count         INTEGER NOT NULL,
    first_started REAL NOT NULL,
    last_started  REAL NOT NULL,
    succeeded     INTEGER NOT NULL,
    failed        INTEGER NOT NULL,
    cost          REAL NOT NULL,
    requests      INTEGER NOT NULL,
    rate_limited  INTEGER NOT NULL
);
-- Time series of the last sessions, a JSON sample per (session, seconds since its start) (series.py).
CREATE TABLE IF NOT EXISTS series (
    session INTEGER NOT NULL,
    t       REAL NOT NULL,
    sample  TEXT NOT NULL,
    PRIMARY KEY (session, t)
);
CREATE TABLE IF NOT EXISTS histograms (
    session INTEGER NOT NULL,
    name    TEXT NOT NULL,
    bounds  TEXT NOT NULL,
    counts  TEXT NOT NULL,
    PRIMARY KEY (session, name)
);
"""


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a checkpoint written by an earlier version to today's layout (see the module's
    docstring); the tables of `SCHEMA` exist already."""
    _key_per_analysis(conn)
    ManifestStore(conn).adopt_legacy()
    _catalog_columns(conn)
    _seen_column(conn)
    totals.install(conn)


#: What a read-only command says of a state dir only a run can bring to today's layout.
EARLIER_VERSION = ("this state dir was written by an earlier version; run it once (`run SOURCE --out RESULTS "
                   "--state-dir DIR`, the run's own command: it resumes and sends nothing done again) to upgrade "
                   "it, then run this command again")


def missing_columns(conn: sqlite3.Connection) -> list[str]:
    """The catalog's `jobs` columns an earlier version's file lacks (empty for today's): a
    read-only open cannot add them, so what reads them must refuse (`EARLIER_VERSION`)."""
    columns = {column[1] for column in conn.execute("PRAGMA table_info(jobs)")}
    return [name for name, _kind in CATALOG_COLUMNS if name not in columns]


def _seen_column(conn: sqlite3.Connection) -> None:
    """Upgrade 4: `jobs.seen`, added to a table from before it."""
    if "seen" not in {column[1] for column in conn.execute("PRAGMA table_info(jobs)")}:
        with transaction(conn):
            conn.execute("ALTER TABLE jobs ADD COLUMN seen INTEGER")
            # A read position vouches for keys marked seen: none are, so none is kept.
            conn.execute("DELETE FROM cursors")
            conn.execute("DELETE FROM open_keys")


#: Columns of `jobs` the catalog added (upgrade 3), with their types.
CATALOG_COLUMNS = (("fingerprint", "TEXT"), ("source", "TEXT"), ("written", "INTEGER"), ("vanished", "INTEGER"))


def _catalog_columns(conn: sqlite3.Connection) -> None:
    """Upgrade 3: the catalog's columns, added to a `jobs` table from before them."""
    columns = {column[1] for column in conn.execute("PRAGMA table_info(jobs)")}
    missing = [(name, kind) for name, kind in CATALOG_COLUMNS if name not in columns]
    if not missing:
        return
    with transaction(conn):
        for name, kind in missing:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        done = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (JobState.DONE,)).fetchone()[0]
    if done:
        log.info("state dir upgraded for catalogs: its %d results count as computed from what their items are "
                 "on this run (their fingerprints are adopted as the catalog is read; nothing runs again for it)",
                 done)


def _key_per_analysis(conn: sqlite3.Connection) -> None:
    """Upgrade 1: rows keyed by the item id alone become (id, capability)."""
    meta = MetaStore(conn)
    if meta.get(MetaKey.KEY_FORMAT) == KEY_FORMAT:
        return
    columns = {column[1] for column in conn.execute("PRAGMA table_info(jobs)")}
    with transaction(conn):
        if "line_at" not in columns:
            conn.execute("ALTER TABLE jobs ADD COLUMN line_at INTEGER")
        if conn.execute("SELECT 1 FROM jobs LIMIT 1").fetchone():
            # Reservations first, while the jobs rows still hold the old keys. A key of today
            # holds the separator; an old one never does.
            conn.execute(
                "UPDATE spend SET id = id || ? || (SELECT capability FROM jobs WHERE jobs.id = spend.id) "
                "WHERE instr(id, ?) = 0 AND EXISTS (SELECT 1 FROM jobs WHERE jobs.id = spend.id)",
                (KEY_SEP, KEY_SEP))
            conn.execute("UPDATE jobs SET id = id || ? || capability WHERE instr(id, ?) = 0", (KEY_SEP, KEY_SEP))
            meta.set_flag(MetaKey.NEEDS_LINE_INDEX, True)
        meta.set(MetaKey.KEY_FORMAT, KEY_FORMAT)


def create(path: Path) -> None:
    """A new checkpoint file, whole or not at all: its tables are made in a file of another name,
    which then takes the checkpoint's name. A kill -9 at any instant leaves either no checkpoint
    (nothing began) or one with every table, never an empty or half-made file that `status`
    would have to guess about."""
    making = path.with_name(path.name + ".new")
    making.unlink(missing_ok=True)  # what a killed creation left
    conn = connect(making, read_only=False)
    try:
        conn.executescript(SCHEMA)
        upgrade(conn)
    finally:
        conn.close()  # the last connection: its WAL is folded into the file and removed
    making.replace(path)
