"""A local file touched but not changed (`touch FILE`: its mtime moved, its bytes the same) is not
a changed item when the checkpoint holds the SHA-256 of its bytes.

A local file's fingerprint stands for its bytes by its size and mtime (`core.fingerprint`), so a
new mtime alone would make it "changed" and send (and bill) it again. When the file's size is the
one on record and only its mtime moved, and the checkpoint recorded the file's SHA-256 (an item
whose file was uploaded to OSS: the `uploads` table), the file is hashed: the same digest means
the same bytes, so it keeps the stamp on record (its fingerprint, hence "unchanged"). Without a
recorded digest (a file sent inline, never uploaded) there is nothing to compare with, and a
touched file counts as changed, as before. The file is hashed again on every run until its mtime
is the recorded one (one read of a touched file per run; the record is only rewritten by an upload).

Three steps, so that only the hashing leaves the event loop (the checkpoint's connection stays
in its thread): `suspects` (which items to hash), `confirmed` (blocking: hash them),
`fingerprinted` (the recorded stamp stands in for the fingerprint only; the job keeps its own).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..core.fingerprint import file_stamp, items_of, with_fingerprints
from ..core.job import Job
from ..state.uploads import UploadRecord
from ..upload.files import FileError, hash_file

__all__ = ["confirmed", "fingerprinted", "suspects"]

_STAMP = re.compile(r"size=(\d+);mtime_ns=(-?\d+)")


def suspects(jobs: Iterable[Job],
             record_of: Callable[[str], UploadRecord | None]) -> dict[str, tuple[str, UploadRecord]]:
    """Item id -> (local path, upload record) of the items whose file has the recorded size and
    digest on record, but another mtime: those to hash."""
    found: dict[str, tuple[str, UploadRecord]] = {}
    seen: set[str] = set()
    for job in jobs:
        if job.source_kind != "path" or job.stamp is None or job.id in seen:
            continue
        seen.add(job.id)
        match = _STAMP.fullmatch(job.stamp)
        if match is None:
            continue
        record = record_of(job.id)
        if record is None or record.mtime_ns is None:
            continue
        if int(match.group(1)) == record.size and int(match.group(2)) != record.mtime_ns:
            found[job.id] = (job.source, record)
    return found


def confirmed(suspected: Mapping[str, tuple[str, UploadRecord]]) -> dict[str, str]:
    """Item id -> the stamp on record, for the suspects whose bytes hash to the recorded digest.
    Blocking (reads the files); a file that cannot be read or changes meanwhile is left changed."""
    kept: dict[str, str] = {}
    for item_id, (path, record) in suspected.items():
        try:
            digest, stamp = hash_file(Path(path))
        except FileError:
            continue
        if digest == record.sha256 and stamp.size == record.size and record.mtime_ns is not None:
            kept[item_id] = file_stamp(record.size, record.mtime_ns)
    return kept


def fingerprinted(batch: list[Job], kept: Mapping[str, str]) -> list[Job]:
    """The jobs of `batch` (whole items) with their fingerprints, those of the items `confirmed`
    kept computed with the stamp on record. Every job keeps its own stamp: later checks (a file
    changed before its upload) compare it with the file as it is now."""
    out: list[Job] = []
    for item in items_of(batch):
        if item[0].id not in kept or not any(job.source_kind == "path" for job in item):
            out += with_fingerprints(item)
            continue
        stamped = [dataclasses.replace(job, stamp=kept[job.id]) if job.source_kind == "path" else job for job in item]
        out += [dataclasses.replace(job, stamp=own.stamp) for job, own in zip(with_fingerprints(stamped), item,
                                                                               strict=True)]
    return out
