"""Read a manifest as a lazy stream of validated `Job`s and `Rejected` records.

`read_manifest` picks the format by extension (JSON Lines, CSV, YAML; ``-`` is JSON Lines on
stdin), streams it record by record (`pipeline.manifest_formats`), checks each item with
`validate_item` and rejects repeated ids. A bad record never stops the stream: it comes out as
a `Rejected` with its line number and a reason that names the field and says how to fix it.
Local media files are only stat()ed here, never read.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import stat
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO

from .capabilities import (IMAGE_TYPES, MAX_BODY_BYTES, Capability, CAPABILITIES,
                           effective_output, owner_of_service_id, resolve)
from .errors import ManifestError
from .job import SOURCE_KINDS, Job
from .manifest_formats import RawRecord, Rejected, iter_csv, iter_jsonl, iter_yaml

__all__ = ["ALLOWED_KEYS", "DuplicateIds", "Rejected", "Skipped", "derive_id", "estimated_body_bytes",
           "read_manifest", "validate_item"]

ALLOWED_KEYS = ("id", "capability", "service_id", "url", "oss", "path", "content", "file_name",
                "file_type", "parameters", "output", "options", "chunks", "meta")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
           ".yaml": "yaml", ".yml": "yaml"}
#: Room in a request body for everything but the base64 itself (keys, file name, options).
JSON_OVERHEAD = 1024
#: `file_type` values the protocol lists per capability (video types are the capability's check).
_FILE_TYPES: dict[str, tuple[str, ...]] = {"image_analyze": IMAGE_TYPES}
_MB = 1024 * 1024
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_OSS_OBJECT = re.compile(r"oss://[^/\s]+/.+", re.DOTALL)  # object keys may hold spaces
_OSS_PREFIX = re.compile(r"oss://[^/\s]+(/.*)?", re.DOTALL)
_COUNTS = {2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class Skipped:
    """An item the caller already finished (see `read_manifest`'s `skip`): not validated again."""

    line: int
    id: str
    capability: str | None  # canonical name when the item names a known capability


def read_manifest(path: str | os.PathLike[str] | None, *, stdin: TextIO | None = None,
                  base_dir: Path | None = None, max_body_bytes: int = MAX_BODY_BYTES,
                  check_files: bool = True, skip: Callable[[str], bool] | None = None,
                  expected_items: int = 0) -> Iterator[Job | Rejected | Skipped]:
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
    return _validated(records, base, max_body_bytes, check_files, skip, expected_items)


def _records(manifest: Path, kind: str, max_body_bytes: int) -> Iterator[RawRecord]:
    if kind == "csv":
        with open(manifest, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            yield from iter_csv(f, max_field=2 * max_body_bytes)
    else:
        with open(manifest, "rb") as fb:
            yield from (iter_jsonl(fb) if kind == "jsonl" else iter_yaml(fb))


def _validated(records: Iterable[RawRecord], base: Path, max_body_bytes: int,
               check_files: bool, skip: Callable[[str], bool] | None = None,
               expected_items: int = 0) -> Iterator[Job | Rejected | Skipped]:
    seen = DuplicateIds(expected=expected_items)
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
                               check_files=check_files)
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
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


class _Invalid(Exception):
    """One reason an item is rejected (internal: becomes a `Rejected`)."""


def validate_item(raw: object, line: int, *, base_dir: Path | None = None,
                  max_body_bytes: int = MAX_BODY_BYTES, check_files: bool = True) -> Job | Rejected:
    """Check one raw item and build its `Job`, or say why not. Only stat()s local files."""
    if not isinstance(raw, Mapping):
        return Rejected(line, f"item must be an object with a capability and a source, got {_describe(raw)}")
    item = {k: v for k, v in raw.items() if v is not None}  # null means absent, as empty CSV cells do
    item_id: str | None = None
    try:
        item_id = _check_id(item)
        _check_keys(item)
        cap = _check_capability(item)
        kind, source = _check_source(item, cap, base_dir or Path.cwd(), max_body_bytes, check_files)
        service_id = _check_service_id(item, cap)
        _check_optional(item, cap)
        job = Job(id=item_id if item_id is not None else derive_id(item), capability=cap.name,
                  service_id=service_id, source_kind=kind, source=source, line=line,
                  file_name=item.get("file_name"), file_type=item.get("file_type"),
                  parameters=item.get("parameters"), output=item.get("output"),
                  options=item.get("options"), chunks=item.get("chunks"), meta=item.get("meta"))
        _check_output(cap, job)
        reason = cap.check(job) if cap.check is not None else None
        if reason:
            raise _Invalid(reason)
    except _Invalid as exc:
        return Rejected(line, str(exc), item_id)
    return job


def derive_id(item: Mapping[str, Any]) -> str:
    """A stable id from the item's content: the same item (minus `id`) always gets the same one."""
    content = {k: v for k, v in item.items() if k != "id" and v is not None}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "item-" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def estimated_body_bytes(file_size: int) -> int:
    """The request body size a local file of `file_size` bytes makes: base64 plus JSON overhead."""
    return 4 * ((file_size + 2) // 3) + JSON_OVERHEAD


class DuplicateIds:
    """Remembers the ids seen so far in 16 bytes each (32 with the table's slack), not as strings.

    An open-addressing hash set (linear probing, load <= 1/2) of 128-bit digests: two 64-bit
    words per slot in an ``array('Q')``; a first word of 0 marks an empty slot. The words are
    Python's own string hash of the id and of the id behind a NUL (SipHash, computed in C; the
    first is cached on the string, so asking twice is free). They are salted per process,
    which is fine for a set that lives in memory. 128 bits matter: a resume skips the items in
    this set, so a collision would silently skip an unfinished item; at 64 bits that is about
    3e-8 per million ids, at 128 bits it is nil for any catalog.
    """

    __slots__ = ("_slots", "_mask", "_count")

    def __init__(self, expected: int = 0) -> None:
        size = 1024
        while size < 2 * expected:  # sized up front when the count is known: no rehashing
            size *= 2
        self._slots = array("Q", [0]) * (2 * size)  # pairs of words; `size` slots, a power of two
        self._mask = size - 1  # number of slots - 1: turns a digest into a slot index
        self._count = 0  # ids stored

    def add(self, item_id: str) -> bool:
        """Record `item_id`; True if it is new, False if it was seen before."""
        if not self._insert(*_digest(item_id)):
            return False
        self._count += 1
        if 2 * self._count > self._mask + 1:
            old = self._slots
            self._slots = array("Q", [0]) * (2 * len(old))
            self._mask = len(old) - 1
            for i in range(0, len(old), 2):
                if old[i]:
                    self._insert(old[i], old[i + 1])
        return True

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        first, second = _digest(item_id)
        slots, mask = self._slots, self._mask
        j = 2 * (first & mask)
        while current := slots[j]:
            if current == first and slots[j + 1] == second:
                return True
            j = (j + 2) & (2 * mask + 1)
        return False

    def __len__(self) -> int:
        return self._count

    def _insert(self, first: int, second: int) -> bool:
        slots, wrap = self._slots, 2 * self._mask + 1
        j = 2 * (first & self._mask)
        while current := slots[j]:
            if current == first and slots[j + 1] == second:
                return False
            j = (j + 2) & wrap
        slots[j], slots[j + 1] = first, second
        return True


_WORD = 0xFFFF_FFFF_FFFF_FFFF


def _digest(item_id: str) -> tuple[int, int]:
    return (hash(item_id) & _WORD) or 1, hash("\x00" + item_id) & _WORD  # 0 marks an empty slot


# ---------------------------------------------------------------------------- the checks


def _check_id(item: dict[str, Any]) -> str | None:
    if "id" not in item:
        return None
    value = item["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Invalid(f"id must be a non-empty string, got {_describe(value)}")
    text = value if isinstance(value, str) else str(value)
    if not text.strip():
        raise _Invalid("id must be a non-empty string: remove it to have one derived from the content")
    return text


def _check_keys(item: dict[str, Any]) -> None:
    for key in item:
        if key not in ALLOWED_KEYS:
            close = difflib.get_close_matches(str(key), ALLOWED_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(ALLOWED_KEYS)}"
            raise _Invalid(f"unknown field '{key}' ({hint})")


def _check_capability(item: dict[str, Any]) -> Capability:
    name = item.get("capability")
    known = ", ".join(CAPABILITIES)
    if name is None:
        raise _Invalid(f"missing capability: give one of {known}")
    cap = resolve(name) if isinstance(name, str) else None
    if cap is None:
        raise _Invalid(f"unknown capability {_show(name)} (known: {known})")
    return cap


def _check_source(item: dict[str, Any], cap: Capability, base_dir: Path, max_body: int,
                  check_files: bool) -> tuple[str, str]:
    present = [kind for kind in SOURCE_KINDS if kind in item]
    if not present:
        raise _Invalid("no source: give exactly one of url, oss, path, content")
    if len(present) > 1:
        raise _Invalid(f"{_COUNTS[len(present)]} sources ({', '.join(present)}): give exactly one")
    kind, value = present[0], item[present[0]]
    remote = "upload it to OSS and use oss, or give a url" if "oss" in cap.sources else "give a url"
    if kind not in cap.sources:
        what = {"url": "a url", "oss": "an oss source", "path": "a local path",
                "content": "inline content"}[kind]
        hint = remote if kind in ("path", "content") else \
            "give one of " + ", ".join(k for k in SOURCE_KINDS if k in cap.sources)
        raise _Invalid(f"{cap.name} does not accept {what}: {hint}")
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"{kind} must be a non-empty string, got {_show(value)}")
    if kind == "url" and not re.match(r"https?://\S", value, re.IGNORECASE):
        raise _Invalid(f"url must start with http:// or https:// (got {_show(value)})")
    if kind == "oss" and not _OSS_OBJECT.fullmatch(value):
        raise _Invalid(f"oss must be an OSS object path like oss://bucket/key (got {_show(value)})")
    if kind == "content":
        if len(value) + JSON_OVERHEAD > max_body:
            raise _Invalid(f"content is {len(value) / _MB:.1f} MB of base64, too large to send inline "
                           f"(the request body limit is {max_body / _MB:.0f} MB): {remote}")
        if len(value) % 4 or not _B64.fullmatch(value):
            raise _Invalid("content must be standard base64 (A-Z a-z 0-9 + / with = padding; "
                           "no 'data:' prefix, no line breaks)")
    if kind == "path":
        given = os.path.expanduser(value)
        value = os.path.abspath(os.path.join(base_dir, given))
        if check_files:
            _check_local_file(value, given, base_dir, max_body, remote)
    return kind, value


def _check_local_file(path: str, given: str, base_dir: Path, max_body: int, remote: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        where = "" if os.path.isabs(given) else f" (relative paths are resolved against {base_dir})"
        raise _Invalid(f"path: no such file {path}{where}") from None
    except OSError as exc:
        raise _Invalid(f"path: cannot access {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _Invalid(f"path: {path} is not a regular file")
    if estimated_body_bytes(st.st_size) > max_body:
        raise _Invalid(f"path: {path} is {st.st_size / _MB:.1f} MB, too large to send inline "
                       f"(as base64 it needs {estimated_body_bytes(st.st_size) / _MB:.1f} MB; the "
                       f"request body limit is {max_body / _MB:.0f} MB): {remote}")


def _check_service_id(item: dict[str, Any], cap: Capability) -> str:
    service_id = item.get("service_id", cap.default_service_id)
    if not isinstance(service_id, str) or not service_id.startswith("ops-"):
        raise _Invalid(f"service_id must be a string starting with 'ops-' (got {_show(service_id)}): "
                       f"omit it to use {cap.default_service_id}")
    owner = owner_of_service_id(service_id)
    if owner is not None and owner is not cap:
        raise _Invalid(f"service_id {service_id} belongs to {owner.name}, not {cap.name}: "
                       f"use one of {', '.join(cap.known_service_ids)}")
    return service_id


def _check_optional(item: dict[str, Any], cap: Capability) -> None:
    for key in ("file_name", "file_type"):
        if key in item and (not isinstance(item[key], str) or not item[key].strip()):
            raise _Invalid(f"{key} must be a non-empty string, got {_show(item[key])}")
    allowed_types = _FILE_TYPES.get(cap.name)
    if "file_type" in item and allowed_types and item["file_type"].lower() not in allowed_types:
        raise _Invalid(f"file_type {_show(item['file_type'])} is not accepted by {cap.name}: "
                       f"use one of {', '.join(allowed_types)}")
    for key in ("parameters", "options"):
        if key in item and not isinstance(item[key], Mapping):
            raise _Invalid(f"{key} must be an object, got {_describe(item[key])}")
    for name, value in item.get("parameters", {}).items():
        spec = cap.parameters.get(name)
        if spec is None:
            continue  # undocumented parameters go to the service as given
        wrong_bool = isinstance(value, bool) and bool not in spec.types
        if wrong_bool or not isinstance(value, spec.types):
            expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in spec.types)
            raise _Invalid(f"parameters.{name} must be {expected}, got {_describe(value)} {_show(value)}")
        if spec.choices and value not in spec.choices:
            raise _Invalid(f"parameters.{name} must be one of {', '.join(map(str, spec.choices))}, "
                           f"got {_show(value)}")
    chunks = item.get("chunks")
    if chunks is not None:
        if not isinstance(chunks, list):
            raise _Invalid(f"chunks must be a list of chunk objects, got {_describe(chunks)}")
        for i, chunk in enumerate(chunks):
            if not isinstance(chunk, Mapping):
                raise _Invalid(f"chunks[{i}] must be an object, got {_describe(chunk)}")
    output = item.get("output")
    if output is not None:
        if cap.default_output is None and not cap.requires_output_oss:
            raise _Invalid(f"output is not used by {cap.name}: remove it")
        if not isinstance(output, (str, Mapping)):
            raise _Invalid(f"output must be an object like {{\"oss\": \"oss://bucket/prefix/\"}} "
                           f"or an oss:// string, got {_describe(output)}")
        if isinstance(output, Mapping) and not isinstance(output.get("type", ""), str):
            raise _Invalid(f"output.type must be a string, got {_describe(output['type'])}")
    for key in ("parameters", "options", "chunks", "output", "meta"):
        if key not in item or isinstance(item[key], str):
            continue
        try:  # YAML can hold what JSON cannot (sets, binary, NaN); results and checkpoints are JSON
            json.dumps(item[key], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise _Invalid(f"{key} must be plain JSON data: {exc}") from None


def _check_output(cap: Capability, job: Job) -> None:
    output = effective_output(cap, job) or {}
    oss = output.get("oss")
    example = '{"oss": "oss://bucket/prefix/"}'
    if oss is not None and not (isinstance(oss, str) and _OSS_PREFIX.fullmatch(oss)):
        raise _Invalid(f"output.oss must be an OSS location like oss://bucket/prefix/ (got {_show(oss)})")
    if cap.requires_output_oss and (output.get("type") != "oss" or oss is None):
        raise _Invalid(f"output.oss is required for {cap.name}: give output: {example}")
    if output.get("type") == "oss" and oss is None:
        raise _Invalid(f"output.oss is required when output.type is oss: give output: {example}")


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               list: "a list", dict: "an object"}


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _show(value: object, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= limit else text[: limit - 3] + "..."

