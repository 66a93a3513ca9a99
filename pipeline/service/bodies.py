"""Request bodies as they go on the wire: built from the capability table, encoded once.

The body builders themselves are pure and live in the capability table; this adds the one
piece of I/O they need (reading a `path` source, at submit time), the encoding the client
sends (compact JSON, UTF-8: `encode_body`, the only place a body is encoded) and the
service's 8 MB body limit, checked on those very bytes.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ..core.capabilities import MAX_BODY_BYTES, Capability
from ..core.echo import clipped
from ..core.errors import InvalidParameter
from ..core.fingerprint import file_stamp
from ..core.job import Job

__all__ = ["RequestBody", "check_body_size", "encode_body", "request_body"]


def _read(path: Path) -> tuple[bytes, str]:
    """A file's bytes and the stamp (`file_stamp`) of what was read, from the open file; a file
    whose stamp moved during the read, or that read short, gets a stamp no listing gives."""
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        raw = f.read()
        after = os.fstat(f.fileno())
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(raw) != after.st_size:
        return raw, "changing while it was read"
    return raw, file_stamp(after.st_size, after.st_mtime_ns)


@dataclass(frozen=True)
class RequestBody:
    """A create's body, encoded once: `data` is what the client sends; `fields` what it says."""

    fields: Mapping[str, Any]
    data: bytes

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> RequestBody:
        """`fields` and their encoding (`encode_body`)."""
        return cls(fields, encode_body(fields))


def encode_body(fields: Mapping[str, Any]) -> bytes:
    """The bytes of a request body: compact JSON, UTF-8. A value JSON cannot hold is the item's
    fault: `InvalidParameter`, sent nowhere."""
    try:
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:  # json names types, never values: nothing secret to redact
        raise InvalidParameter("InvalidParameter", f"request body is not JSON-serializable: {exc}") from exc


def check_body_size(body: RequestBody, source: str, limit: int = MAX_BODY_BYTES) -> None:
    """Refuse a body the service would refuse: its limit is 8 MB."""
    size = len(body.data)
    if size > limit:
        raise InvalidParameter(
            "InvalidParameter",
            f"{source} makes a {size / 1e6:.1f} MB request body, over the {limit / 1e6:.0f} MB limit: "
            "upload it and give an oss:// path or a url instead")


async def request_body(cap: Capability, job: Job) -> RequestBody:
    """The create body of `job`, encoded; a local file is read now (in a worker thread) and the
    body it makes is checked against the service's limit."""
    if job.source_kind != "path":
        return RequestBody.of(cap.build_body(job, None))
    try:
        raw, stamp = await anyio.to_thread.run_sync(_read, Path(job.source))
    except OSError as exc:
        raise InvalidParameter("FileError", f"cannot read {job.source}: {exc.strerror}") from None
    if job.stamp is not None and stamp != job.stamp:
        # Its fingerprint holds the stamp it was listed (or checked) with: a result of other bytes
        # recorded under it would pass for current. Failed unsent; the next run sees it changed.
        raise InvalidParameter("FileError", f"{clipped(job.source)} changed after it was listed (now {stamp}, "
                                            f"listed with {job.stamp}): not sent; the next run sends its new content")
    body = RequestBody.of(cap.build_body(job, base64.b64encode(raw).decode("ascii")))
    check_body_size(body, job.source)
    return body
