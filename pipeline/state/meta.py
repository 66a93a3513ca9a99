"""The `meta` table: the run's identity and its session facts, one value per name (`MetaKey`).

What a run is (its results file, shard, when it began), how far its results file is known to be
written (`sink_offset`), how its last session stopped, and the flags a step that spans a crash
leaves for the next session (`drop_pending`, `needs_line_index`). The run's manifests are a
table of their own (`manifests`).
"""

from __future__ import annotations

import json
import sqlite3
from enum import Enum
from typing import Any

__all__ = ["MetaKey", "MetaStore"]


class MetaKey(str, Enum):
    """The names the `meta` table holds."""

    OUT = "out"  # the results file this state dir belongs to (resolved path)
    SHARD = "shard"  # `--shard K/N` of the run, when sharded
    SERVICE = "service"  # the service's base URL (endpoint and workspace): its task ids are valid there only
    CREATED_AT = "created_at"  # when the run's first session began (seconds since the epoch)
    SINK_OFFSET = "sink_offset"  # bytes of the results file that are marked done
    LAST_STOP = "last_stop"  # how the last session stopped (`outcome.Stop.to_record()` as JSON)
    FAILURE_WINDOW = "failure_window"  # the failure threshold's window, carried across sessions
    KEY_FORMAT = "key_format"  # how `jobs` rows are keyed (`schema.KEY_FORMAT`)
    NEEDS_LINE_INDEX = "needs_line_index"  # flag: upgraded keys whose line offsets are not indexed yet
    DROP_PENDING = "drop_pending"  # flag: `--retry-failed` reopened keys whose old lines are still in the file
    DOUBLE_BILLING = "possible_double_billing"  # submissions that may have been billed twice, every session's
    UNCONFIRMED_SPEND = "unconfirmed_spend"  # reserved for creates a killed session may have sent: counted as spent
    SELECTION = "selection"  # the last session's --include, --exclude, ... (JSON): its retry command's
    LAST_READ = "last_read"  # the source the last session read (another read since a cursor re-marks keys)


class MetaStore:
    """Reads and writes of the `meta` table (each write its own transaction, or the caller's)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, name: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        return row[0] if row else None

    def set(self, name: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (name, value))

    def flag(self, name: MetaKey) -> bool:
        """Whether the flag `name` is set (a flag is kept as "1" or "0")."""
        return self.get(name) == "1"

    def set_flag(self, name: MetaKey, on: bool) -> None:
        self.set(name, "1" if on else "0")

    def sink_offset(self) -> int:
        """Bytes of the results file whose lines are marked done (0 for a new run)."""
        value = self.get(MetaKey.SINK_OFFSET)
        return int(value) if value is not None else 0

    def last_stop(self) -> dict[str, Any] | None:
        """How the last session stopped (`outcome.Stop.to_record()`), or None (it finished, or
        what is kept cannot be read)."""
        try:
            record = json.loads(self.get(MetaKey.LAST_STOP) or "null")
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def set_last_stop(self, record: dict[str, Any] | None) -> None:
        self.set(MetaKey.LAST_STOP, json.dumps(record))
