"""Reading a JSON Lines manifest from a byte position, knowing where each line starts, and the
sha256 of exactly the bytes read (so a later session can tell the part read is unchanged).

`LineTracker(start, line)` wraps the binary file's lines: `lines(f)` seeks to `start` and yields
raw lines, numbered from `line`, noting for each line that holds a record its start byte
(`starts`) and feeding the hash one record behind: when a record's line is read, the bytes
before it go into the digest. So while the caller handles the record of line N (the generators
never read ahead), `hashed == starts[N]` and `digest()` covers [start, starts[N]) exactly: what
a cursor placed at line N must vouch for. At the end of the file the rest is hashed, except a
last line without its newline that is not a whole JSON object (a line still being written: the
next session reads it again; `tail_line` says which). A whole object without a final newline is
hashed: many writers end a file so, and an append after it then starts on a line of its own.
`prefix_digest` hashes a byte range of a file the same way, to check a recorded one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["HASH_CHUNK", "LineTracker", "prefix_digest", "read_line_at"]

#: Bytes read per hop when hashing a recorded prefix.
HASH_CHUNK = 1 << 20


class LineTracker:
    """See the module docstring."""

    def __init__(self, start: int = 0, line: int = 1) -> None:
        self.start = start
        self.line = line  # the number of the line at `start`
        self.hashed = start  # bytes in [start, hashed) are in the digest
        self.end = start  # bytes read so far end here
        self.end_line = line  # the number of the line at `end`
        self.starts: dict[int, int] = {}  # line number -> start byte, of record lines not yet forgotten
        self.at_eof = False
        self.tail_line: int | None = None  # a last line left out of the position: still being written
        self._hash = hashlib.sha256()
        self._held: list[bytes] = []  # read, not yet hashed

    def lines(self, f: BinaryIO) -> Iterator[bytes]:
        """The raw lines of `f` from `start` (see the module docstring)."""
        f.seek(self.start)
        number = self.line
        for raw in f:
            if raw.strip():  # may hold a record: what precedes it is vouched for once it is read
                self._flush()
                self.starts[number] = self.end
            self._held.append(raw)
            self.end += len(raw)
            number += 1
            self.end_line = number
            yield raw
        if self._held and not self._held[-1].endswith(b"\n") and not _whole_record(self._held[-1]):
            last = self._held.pop()
            self._flush()
            self.end -= len(last)
            self.end_line -= 1
            self.tail_line = self.end_line
        self._flush()
        self.at_eof = True

    def digest(self) -> str:
        """sha256 (hex) of [start, hashed)."""
        return self._hash.hexdigest()

    def forget(self, below: int) -> None:
        """Drop the start bytes of lines numbered below `below` (their batch is committed)."""
        for number in [n for n in self.starts if n < below]:
            del self.starts[number]

    def _flush(self) -> None:
        for raw in self._held:
            self._hash.update(raw)
            self.hashed += len(raw)
        self._held.clear()


def _whole_record(raw: bytes) -> bool:
    """Whether a last line without its newline is a whole record (a JSON object): a file whose
    writer leaves no final newline. Anything else may be a line still being written."""
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def prefix_digest(f: BinaryIO, start: int, end: int) -> str:
    """sha256 (hex) of bytes [start, end) of `f` (shorter when the file is)."""
    digest = hashlib.sha256()
    f.seek(start)
    left = end - start
    while left > 0:
        chunk = f.read(min(HASH_CHUNK, left))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


def read_line_at(f: BinaryIO, at: int) -> bytes:
    """The raw line that starts at byte `at`."""
    f.seek(at)
    return f.readline()
