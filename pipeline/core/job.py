"""The unit of work: one validated manifest item."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Source kinds a manifest item may carry (exactly one per item).
SOURCE_KINDS = ("url", "oss", "path", "content")

#: Between an item's id and an analysis name in a checkpoint key (names never contain it).
KEY_SEP = "\x1f"
#: What an analysis name may be: it names result lines, output prefixes and `after` links.
ANALYSIS_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def job_key(item_id: str, analysis: str) -> str:
    """The checkpoint key of one (item, analysis): one result line each."""
    return f"{item_id}{KEY_SEP}{analysis}"


def split_key(key: str) -> tuple[str, str | None]:
    """(item id, analysis) of a key; a key from before analyses existed has no analysis."""
    item_id, sep, analysis = key.rpartition(KEY_SEP)
    return (item_id, analysis) if sep else (key, None)


class OfAnalysis:
    """What a job and its result line share: one (item, analysis), named `key` in the checkpoint.
    A frozen dataclass mixes it in; an empty `analysis` becomes the capability."""

    id: str
    capability: str
    analysis: str

    def __post_init__(self) -> None:
        if not self.analysis:
            object.__setattr__(self, "analysis", self.capability)

    @property
    def key(self) -> str:
        """Its checkpoint key: (item id, analysis)."""
        return job_key(self.id, self.analysis)


@dataclass(frozen=True)
class Job(OfAnalysis):
    """One analysis of one manifest item after validation: the unit of work.

    `analysis` names it within the item (default: the capability); `after` names the analysis
    of the same item it waits for. `capability` is the canonical name (see
    `capabilities.CAPABILITIES`); `source_kind` is one of SOURCE_KINDS and `source` its value
    (for `path`, the file is read at submit time, never here). `line` is the manifest line (or
    record) number, for messages.
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
    analysis: str = ""
    after: str | None = None
    #: What stands for the source's bytes where the catalog saw them without reading them (a
    #: local file's size and mtime, an OSS object's ETag and size: `core.fingerprint`); None
    #: for a URL or inline content, whose identity is the source itself.
    stamp: str | None = None
    #: What its result is computed from (`core.fingerprint`), set by the reader.
    fingerprint: str | None = None

    @property
    def after_key(self) -> str | None:
        """The checkpoint key of the analysis it waits for, if any."""
        return job_key(self.id, self.after) if self.after is not None else None
