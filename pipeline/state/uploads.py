"""The `uploads` and `upload_stamps` tables: the OSS object each local file went to, per item id.

Keyed by the item's id, not by a (item, analysis) key: an item's analyses share its one
source file, so it is hashed and uploaded once, and a resume never does either again. The
file's size, SHA-256 and modification time when it was hashed let a reuse notice a file that
changed since (`upload.stage`).
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from .db import transaction

__all__ = ["UploadRecord", "UploadStore"]


class UploadRecord(NamedTuple):
    """The object an item's local file was uploaded to (`key` is the OSS object key), and the
    file's size and mtime then (`mtime_ns` None: recorded before mtimes were kept)."""

    bucket: str
    key: str
    size: int
    sha256: str
    mtime_ns: int | None


class UploadStore:
    """Reads and writes of the upload records."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def record(self, item_id: str, bucket: str, object_key: str, size: int, sha256: str, *,
               mtime_ns: int | None = None) -> None:
        """Durably note the OSS object holding item `item_id`'s local file (of `size` bytes,
        modified at `mtime_ns` when it was hashed)."""
        with transaction(self._conn):
            self._conn.execute("INSERT OR REPLACE INTO uploads (id, bucket, key, size, sha256) VALUES (?, ?, ?, ?, ?)",
                               (item_id, bucket, object_key, size, sha256))
            self._conn.execute("DELETE FROM upload_stamps WHERE id = ?", (item_id,))
            if mtime_ns is not None:
                self._conn.execute("INSERT INTO upload_stamps (id, mtime_ns) VALUES (?, ?)", (item_id, mtime_ns))

    def get(self, item_id: str) -> UploadRecord | None:
        """What `record` noted for item `item_id`, if anything."""
        row = self._conn.execute(
            "SELECT u.bucket, u.key, u.size, u.sha256, s.mtime_ns FROM uploads u "
            "LEFT JOIN upload_stamps s ON s.id = u.id WHERE u.id = ?", (item_id,)).fetchone()
        return UploadRecord(str(row[0]), str(row[1]), int(row[2]), str(row[3]),
                            None if row[4] is None else int(row[4])) if row else None
