"""Where a session starts reading its manifest, and how far it has read (issue 21).

A JSON Lines manifest read by an earlier session of the run has a `state.cursor.Cursor`: the
byte every line before which is committed (its keys seen, those with work left noted open). At
the start (`ReadCursor.start`) the pure `plan` decides, from the cursor, the file's stat and
the run's settings, whether this session may go straight there:

| what is found                                             | read                              |
|-----------------------------------------------------------|-----------------------------------|
| not a JSON Lines file (stdin, CSV, YAML, text, listing)   | in full                           |
| no cursor (a new run, or a state dir from before it)      | in full, logged once              |
| --force / --force-analysis, --retry-failed, file cut short| in full                           |
| other settings (outputs, --analyses, version), local files| in full, logged                   |
| file shorter than the position                            | in full, logged ("truncated")     |
| another source read into the run since (`--append`)      | in full, logged                   |
| same size, mtime_ns and inode as at the last commit (*)   | from the position                 |
| else the recorded digests of [0, position) still match    | from the position (grown file)    |
| else                                                      | in full, logged ("changed inside the prefix") |

(*) recorded only when the file kept, through the session, the identity it had when the session
began: one replaced or edited while a run read it records none, so its prefix is checked.

Reading from the position, the open lines (keys read with work left: in flight, queued, or
waiting for a parent) are read first, then the rest. A read in full starts a new pass (the
session's number); one from the position continues the pass that read the prefix, so vanished
keys are still decided over the whole catalog (`CatalogStore.vanish`). Local files are
re-stated by a full read only: their size and mtime are part of the fingerprint, and skipping
their lines would miss a file replaced in place.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .. import __version__
from ..core.job import Job
from ..manifest.positions import HASH_CHUNK, LineTracker
from ..state.checkpoint import Checkpoint
from ..state.cursor import Cursor
from ..state.meta import MetaKey
from ..state.resume import manifest_key

__all__ = ["Plan", "ReadCursor", "Start", "plan", "settings_digest"]

log = logging.getLogger("pipeline.run")

#: Recorded segments of a prefix (one per session that read on from the position) merged into
#: one digest when verified: a bound on the cursor's size, at the price of a second digest pass.
MERGE_AT = 8


class Start(str, Enum):
    FULL = "full"
    SEEK = "seek"  # unchanged: same identity
    VERIFY = "verify"  # grown or touched: seek if the digests match


@dataclass(frozen=True)
class Plan:
    start: Start
    why: str = ""  # for a full read: what is logged (empty: nothing to say)


def plan(cursor: Cursor | None, *, seekable: bool, stat: os.stat_result | None, settings: str,
         scattered: bool, forced: bool) -> Plan:
    """Where to start (see the module docstring's table). Pure."""
    if not seekable or stat is None:
        return Plan(Start.FULL)
    if cursor is None:
        return Plan(Start.FULL, "no read position recorded for this manifest (a new run, or a state dir from an "
                                "earlier version): comparing the whole catalog")
    if forced:
        return Plan(Start.FULL)
    if scattered:
        return Plan(Start.FULL, "results put back in play anywhere in the catalog (--retry-failed, or a results "
                                "file cut short): comparing the whole catalog")
    if cursor.settings != settings:
        return Plan(Start.FULL, "settings that change fingerprints differ from the last read (config outputs, "
                                "--analyses, or the pipeline's version): comparing the whole catalog")
    if cursor.counts.get("local", 0):
        return Plan(Start.FULL)  # local files' stamps: only a full read stats them again
    if stat.st_size < cursor.position:
        return Plan(Start.FULL, f"the manifest is shorter ({stat.st_size} bytes) than where the last session read "
                                f"to ({cursor.position}): truncated; comparing the whole catalog")
    if (stat.st_size, stat.st_mtime_ns, stat.st_ino) == (cursor.size, cursor.mtime_ns, cursor.inode):
        return Plan(Start.SEEK)
    return Plan(Start.VERIFY)


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def settings_digest(*parts: object) -> str:
    """What else a fingerprint depends on, as one short digest (the pipeline's version included)."""
    return hashlib.sha256(repr((__version__, *parts)).encode()).hexdigest()[:32]


class ReadCursor:
    """The cursor of one session's read (see the module docstring)."""

    def __init__(self, ckpt: Checkpoint, location: str, *, session: int, settings: str, seekable: bool,
                 scattered: bool, forced: bool) -> None:
        self._ckpt = ckpt
        self._path = Path(location)
        self.source = manifest_key(location)
        self._session = session
        self._settings = settings
        self._seekable = seekable
        self._scattered = scattered
        self._forced = forced
        self.tracker: LineTracker | None = None
        self.reread: list[tuple[int, int]] = []  # (byte, line number) of the open lines
        self._reread_at: dict[int, int] = {}
        self.cursor = Cursor(self.source, session)
        self.skipped = False  # this session went straight to a recorded position
        self.carried: dict[str, int] = {}  # what the skipped part held (lines, units, rejected...)
        self._began: os.stat_result | None = None  # the file as this session found it (`start`)

    @property
    def read(self) -> int:
        """The pass this session's read belongs to (`Cursor.pass_`)."""
        return self.cursor.pass_

    @property
    def first_line(self) -> int:
        """The first line number this session reads past the open lines (1 for a full read)."""
        return self.tracker.line if self.tracker is not None else 1

    def start(self) -> None:
        """Decide (`plan`), check the digests when needed, log a full read's reason once."""
        stat = self._began = self._stat()
        cursor = self._ckpt.cursors.get(self.source) if self._seekable else None
        decided = plan(cursor, seekable=self._seekable, stat=stat, settings=self._settings,
                       scattered=self._scattered, forced=self._forced)
        last_read = self._ckpt.get_meta(MetaKey.LAST_READ)
        if cursor is not None and decided.start is not Start.FULL and last_read not in (None, self.source):
            # Another source was read since (`--append`): its read marked the keys it found, some of
            # them this source's too, so the part skipped would not count them as found here.
            decided = Plan(Start.FULL, "another manifest was read into this run since this one (--append): comparing "
                                       "the whole catalog")
        self._ckpt.set_meta(MetaKey.LAST_READ, self.source)
        if decided.start is Start.VERIFY:
            assert cursor is not None
            if not self._verify(cursor):
                decided = Plan(Start.FULL, "the manifest changed inside the part read before: comparing the whole "
                                           "catalog")
        if decided.start is Start.FULL or cursor is None:
            if decided.why:
                log.info("%s", decided.why)
            if self._seekable:
                self._ckpt.drop_cursor(self.source)
                self.tracker = LineTracker(0, 1)
            self.cursor = Cursor(self.source, self._session, settings=self._settings,
                                 segments=[[0, 0, hashlib.sha256().hexdigest()]])
        else:
            self.cursor = cursor
            self.reread = self._ckpt.cursors.open_lines(self.source)
            self._reread_at = {line: at for at, line in self.reread}
            self.tracker = LineTracker(cursor.position, cursor.line)
            self.cursor.segments.append([cursor.position, cursor.position, self.tracker.digest()])
            self.skipped = cursor.position > 0
            self.carried = dict(cursor.counts)
            log.info("manifest unchanged up to line %d (byte %d): reading on from there (%d lines with work left "
                     "read again)", cursor.line, cursor.position, len(self.reread))
        self._ckpt.set_read(self.read)

    def at_of(self, line: int) -> int | None:
        """The start byte of line `line`, when this session read it."""
        if self.tracker is not None and line in self.tracker.starts:
            return self.tracker.starts[line]
        return self._reread_at.get(line)

    def open_keys(self, jobs: list[Job]) -> list[tuple[str, int, int]]:
        """(key, start byte, line) of `jobs` (read with work left) whose line start is known."""
        out = []
        for job in jobs:
            at = self.at_of(job.line)
            if at is not None:
                out.append((job.key, at, job.line))
        return out

    def advance(self, next_line: int | None, counts: dict[str, int], *, local: bool) -> Cursor | None:
        """The cursor after a batch whose lines end before line `next_line` (None: the end of the
        file), or None when it cannot move there (a re-read open line, not a hashed boundary).
        `counts` are the totals read so far, the skipped part included."""
        tracker = self.tracker
        if tracker is None:
            return None
        if next_line is None:
            if not tracker.at_eof:
                return None
            position, line = tracker.end, tracker.end_line
        else:
            found = tracker.starts.get(next_line)
            if found is None or found != tracker.hashed:
                return None
            position, line = found, next_line
        if position < self.cursor.position:
            return None
        cursor = self.cursor
        cursor.position, cursor.line = position, line
        # The identity that lets the next session skip the prefix unchecked is the one this
        # session began with, and only while the file still has it: a manifest replaced or edited
        # during the session (sed -i, an editor's save, an append while live) records none, so
        # the next session checks the prefix's digests (of the bytes actually read) first.
        stat, began = self._stat(), self._began
        if stat is not None and began is not None and _identity(stat) == _identity(began):
            cursor.size, cursor.mtime_ns, cursor.inode = _identity(stat)
        else:
            cursor.size = cursor.mtime_ns = cursor.inode = -1
        cursor.segments[-1] = [tracker.start, position, tracker.digest()]
        cursor.counts = {**counts, "local": int(local or cursor.counts.get("local", 0))}
        cursor.complete = cursor.complete or next_line is None
        if next_line is not None:
            tracker.forget(next_line)
        return cursor

    def _stat(self) -> os.stat_result | None:
        if not self._seekable:
            return None
        try:
            return self._path.stat()
        except OSError:
            return None

    def _verify(self, cursor: Cursor) -> bool:
        """Whether the recorded digests of [0, position) hold for the file now. The prefix is
        read once: its segments are merged into one (which takes a second digest over the same
        bytes) only once there are `MERGE_AT` of them, so a nightly append costs one pass."""
        bounds = [(start, end) for start, end, _ in cursor.segments]
        joined = all(bounds[i][0] == bounds[i - 1][1] for i in range(1, len(bounds)))
        if not bounds or bounds[0][0] != 0 or bounds[-1][1] != cursor.position or not joined:
            return False
        merge = len(cursor.segments) >= MERGE_AT
        whole = hashlib.sha256()
        try:
            with open(self._path, "rb") as f:
                for start, end, digest in cursor.segments:
                    f.seek(start)
                    part = hashlib.sha256()
                    left = end - start
                    while left > 0:
                        chunk = f.read(min(HASH_CHUNK, left))
                        if not chunk:
                            return False
                        part.update(chunk)
                        if merge:
                            whole.update(chunk)
                        left -= len(chunk)
                    if part.hexdigest() != digest:
                        return False
        except OSError:
            return False
        if merge:
            cursor.segments = [[0, cursor.position, whole.hexdigest()]]
        return True
