"""Where a run read its manifest to, so the next session can start there (issue 21).

A `Cursor` per source (its checkpoint name): `position`, the byte where the first line not yet
committed starts, and `line`, that line's number. Every line before `position` was read by a
batch whose decisions were committed in the same transaction as the cursor: its keys are marked
`seen` by the read (`pass_`, the session that began reading the source from its start), and its
keys that still had work to do (new, changed, unfinished) are in `open_keys` with the byte and
line number of their line until their result line is durable (`JobStore.mark_done` deletes
them). So a later session whose source is unchanged up to `position` reads the open lines (a
handful: what was in flight) and then goes on from `position`, without decoding the lines before.

"Unchanged up to `position`" is known from the file's identity when it was last written to
(size, mtime_ns, inode: the same -> unchanged) or else from `segments`: sha256 digests of byte
ranges covering [0, position), one range per session that read on (a session hashes exactly
the bytes it reads, so no session ever reads a byte twice to keep the digests current).
`settings` is a digest of what else a fingerprint depends on (config outputs, --analyses, the
pipeline's version): another value means the whole catalog is compared again. `counts` carries
what the skipped part held (lines, units, rejected lines) into later sessions' figures.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Cursor", "CursorStore"]


@dataclass
class Cursor:
    """How far a source was read, and what identifies the part read (see the module docstring)."""

    source: str
    pass_: int
    position: int = 0
    line: int = 1
    size: int = -1
    mtime_ns: int = -1
    inode: int = -1
    settings: str = ""
    segments: list[list[Any]] = field(default_factory=list)  # [start, end, sha256 hex]
    counts: dict[str, int] = field(default_factory=dict)
    complete: bool = False  # the read reached the end of the source at least once in this pass

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Cursor | None:
        """The cursor `to_json` wrote, or None when it cannot be read (the caller reads in full)."""
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError):
            return None


class CursorStore:
    """The `cursors` and `open_keys` tables (each write in the caller's transaction, if any)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, source: str) -> Cursor | None:
        row = self._conn.execute("SELECT record FROM cursors WHERE source = ?", (source,)).fetchone()
        return Cursor.from_json(row[0]) if row else None

    def save(self, cursor: Cursor) -> None:
        self._conn.execute("INSERT OR REPLACE INTO cursors (source, record) VALUES (?, ?)",
                           (cursor.source, cursor.to_json()))

    def drop(self, source: str) -> None:
        """Forget `source`'s cursor and open keys: its next read starts from the beginning."""
        self._conn.execute("DELETE FROM cursors WHERE source = ?", (source,))
        self._conn.execute("DELETE FROM open_keys WHERE source = ?", (source,))

    def add_open(self, source: str, keys: Iterable[tuple[str, int, int]]) -> None:
        """(key, line start byte, line number) of keys read with work left to do."""
        self._conn.executemany("INSERT OR REPLACE INTO open_keys (id, source, at, line) VALUES (?, ?, ?, ?)",
                               ((key, source, at, line) for key, at, line in keys))

    def open_lines(self, source: str) -> list[tuple[int, int]]:
        """(byte, line number) of the lines of `source` whose keys still have work, in file order.
        As many as the keys a session left unfinished (bounded by its queues and in-flight cap)."""
        return [(int(at), int(line)) for at, line in self._conn.execute(
            "SELECT DISTINCT at, line FROM open_keys WHERE source = ? ORDER BY at", (source,))]

    def count_open(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM open_keys").fetchone()[0])
