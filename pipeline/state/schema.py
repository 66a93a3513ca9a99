"""What the checkpoint stores (its schema and row types), and how a store written by an
earlier version becomes today's (`upgrade`, run on every writable open)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["KEY_FORMAT", "SCHEMA", "Outcome", "PendingTask", "UploadRecord", "upgrade"]

#: How the `jobs` rows are keyed: "2" is (item id, analysis); before it, the item id alone.
KEY_FORMAT = "2"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    capability   TEXT NOT NULL,
    service_id   TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('submitted', 'done', 'retry')),
    task_id      TEXT,
    submitted_at REAL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    resubmits    INTEGER NOT NULL DEFAULT 0,
    status       TEXT,
    error_code   TEXT,
    usage        TEXT,
    elapsed      REAL,
    finished_at  REAL,
    line_at      INTEGER  -- where its line starts in the results file, once done
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
-- Local files uploaded to OSS, per item: a resume never hashes or uploads them again.
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
-- The spend ledger: a pessimistic reservation made before each submission, replaced by the
-- settled cost when the item's line is written (in the same transaction).
CREATE TABLE IF NOT EXISTS spend (
    id       TEXT PRIMARY KEY,
    reserved REAL NOT NULL DEFAULT 0,
    settled  REAL NOT NULL DEFAULT 0
);
"""


class UploadRecord(NamedTuple):
    """The object an item's local file was uploaded to, and the file's size and mtime then
    (`mtime_ns` None: recorded before mtimes were kept)."""

    bucket: str
    key: str
    size: int
    sha256: str
    mtime_ns: int | None


@dataclass(frozen=True)
class PendingTask:
    """A job the store knows about but has not finished: what resume needs to carry it on."""

    id: str
    state: str
    task_id: str | None
    submitted_at: float | None
    attempts: int
    resubmits: int
    error_code: str | None


@dataclass(frozen=True)
class Outcome:
    """What the store keeps of a finished (item, analysis); `id` is its key. The result line
    itself lives in the file, at byte `line_at`."""

    id: str
    capability: str
    service_id: str
    status: str
    task_id: str | None
    error_code: str | None
    usage: dict[str, Any] | None
    elapsed: float | None
    attempts: int = 0
    line_at: int | None = None


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a state dir from before analyses to today's keys: an item's rows were keyed by its
    id alone; they become (id, capability), the analysis such an item has. Its lines' offsets
    are filled in by `resume.prepare` (meta `needs_line_index`). One transaction."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'key_format'").fetchone()
    if row is not None and row[0] == KEY_FORMAT:
        return
    columns = {column[1] for column in conn.execute("PRAGMA table_info(jobs)")}
    conn.execute("BEGIN IMMEDIATE")
    try:
        if "line_at" not in columns:
            conn.execute("ALTER TABLE jobs ADD COLUMN line_at INTEGER")
        if conn.execute("SELECT 1 FROM jobs LIMIT 1").fetchone():
            # Reservations first, while the jobs rows still hold the old keys.
            conn.execute(
                "UPDATE spend SET id = id || char(31) || (SELECT capability FROM jobs WHERE jobs.id = spend.id) "
                "WHERE instr(id, char(31)) = 0 AND EXISTS (SELECT 1 FROM jobs WHERE jobs.id = spend.id)")
            conn.execute("UPDATE jobs SET id = id || char(31) || capability WHERE instr(id, char(31)) = 0")
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('needs_line_index', '1')")
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('key_format', ?)", (KEY_FORMAT,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
