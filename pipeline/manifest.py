"""Read a manifest as a lazy stream of validated `Job`s and `Rejected` records.

`read_manifest` picks the format by extension (JSON Lines, CSV, YAML; ``-`` is JSON Lines on
stdin), streams it record by record (`pipeline.manifest_formats`), checks each item with
`validate_item` (`pipeline.manifest_item`) and rejects repeated ids. A bad record never stops
the stream: it comes out as a `Rejected` with its line number and a reason that names the field
and says how to fix it. Local media files are only stat()ed here, never read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .capabilities import MAX_BODY_BYTES, resolve
from .errors import ManifestError
from .idset import IdSet
from .job import Job
from .manifest_formats import RawRecord, Rejected, iter_csv, iter_jsonl
from .manifest_item import ALLOWED_KEYS, derive_id, estimated_body_bytes, validate_item
from .manifest_yaml import iter_yaml

__all__ = ["ALLOWED_KEYS", "FORMATS", "Rejected", "Skipped", "derive_id",
           "estimated_body_bytes", "read_manifest", "validate_item"]

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
           ".yaml": "yaml", ".yml": "yaml"}

@dataclass(frozen=True)
class Skipped:
    """An item the caller already finished (see `read_manifest`'s `skip`): not validated again."""

    line: int
    id: str
    capability: str | None  # canonical name when the item names a known capability


def read_manifest(path: str | os.PathLike[str] | None, *, stdin: TextIO | None = None,
                  base_dir: Path | None = None, max_body_bytes: int = MAX_BODY_BYTES,
                  check_files: bool = True, skip: Callable[[str], bool] | None = None,
                  expected_items: int = 0, uploads: bool = False) -> Iterator[Job | Rejected | Skipped]:
    """Stream the manifest at `path` (``"-"`` or None: JSON Lines on `stdin`) as Jobs and Rejecteds.

    Relative `path` sources resolve against `base_dir` (default: the manifest's directory, or
    the working directory for stdin). Raises `ManifestError` at once for an unsupported
    extension or a manifest that does not exist; everything else is a `Rejected` in the stream.

    `skip(id)` (a resume's "already done?") is asked before validation; the first item with
    such an id comes out as `Skipped`, without the validation cost (file checks included),
    so resuming a huge manifest reaches the unfinished items fast. Repeats still get rejected.
    `expected_items` (a hint, e.g. a resume's done count) sizes the duplicate-id table up front.
    """
    records: Iterable[RawRecord]
    if path is None or str(path) == "-":
        source: Any = stdin if stdin is not None else sys.stdin
        # Prefer the bytes underneath, so bad UTF-8 rejects one line instead of ending the run.
        records = iter_jsonl(getattr(source, "buffer", source))
        base = base_dir or Path.cwd()
    else:
        manifest = Path(path)
        kind = FORMATS.get(manifest.suffix.lower())
        if kind is None:
            raise ManifestError(f"unsupported manifest type '{manifest.suffix or '(none)'}': use "
                                ".jsonl, .ndjson or .json (JSON Lines), .csv, .yaml or .yml, "
                                "or '-' for JSON Lines on stdin", source=str(manifest))
        if not manifest.is_file():
            what = "is not a file" if manifest.exists() else "does not exist"
            raise ManifestError(f"manifest {what}: check the path", source=str(manifest))
        if not os.access(manifest, os.R_OK):
            raise ManifestError("manifest is not readable: check its permissions", source=str(manifest))
        records = _records(manifest, kind, max_body_bytes)
        base = base_dir or manifest.parent.absolute()
    return _validated(records, base, max_body_bytes=max_body_bytes, check_files=check_files, skip=skip,
                      expected_items=expected_items, uploads=uploads)


def _records(manifest: Path, kind: str, max_body_bytes: int) -> Iterator[RawRecord]:
    if kind == "csv":
        with open(manifest, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            yield from iter_csv(f, max_field=2 * max_body_bytes)
    else:
        with open(manifest, "rb") as fb:
            yield from (iter_jsonl(fb) if kind == "jsonl" else iter_yaml(fb))


def _validated(records: Iterable[RawRecord], base: Path, *, max_body_bytes: int,
               check_files: bool, skip: Callable[[str], bool] | None = None,
               expected_items: int = 0, uploads: bool = False) -> Iterator[Job | Rejected | Skipped]:
    seen = IdSet(expected=expected_items)
    for record in records:
        if isinstance(record, Rejected):
            yield record
            continue
        line, raw = record
        if skip is not None and isinstance(raw, Mapping):
            quick_id = _quick_id(raw)
            if quick_id is not None and skip(quick_id) and seen.add(quick_id):
                name = raw.get("capability")
                cap = resolve(name) if isinstance(name, str) else None
                yield Skipped(line, quick_id, cap.name if cap else None)
                continue
        result = validate_item(raw, line, base_dir=base, max_body_bytes=max_body_bytes,
                               check_files=check_files, uploads=uploads)
        if result.id is not None and not seen.add(result.id) and isinstance(result, Job):
            derived = isinstance(raw, Mapping) and raw.get("id") is None
            hint = " (this item has no id and repeats an earlier item exactly)" if derived else ""
            result = Rejected(line, f"duplicate id '{result.id}': ids must be unique within a "
                                    f"manifest{hint}", result.id)
        yield result


def _quick_id(raw: Mapping[str, Any]) -> str | None:
    """The id `validate_item` would give this item, without validating it (None if unusable)."""
    value = raw.get("id")
    if value is None:
        return derive_id(raw)
    if not isinstance(value, str):  # validation rejects it: never skip an item it would reject
        return None
    return value if value.strip() else None
