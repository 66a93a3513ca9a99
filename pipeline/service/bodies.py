"""Request bodies for local files: read at submit time, base64-encoded, size-checked.

The body builders themselves are pure and live in the capability table; this adds the one
piece of I/O they need (reading a `path` source) and the service's 8 MB body limit.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import anyio

from ..core.capabilities import MAX_BODY_BYTES, Capability
from ..core.errors import InvalidParameter
from ..core.job import Job

__all__ = ["body_size", "check_body_size", "request_body"]


def body_size(body: dict[str, Any]) -> int:
    """Bytes of the body as the client sends it (compact JSON, UTF-8)."""
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def check_body_size(body: dict[str, Any], source: str, limit: int = MAX_BODY_BYTES) -> None:
    """Refuse a body the service would refuse: its limit is 8 MB."""
    size = body_size(body)
    if size > limit:
        raise InvalidParameter(
            "InvalidParameter",
            f"{source} makes a {size / 1e6:.1f} MB request body, over the {limit / 1e6:.0f} MB limit: "
            "upload it and give an oss:// path or a url instead")


async def request_body(cap: Capability, job: Job) -> dict[str, Any]:
    """The create body of `job`; a local file is read now (in a worker thread)."""
    if job.source_kind != "path":
        return cap.build_body(job, None)
    try:
        raw = await anyio.to_thread.run_sync(Path(job.source).read_bytes)
    except OSError as exc:
        raise InvalidParameter("FileError", f"cannot read {job.source}: {exc.strerror}") from None
    body = cap.build_body(job, base64.b64encode(raw).decode("ascii"))
    check_body_size(body, job.source)
    return body
