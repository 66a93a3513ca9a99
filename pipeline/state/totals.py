"""Running totals of the done, live keys (issue 21): the summary and `status` read a few rows per
(capability, service id, status, error code), not every key.

SQLite triggers on `jobs` keep them, so every path that changes what counts (a line marked done,
a key superseded, reopened or put back in play, vanished or restored) adjusts them in its own
transaction, and none has to remember to. A key counts while it is done and live (`vanished IS
NULL`); the triggers fire only on the columns that decide that or what it counts under (a batch
of keys marked seen costs nothing here). The usage sums (numbers only, of successful keys) come
from SQLite's JSON functions. A state dir from before them is counted once, on the writable open
that creates the tables (`install`).
"""

from __future__ import annotations

import sqlite3

from .db import transaction

__all__ = ["TABLES", "install", "read"]

TABLES = [
    "CREATE TABLE IF NOT EXISTS totals (capability TEXT NOT NULL, service_id TEXT NOT NULL, status TEXT NOT NULL, "
    "error_code TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (capability, service_id, status, error_code)) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS usage_totals (capability TEXT NOT NULL, service_id TEXT NOT NULL, key TEXT NOT NULL, "
    "total REAL NOT NULL, PRIMARY KEY (capability, service_id, key)) WITHOUT ROWID",
]

_COUNTED = "{row}.state = 'done' AND {row}.vanished IS NULL"
_ADD = """
    INSERT INTO totals VALUES ({row}.capability, {row}.service_id, {row}.status, COALESCE({row}.error_code, ''), {sign})
        ON CONFLICT DO UPDATE SET n = n + ({sign});
    INSERT INTO usage_totals SELECT {row}.capability, {row}.service_id, u.key, ({sign}) * u.value
        FROM json_each(CASE WHEN {row}.status = 'SUCCESS' AND json_valid({row}.usage) THEN {row}.usage END) AS u
        WHERE u.type IN ('integer', 'real')
        ON CONFLICT DO UPDATE SET total = total + excluded.total;"""
_WATCHED = "state, status, error_code, vanished, capability, service_id, usage"

TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS totals_insert AFTER INSERT ON jobs WHEN {_COUNTED.format(row='new')} "
    f"BEGIN {_ADD.format(row='new', sign=1)} END",
    f"CREATE TRIGGER IF NOT EXISTS totals_update_old AFTER UPDATE OF {_WATCHED} ON jobs "
    f"WHEN {_COUNTED.format(row='old')} BEGIN {_ADD.format(row='old', sign=-1)} END",
    f"CREATE TRIGGER IF NOT EXISTS totals_update_new AFTER UPDATE OF {_WATCHED} ON jobs "
    f"WHEN {_COUNTED.format(row='new')} BEGIN {_ADD.format(row='new', sign=1)} END",
    f"CREATE TRIGGER IF NOT EXISTS totals_delete AFTER DELETE ON jobs WHEN {_COUNTED.format(row='old')} "
    f"BEGIN {_ADD.format(row='old', sign=-1)} END",
]


def install(conn: sqlite3.Connection) -> None:
    """Create the tables and triggers; a file that had none is counted now, once (O(keys))."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'totals_delete'").fetchone():
        return
    with transaction(conn):
        for statement in (*TABLES, *TRIGGERS):
            conn.execute(statement)
        conn.execute("DELETE FROM totals")
        conn.execute("DELETE FROM usage_totals")
        conn.execute(
            "INSERT INTO totals SELECT capability, service_id, status, COALESCE(error_code, ''), COUNT(*) FROM jobs "
            f"WHERE {_COUNTED.format(row='jobs')} GROUP BY 1, 2, 3, 4")
        conn.execute(
            "INSERT INTO usage_totals SELECT j.capability, j.service_id, u.key, SUM(u.value) FROM jobs AS j, "
            "json_each(CASE WHEN j.status = 'SUCCESS' AND json_valid(j.usage) THEN j.usage END) AS u "
            f"WHERE {_COUNTED.format(row='j')} AND u.type IN ('integer', 'real') GROUP BY 1, 2, 3")


CountRow = tuple[str, str, str, "str | None", int]
UsageRow = tuple[str, str, str, float]


def read(conn: sqlite3.Connection) -> tuple[list[CountRow], list[UsageRow]]:
    """(capability, service id, status, error code or None, count) and (capability, service id,
    usage key, sum) rows, as `JobStore.totals` gives them."""
    counts = [(cap, sid, status, code or None, n) for cap, sid, status, code, n in conn.execute(
        "SELECT capability, service_id, status, error_code, n FROM totals WHERE n > 0")]
    usage = [(cap, sid, key, float(total)) for cap, sid, key, total in conn.execute(
        "SELECT capability, service_id, key, total FROM usage_totals")]
    return counts, usage
