"""What a listed source (a folder walk, an OSS listing) yields, and the rules every one applies.

Each file or object that passes becomes a `Listed`: its `record` is the ``(line, item)`` pair
the manifest readers yield (`pipeline.manifest.formats.RawRecord`), so `validate_record`
checks it like a manifest line; ``item`` is ``{"id", "path" | "oss", "analyses"}``. What the
listing saw of the bytes (size, mtime, ETag) is not in the item (the validator refuses unknown
fields, and none of it is the user's to set): it travels beside it, in `Listed.stamp`, for the
fingerprint.

`Selection` is the rule both sources apply to each entry, in this order: the include/exclude
globs on its id (`pipeline.manifest.globs`), then its media kind's analyses: a mapping
``{kind: [analysis names or objects]}`` (config ``analyses_by_type``), or the run-wide
``--analyses`` given to each file whose kind the capability reads. An entry with no analyses
is counted as skipped, not rejected. `ListingCounts` says what was turned away and why, and
whether the listing ran to its end (`complete`): a listing that stopped part way raises, and
one that could not read a subtree names it, so no caller takes a partial listing for the
whole catalog.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.capabilities import CAPABILITIES, resolve
from ..core.echo import shown
from ..core.errors import ManifestError
from ..core.media import MEDIA_KINDS, kinds_read_by, media_kind
from .analyses import run_analyses
from .globs import Globs, compile_globs, decide

__all__ = ["Listed", "ListingCounts", "Selection", "SourceStamp"]


@dataclass(frozen=True, slots=True)
class SourceStamp:
    """What a listing saw of an item's bytes: its source and the fields of its fingerprint.

    A local file has `mtime_ns`; an OSS object has `etag` (as OSS sends it, quoted) and
    `last_modified` (ISO 8601, UTC)."""

    source: str  # the absolute local path, or oss://bucket/key
    size: int
    mtime_ns: int | None = None
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class Listed:
    """One listed file or object that passed the selection."""

    line: int  # 1-based position among the items this listing yielded (a manifest's line number)
    item: dict[str, Any]  # {"id", "path" | "oss", "analyses"}: what validate_record checks
    stamp: SourceStamp
    kind: str  # image, video or audio

    @property
    def id(self) -> str:
        """The item's id: the relative path, or the object key."""
        return str(self.item["id"])

    @property
    def record(self) -> tuple[int, dict[str, Any]]:
        """The ``(line, item)`` pair a manifest reader yields."""
        return self.line, self.item


@dataclass
class ListingCounts:
    """What one listing found and turned away; filled in as it goes.

    `complete` turns True only when the listing ran to its end; `unreadable` lists the
    subtrees (id prefixes, ending in ``/``) it could not read, whose items it did not see, and
    the ids of followed links whose target it could not reach (a file or a subtree)."""

    listed: int = 0  # files or objects seen, before any rule
    yielded: int = 0
    excluded: int = 0  # turned away by --include / --exclude
    no_analyses: Counter[str] = field(default_factory=Counter)  # kind ("other": none) -> files skipped
    hidden: int = 0  # hidden files and directories (a directory counts once)
    symlinks: int = 0  # symbolic links not followed
    broken_links: int = 0  # followed links to nothing (also named in `unreadable`)
    loops: int = 0  # followed links back to a directory above them
    special: int = 0  # devices, pipes, sockets
    vanished: int = 0  # gone between the directory's listing and the file's stat
    folder_markers: int = 0  # OSS: zero-byte "dir/" objects
    unreadable: list[str] = field(default_factory=list)
    pattern_hits: dict[str, int] = field(default_factory=dict)  # pattern -> ids it matched
    pages: int = 0  # OSS: pages answered
    retries: int = 0  # OSS: requests tried again
    complete: bool = False

    @property
    def skipped(self) -> int:
        """Entries counted but not yielded because no analysis applies to their kind."""
        return sum(self.no_analyses.values())

    def unmatched_patterns(self) -> list[str]:
        """The include/exclude patterns that matched no listed id (worth a warning)."""
        return [pattern for pattern, hits in self.pattern_hits.items() if hits == 0]


class Selection:
    """Which listed entries become items, and with which analyses (see the module docstring).

    `analyses_by_type`: ``{"image" | "video" | "audio": [name or analysis object, ...]}``;
    `analyses`: the run-wide ``--analyses``, which win when both are given. Raises
    `ManifestError` (exit 2) at once for an unknown kind or capability, or a capability given
    a kind it does not read."""

    def __init__(self, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 analyses_by_type: Mapping[str, Sequence[Any]] | None = None,
                 analyses: Sequence[str] | None = None) -> None:
        self.globs: Globs = compile_globs(include, exclude)
        run_wide = run_analyses(analyses)
        if run_wide:
            self.by_kind = {kind: [n for n in run_wide if kind in kinds_read_by(CAPABILITIES[n])]
                            for kind in MEDIA_KINDS}
        else:
            self.by_kind = _checked_mapping(analyses_by_type or {})
        if not any(self.by_kind.values()):
            raise ManifestError("no analyses for a listed source: give --analyses, or map media kinds to "
                                "analyses in the config (analyses_by_type: {image: [image_analyze], "
                                "video: [video_snapshot]})", source="--analyses")

    def new_counts(self) -> ListingCounts:
        """Counts for one listing, with every pattern at zero hits (so one matching nothing shows)."""
        return ListingCounts(pattern_hits=dict.fromkeys(self.globs.patterns, 0))

    def admit(self, item_id: str, counts: ListingCounts) -> tuple[str, list[Any]] | None:
        """(kind, analyses) for a listed id, or None when it is turned away (and counted why)."""
        counts.listed += 1
        decision = decide(item_id, self.globs)
        patterns = self.globs.patterns
        for hit in decision.hits:
            counts.pattern_hits[patterns[hit]] += 1
        if not decision.kept:
            counts.excluded += 1
            return None
        kind = media_kind(item_id)
        analyses = self.by_kind.get(kind, []) if kind is not None else []
        if kind is None or not analyses:
            counts.no_analyses[kind or "other"] += 1
            return None
        return kind, list(analyses)


def _checked_mapping(mapping: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """`analyses_by_type` checked as far as it can be without an item: the kinds, the list, and
    each capability (an analysis object's fields are checked per item, by `validate_record`)."""
    checked: dict[str, list[Any]] = {}
    for kind, entries in mapping.items():
        where = f"analyses_by_type.{shown(kind, 20)}"
        if kind not in MEDIA_KINDS:
            raise ManifestError(f"unknown media kind {shown(kind)}: use {', '.join(MEDIA_KINDS)}", source=where)
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
            raise ManifestError("must be a list of analyses, e.g. [image_analyze, object_detection]", source=where)
        for entry in entries:
            given = entry.get("capability") if isinstance(entry, Mapping) else entry
            cap = resolve(given) if isinstance(given, str) else None
            if cap is None:
                raise ManifestError(f"unknown capability {shown(given)} (known: {', '.join(CAPABILITIES)})",
                                    source=where)
            if kind not in kinds_read_by(cap):
                reads = " and ".join(sorted(kinds_read_by(cap)))
                raise ManifestError(f"{cap.name} reads {reads}, not {kind}: list it under a kind it reads",
                                    source=where)
        checked[kind] = list(entries)
    return checked
