"""What a result was computed from: the fingerprint of one (item, analysis). Pure.

A fingerprint is a short hash over two things:

- the source: its identity (the URL, the ``oss://`` path, the local path, or a hash of inline
  content) and, where the catalog can see it without reading the bytes, what stands for its
  content: an OSS object's ETag and size as a listing reports them, a local file's size and
  mtime (nanoseconds) as a stat reports them (`Job.stamp`, filled in where the item was read);
  ``file_name`` and ``file_type``, which change what the service is told;
- the analysis's resolved settings: capability, service id, parameters, output (after config
  templates), options, chunks given in the manifest, and, for a chained analysis, its parent's
  fingerprint (a changed parent changes every analysis after it).

Two runs that compute the same fingerprint for a key would send the same request for the same
bytes, so a result already written for it is current; any other fingerprint means the line on
file is stale. `meta` is not part of it: it is copied to the line, not sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from .job import Job

__all__ = ["FINGERPRINT_CHARS", "file_stamp", "fingerprint", "items_of", "object_stamp", "source_of",
           "with_fingerprints"]

#: Hex characters kept of the sha256: 128 bits, no collision in any catalog.
FINGERPRINT_CHARS = 32

_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode


def file_stamp(size: int, mtime_ns: int) -> str:
    """What stands for a local file's bytes: its size and modification time."""
    return f"size={size};mtime_ns={mtime_ns}"


def object_stamp(etag: str | None, size: int) -> str:
    """What stands for an OSS object's bytes: its ETag (quotes dropped) and size."""
    return f"etag={(etag or '').strip(chr(34))};size={size}"


def source_of(job: Job) -> str:
    """The source a result line names: the URL, ``oss://`` path or absolute local path, or
    ``inline:sha256:<hex>`` for base64 content (never the content itself)."""
    if job.source_kind == "content":
        return "inline:sha256:" + hashlib.sha256(job.source.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return job.source


def fingerprint(job: Job, parent: str | None = None) -> str:
    """The fingerprint of `job` (see the module docstring); `parent` is the fingerprint of the
    analysis it runs `after`, if any."""
    record: dict[str, Any] = {
        "source": [job.source_kind, source_of(job), job.stamp, job.file_name, job.file_type],
        "analysis": [job.capability, job.service_id, job.parameters, job.output, job.options, job.chunks,
                     job.after, parent],
    }
    return hashlib.sha256(_canonical(record).encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT_CHARS]


def with_fingerprints(jobs: Sequence[Job]) -> list[Job]:
    """The jobs of one item with `fingerprint` set, parents before the analyses `after` them
    whatever their order in the list (`after` chains have no cycle: validation refused those)."""
    if len(jobs) == 1 and jobs[0].after is None:  # most items: one analysis, no chain (half the cost)
        return [_with_fingerprint(jobs[0], fingerprint(jobs[0]))]
    by_name = {job.analysis: job for job in jobs}
    done: dict[str, str] = {}

    def of(name: str, path: tuple[str, ...] = ()) -> str:
        if name not in done:
            job = by_name[name]
            parent = of(job.after, (*path, name)) if job.after is not None and job.after not in path else None
            done[name] = fingerprint(job, parent)
        return done[name]

    return [_with_fingerprint(job, of(job.analysis)) for job in jobs]


def _with_fingerprint(job: Job, value: str) -> Job:
    """`job` with `fingerprint` set: a shallow copy of its fields, not `dataclasses.replace`,
    which runs the whole constructor and its checks again, nor `copy.copy` (both measured: a
    third of what deciding a catalog adds to reading it)."""
    copied = object.__new__(Job)
    copied.__dict__.update(job.__dict__)  # a new frozen Job of our own, complete before anyone sees it
    copied.__dict__["fingerprint"] = value
    return copied


def items_of(jobs: Iterable[Job]) -> list[list[Job]]:
    """Consecutive jobs grouped by item (an item's analyses come one after another, on its line)."""
    groups: list[list[Job]] = []
    for job in jobs:
        if groups and (groups[-1][0].line, groups[-1][0].id) == (job.line, job.id):
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups
