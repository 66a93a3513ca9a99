"""The unit of work: one validated manifest item."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Source kinds a manifest item may carry (exactly one per item).
SOURCE_KINDS = ("url", "oss", "path", "content")


@dataclass(frozen=True)
class Job:
    """One manifest item after validation.

    `capability` is the canonical name (see `capabilities.CAPABILITIES`); `source_kind` is one
    of SOURCE_KINDS and `source` its value (for `path`, the file is read at submit time, never
    here). `line` is the manifest line (or record) number, for messages.
    """

    id: str
    capability: str
    service_id: str
    source_kind: str
    source: str
    line: int = 0
    file_name: str | None = None
    file_type: str | None = None
    parameters: Mapping[str, Any] | None = None
    output: Mapping[str, Any] | str | None = None
    options: Mapping[str, Any] | None = None
    chunks: list[Any] | None = None
    meta: Any = None
    #: The OSS object a local file was uploaded to (`oss://bucket/key`), once it was.
    source_oss: str | None = None
