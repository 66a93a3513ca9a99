"""`IdSet`: a set of ids whose memory does not grow with the number of ids.

The manifest reader uses it to reject repeated ids, and `status` to count keys across state
dirs once; both see one entry per item of a catalog that may hold 100 million. The ids live as
128-bit digests in a private temporary SQLite database (on disk, deleted when the set goes):
SQLite keeps a bounded page cache (`CACHE_KIB`) and spills the rest to its temporary file, so
memory stays flat and only the disk grows (about 40 bytes per id). About 2 µs per `add`.
"""

from __future__ import annotations

import hashlib
import sqlite3

__all__ = ["CACHE_KIB", "IdSet"]

#: The page cache the set may hold in memory, in KiB.
CACHE_KIB = 8192


def _digest(item_id: str) -> bytes:
    """128 bits: no collision in any catalog (a collision would take one id for another)."""
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class IdSet:
    """Remembers the ids seen so far (see the module docstring)."""

    __slots__ = ("_conn", "_count")

    def __init__(self, expected: int = 0) -> None:
        """An empty set (`expected` is accepted for callers that size it; nothing is sized)."""
        # "" is SQLite's private temporary database: a file of its own, removed on close.
        self._conn = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self._conn.execute("PRAGMA journal_mode = OFF")
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.execute("CREATE TABLE ids (d BLOB PRIMARY KEY) WITHOUT ROWID")
        self._conn.execute("BEGIN")  # never committed: nothing here needs to outlive the process
        self._count = 0

    def add(self, item_id: str) -> bool:
        """Record `item_id`; True if it is new, False if it was seen before."""
        if self._conn.execute("INSERT OR IGNORE INTO ids (d) VALUES (?)", (_digest(item_id),)).rowcount:
            self._count += 1
            return True
        return False

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        return self._conn.execute("SELECT 1 FROM ids WHERE d = ?", (_digest(item_id),)).fetchone() is not None

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"IdSet({self._count} ids)"

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
