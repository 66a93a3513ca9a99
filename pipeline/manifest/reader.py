"""Read a manifest as a lazy stream of validated `Job`s and `Rejected` records.

`read_manifest` picks the format by extension (JSON Lines, CSV, YAML, plain text with a source
per line; ``-`` is JSON Lines on stdin), streams it record by record
(`pipeline.manifest_formats`), checks each item with `validate_record`
(`pipeline.manifest_analyses`, one Job per analysis of the item) and rejects repeated ids. A
bad record never stops the stream: it comes out as a `Rejected` with its line number and a
reason that names the field and says how to fix it. Local media files are only stat()ed here,
never read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO

from ..core.capabilities import MAX_BODY_BYTES
from ..core.echo import shown
from ..core.errors import ManifestError
from ..core.idset import IdSet
from ..core.job import Job, job_key
from .analyses import analysis_names, run_analyses, validate_record
from .formats import Foreign, RawRecord, Rejected, iter_csv, iter_jsonl, iter_txt
from .item import ALLOWED_KEYS, derive_id, estimated_body_bytes, validate_item
from .line_id import line_id
from .positions import LineTracker, read_line_at
from .yaml_items import iter_yaml

__all__ = [
    "ALLOWED_KEYS",
    "FORMATS",
    "Rejected",
    "Skipped",
    "derive_id",
    "estimated_body_bytes",
    "quick_id",
    "read_manifest",
    "validate_item",
    "validate_record",
]

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
           ".yaml": "yaml", ".yml": "yaml", ".txt": "txt"}


class Owner(Protocol):
    """A shard (`state.shards.Shard`): which items, and which lines without a usable id, it runs."""

    def owns(self, item_id: str) -> bool: ...

    def owns_line(self, line: int) -> bool: ...


@dataclass(slots=True)
class Skipped:
    """One analysis of an item the caller already finished (see `read_manifest`'s `skip`): not
    validated again. `analysis` defaults to the capability and `key` to ``job_key(id, analysis)``.
    Another shard's items (no capability) may come as one `Skipped` for `lines` lines in a row."""

    line: int
    id: str
    capability: str | None  # canonical name when the analysis names a known capability
    key: str = ""
    analysis: str | None = None
    lines: int = 1

    def __post_init__(self) -> None:
        if self.analysis is None:
            self.analysis = self.capability
        if not self.key:
            self.key = job_key(self.id, self.analysis) if self.analysis else self.id


def read_manifest(path: str | os.PathLike[str] | None, *, stdin: TextIO | None = None,
                  base_dir: Path | None = None, max_body_bytes: int = MAX_BODY_BYTES,
                  check_files: bool = True, skip: Callable[[str], bool] | None = None,
                  expected_items: int = 0, uploads: bool = False, analyses: Sequence[str] | None = None,
                  outputs: Mapping[str, str] | None = None, tracker: LineTracker | None = None,
                  reread: Sequence[tuple[int, int]] = (), ids: Callable[[str, int], bool] | None = None,
                  shard: Owner | None = None) -> Iterator[Job | Rejected | Skipped]:
    """Stream the manifest at `path` (``"-"`` or None: JSON Lines on `stdin`) as Jobs and Rejecteds.

    Each item gives one Job per analysis, in manifest order (`validate_record`). Relative `path`
    sources resolve against `base_dir` (default: the manifest's directory, or the working
    directory for stdin). `analyses` (``--analyses``) are the capabilities of items that name
    neither `capability` nor `analyses`; `outputs` (config `outputs`) fills the output of
    analyses that give none. Raises `ManifestError` at once for an unknown or repeated name in
    `analyses`, an unsupported extension or a manifest that does not exist; everything else is
    a `Rejected` in the stream.

    `skip(key)` (a resume's "already done?", asked with `job_key(id, analysis)`) is
    asked before validation: an item whose every analysis is done comes out as one `Skipped` per
    analysis, without the validation cost (file checks included), so resuming a huge manifest
    reaches the unfinished items fast; an item with some analyses left is validated and yields
    all its Jobs (the caller tells done ones by `Job.key`). Repeated ids still get rejected.
    `expected_items` is kept for callers; the duplicate-id check keeps its ids on disk
    (`core.idset.IdSet`), so memory does not grow with the manifest; `ids(id, line)` replaces it
    (False: the id repeats an earlier item's; a run also asks its checkpoint, for the part of the
    manifest it did not read again).

    A JSON Lines manifest can be read part-way (a resume, `engine.read_cursor`): the lines at
    the (byte, line number) pairs of `reread` first, then the file from `tracker.start`, which
    notes where each line starts and hashes what it read (`manifest.positions`). `shard` (`--shard
    K/N`) is asked before validation whether it owns the id the item will have (by line number
    when that cannot be told cheaply: then the item is validated and the caller decides); an
    item it declines comes out as a `Skipped` with no capability, unvalidated. A JSON Lines line
    that opens with its id is asked before it is even decoded (`manifest.line_id`), unless its
    line number is the shard's (the line's owner if it turns out malformed must decode it).
    """
    run_wide = run_analyses(analyses)
    records: Iterable[RawRecord]
    foreign = None if shard is None else _foreign(shard)
    if path is None or str(path) == "-":
        source: Any = stdin if stdin is not None else sys.stdin
        # Prefer the bytes underneath, so bad UTF-8 rejects one line instead of ending the run.
        records = iter_jsonl(getattr(source, "buffer", source), foreign=foreign)
        base = base_dir or Path.cwd()
    else:
        manifest = Path(path)
        kind = FORMATS.get(manifest.suffix.lower())
        if kind is None:
            raise ManifestError(f"unsupported manifest type '{manifest.suffix or '(none)'}': use "
                                ".jsonl, .ndjson or .json (JSON Lines), .csv, .yaml or .yml, .txt (a URL, "
                                "oss:// or path per line), or '-' for JSON Lines on stdin", source=str(manifest))
        if not manifest.is_file():
            what = "is not a file" if manifest.exists() else "does not exist"
            raise ManifestError(f"manifest {what}: check the path", source=str(manifest))
        if not os.access(manifest, os.R_OK):
            raise ManifestError("manifest is not readable: check its permissions", source=str(manifest))
        if tracker is not None and kind == "jsonl":
            records = _from(manifest, tracker, reread, foreign)
        elif kind == "jsonl":
            records = _jsonl(manifest, foreign)
        else:
            records = _records(manifest, kind, max_body_bytes)
        base = base_dir or manifest.parent.absolute()
    return _validated(records, base, skip=skip, ids=ids, shard=shard, analyses=run_wide,
                      checks={"max_body_bytes": max_body_bytes, "check_files": check_files, "uploads": uploads,
                              "outputs": outputs})


def _records(manifest: Path, kind: str, max_body_bytes: int) -> Iterator[RawRecord]:
    if kind == "csv":
        with open(manifest, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            yield from iter_csv(f, max_field=2 * max_body_bytes)
    else:
        readers: dict[str, Callable[[BinaryIO], Iterator[RawRecord]]] = {"jsonl": iter_jsonl, "yaml": iter_yaml,
                                                                          "txt": iter_txt}
        with open(manifest, "rb") as fb:
            yield from readers[kind](fb)


def _jsonl(manifest: Path, foreign: Callable[[bytes, int], str | None] | None) -> Iterator[RawRecord]:
    with open(manifest, "rb") as fb:
        yield from iter_jsonl(fb, foreign=foreign)


def _from(manifest: Path, tracker: LineTracker, reread: Sequence[tuple[int, int]],
          foreign: Callable[[bytes, int], str | None] | None = None) -> Iterator[RawRecord]:
    """The records of the lines at `reread`, then of the file from `tracker.start`."""
    with open(manifest, "rb") as fb:
        for at, line in reread:
            yield from iter_jsonl([read_line_at(fb, at)], first=line, foreign=foreign)
        yield from iter_jsonl(tracker.lines(fb), first=tracker.line, foreign=foreign)


def _foreign(shard: Owner) -> Callable[[bytes, int], str | None]:
    """`iter_jsonl`'s pre-decode filter for `shard`: the id of a line that is neither the shard's
    by its line number nor by the id that opens it, else None (decode it). Asked of every line
    of the manifest by every shard: kept to three calls."""
    owns, owns_line = shard.owns, shard.owns_line

    def foreign(raw: bytes, line: int) -> str | None:
        if owns_line(line):  # the line's owner if it is malformed: it must decode it to know
            return None
        item_id = line_id(raw)
        return None if item_id is None or owns(item_id) else item_id
    return foreign


def _validated(records: Iterable[RawRecord], base: Path, *, skip: Callable[[str], bool] | None,
               analyses: tuple[str, ...], checks: Mapping[str, Any], ids: Callable[[str, int], bool] | None = None,
               shard: Owner | None = None,
               expected_items: int = 0) -> Iterator[Job | Rejected | Skipped]:
    """The record loop (`read_manifest`'s docstring); `expected_items` is accepted and unused
    (the duplicate check no longer sizes a table)."""
    if ids is None:
        ids = _new_ids()
    for record in records:
        if isinstance(record, Rejected):
            yield record
            continue
        if isinstance(record, Foreign):  # another shard's, told from the lines' bytes
            yield Skipped(record.line, record.id, None, key=record.id, lines=record.lines)
            continue
        line, raw = record
        if shard is not None and isinstance(raw, Mapping):
            guess = quick_id(raw)
            if guess is not None and not shard.owns(guess):  # another shard's: not validated here
                yield Skipped(line, guess, None, key=guess)
                continue
        if skip is not None and isinstance(raw, Mapping):
            done = _done(line, raw, skip, analyses)
            if done and ids(done[0].id, line):
                yield from done
                continue
        result = validate_record(raw, line, base_dir=base, analyses=analyses, **checks)
        item_id = result.id if isinstance(result, Rejected) else result[0].id
        if item_id is not None and not ids(item_id, line) and not isinstance(result, Rejected):
            derived = isinstance(raw, Mapping) and raw.get("id") is None
            hint = (" (this item has no id and repeats an earlier item's fields, analyses aside: put all its "
                    "analyses on one line, or give each an id)") if derived else ""
            result = Rejected(line, f"duplicate id {shown(item_id)}: ids must be unique within a "
                                    f"manifest{hint}", item_id)
        if isinstance(result, Rejected):
            yield result
        else:
            yield from result


def _new_ids() -> Callable[[str, int], bool]:
    """The default duplicate check: ids read so far, on disk past a small cache."""
    seen = IdSet()
    return lambda item_id, line: seen.add(item_id)


def _done(line: int, raw: Mapping[str, Any], skip: Callable[[str], bool],
          analyses: tuple[str, ...]) -> list[Skipped]:
    """One `Skipped` per analysis when `skip` says every analysis of the item is done, told
    without validating it; otherwise (or when its analyses cannot be told cheaply) none.
    (A resume asks this of every done item first: it is kept to a few lookups.)"""
    item_id = quick_id(raw)
    names = analysis_names(raw, analyses) if item_id is not None else None
    if item_id is None or not names:
        return []
    skipped = []
    for name, cap in names:
        key = job_key(item_id, name)
        if not skip(key):
            return []
        skipped.append(Skipped(line, item_id, cap, key, name))
    return skipped


def quick_id(raw: Mapping[str, Any]) -> str | None:
    """The id `validate_record` would give this item, without validating it (None if unusable)."""
    value = raw.get("id")
    if value is None:
        return derive_id(raw)
    if not isinstance(value, str):  # validation rejects it: never skip an item it would reject
        return None
    return value if value.strip() else None
