"""Check one raw manifest item and build its `Job`, or say why not (`Rejected`).

This is the only place an item's fields are judged, so `validate` and `run` (both read through
`pipeline.manifest.read_manifest`) accept and refuse exactly the same items. What differs per
capability (sources, output types, media types, parameters, the default service id) is data in
the capability table (`pipeline.capabilities`); this module applies it. Every reason names the
field and says how to fix it. Local media files are only stat()ed here, never read.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ..core.capabilities import (
    CAPABILITIES,
    MAX_BODY_BYTES,
    Capability,
    effective_output,
    media_type_problem,
    owner_of_service_id,
    resolve,
    valid_service_id,
)
from ..core.echo import clipped, shown
from ..core.fingerprint import file_stamp
from ..core.job import SOURCE_KINDS, Job
from ..core.templates import fill_output
from .formats import Rejected

__all__ = ["ALLOWED_KEYS", "JSON_OVERHEAD", "MISSING_CAPABILITY", "ItemError", "capability_of", "check_id",
           "check_keys", "derive_id", "describe", "estimated_body_bytes", "show", "validate_item"]

ALLOWED_KEYS = ("id", "capability", "service_id", "url", "oss", "path", "content", "file_name",
                "file_type", "parameters", "output", "options", "chunks", "meta")
#: Room in a request body for everything but the base64 itself (keys, file name, options).
JSON_OVERHEAD = 1024
_MB = 1024 * 1024
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_OSS_OBJECT = re.compile(r"oss://[^/\s]+/.+", re.DOTALL)  # object keys may hold spaces
_OSS_PREFIX = re.compile(r"oss://[^/\s]+(/.*)?", re.DOTALL)
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_COUNTS = {2: "two", 3: "three", 4: "four"}


class ItemError(Exception):
    """One reason an item is rejected (becomes a `Rejected`; `check_*` raise it)."""


#: What an item without capability or analyses is told.
MISSING_CAPABILITY = "missing capability: give capability, analyses, or run with --analyses"


def validate_item(raw: object, line: int, *, base_dir: Path | None = None,
                  max_body_bytes: int = MAX_BODY_BYTES, check_files: bool = True,
                  uploads: bool = False, outputs: Mapping[str, str] | None = None,
                  analysis: str | None = None, presigned: bool = False) -> Job | Rejected:
    """Check one raw item of one capability and build its `Job`, or say why not. Only stat()s local files.

    With `uploads` (OSS uploads configured), a local file of any size is accepted, and so is a
    `path` for a capability that reads `oss`: it will be uploaded and sent as `oss://`. With
    `presigned` (an object of an OSS listing, which holds the OSS settings), an `oss` source is
    accepted by a capability that reads only URLs: a presigned GET URL is sent in its place.
    `outputs` (config `outputs`: canonical capability -> OSS prefix template) fills `output`
    when the item gives none; `analysis` names the Job (default: the capability).
    (`pipeline.manifest_analyses.validate_record` takes items with several analyses.)"""
    if not isinstance(raw, Mapping):
        return Rejected(line, f"item must be an object with a capability and a source, got {describe(raw)}")
    item = {k: v for k, v in raw.items() if v is not None}  # null means absent, as empty CSV cells do
    item_id: str | None = None
    try:
        item_id = check_id(item)
        check_keys(item)
        cap = capability_of(item.get("capability"), missing=MISSING_CAPABILITY)
        kind, source, stamp = _check_source(item, cap, base_dir or Path.cwd(), max_body_bytes, check_files,
                                            uploads=uploads, presigned=presigned)
        service_id = _check_service_id(item, cap)
        _check_optional(item, cap)
        job_id = item_id if item_id is not None else derive_id(item)
        name = analysis or cap.name
        output = item.get("output")
        template = outputs.get(cap.name) if outputs and output is None else None
        if template is not None:
            output = {"type": "oss", "oss": fill_output(template, item_id=job_id, analysis=name, capability=cap.name)}
        job = Job(id=job_id, capability=cap.name, service_id=service_id, source_kind=kind, source=source,
                  line=line, file_name=_file_name(item, cap, kind, job_id), file_type=item.get("file_type"),
                  parameters=item.get("parameters"), output=output, options=item.get("options"),
                  chunks=item.get("chunks"), meta=item.get("meta"), analysis=name, stamp=stamp)
        _check_output(cap, job)
        for rule in (media_type_problem(cap, job), cap.check(job) if cap.check is not None else None):
            if rule:
                raise ItemError(rule)
    except ItemError as exc:
        return Rejected(line, str(exc), item_id)
    return job


def derive_id(item: Mapping[str, Any]) -> str:
    """A stable id from the item's content: the same item (minus `id`) always gets the same one.
    `analyses` is left out: they are what is done with the item, not what it is, so adding an
    analysis to an item without an id later runs just that analysis."""
    content = {k: v for k, v in item.items() if k not in ("id", "analyses") and v is not None}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "item-" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


#: No body limit applies to a file that will be uploaded rather than sent inline.
UNLIMITED = 1 << 62


def needs_upload(file_size: int, max_body: int = MAX_BODY_BYTES) -> bool:
    """Whether a local file of this size is too big to send inline (so it goes through OSS)."""
    return estimated_body_bytes(file_size) > max_body


def estimated_body_bytes(file_size: int) -> int:
    """The request body size a local file of `file_size` bytes makes: base64 plus JSON overhead."""
    return 4 * ((file_size + 2) // 3) + JSON_OVERHEAD


# ---------------------------------------------------------------------------- the checks


def check_id(item: Mapping[str, Any]) -> str | None:
    """The item's id (None: none given, derive one); raises `ItemError` for a bad one."""
    if "id" not in item:
        return None
    value = item["id"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # 17, 17.0 and "17" would all become "17": refuse rather than guess which was meant.
        # The number is what the parser made of the text (YAML reads 017 as 15, and JSON 1e3 as 1000.0):
        # it cannot say what was written, so the hint does not guess.
        raise ItemError(f"id must be a string, got a number (read as {show(value)}): quote the id as it is written "
                       "in the manifest, so it is kept exactly")
    if not isinstance(value, str):
        raise ItemError(f"id must be a non-empty string, got {describe(value)}")
    if not value.strip():
        raise ItemError("id must be a non-empty string: remove it to have one derived from the content")
    return value


def check_keys(item: Mapping[str, Any], allowed: Collection[str] = ALLOWED_KEYS) -> None:
    """Raise `ItemError` for the first key not in `allowed`, suggesting the closest allowed one."""
    for key in item:
        if key not in allowed:
            close = difflib.get_close_matches(str(key)[:100], allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            raise ItemError(f"unknown field {show(key)} ({hint})")


def capability_of(name: object, *, missing: str) -> Capability:
    """The capability `name` (canonical or alias) stands for; raises `ItemError`: `missing` when
    None, or an unknown capability listing the known ones."""
    known = ", ".join(CAPABILITIES)
    if name is None:
        raise ItemError(f"{missing} (known capabilities: {known})")
    cap = resolve(name) if isinstance(name, str) else None
    if cap is None:
        raise ItemError(f"unknown capability {show(name)} (known: {known})")
    return cap


def _check_source(item: dict[str, Any], cap: Capability, base_dir: Path, max_body: int,
                  check_files: bool, *, uploads: bool = False, presigned: bool = False) -> tuple[str, str, str | None]:
    """(kind, value, stamp): a local file's stamp (size and mtime, for the fingerprint) comes
    from the one stat that checks it."""
    present = [kind for kind in SOURCE_KINDS if kind in item]
    if not present:
        raise ItemError("no source: give exactly one of url, oss, path, content")
    if len(present) > 1:
        raise ItemError(f"{_COUNTS[len(present)]} sources ({', '.join(present)}): give exactly one")
    kind, value = present[0], item[present[0]]
    remote = "upload it to OSS and use oss, or give a url" if "oss" in cap.sources else "give a url"
    uploaded = uploads and kind == "path"  # sent as oss:// or a presigned url, whatever its size
    signed = presigned and kind == "oss" and "url" in cap.sources  # sent as a presigned GET URL
    if kind not in cap.sources and not (uploaded and "oss" in cap.sources) and not signed:
        what = {"url": "a url", "oss": "an oss source", "path": "a local path",
                "content": "inline content"}[kind]
        hint = remote if kind in ("path", "content") else \
            "give one of " + ", ".join(k for k in SOURCE_KINDS if k in cap.sources)
        raise ItemError(f"{cap.name} does not accept {what}: {hint}")
    if not isinstance(value, str) or not value.strip():
        raise ItemError(f"{kind} must be a non-empty string, got {show(value)}")
    if kind == "url" and not re.match(r"https?://\S", value, re.IGNORECASE):
        raise ItemError(f"url must start with http:// or https:// (got {show(value)})")
    if kind == "oss" and not _OSS_OBJECT.fullmatch(value):
        raise ItemError(f"oss must be an OSS object path like oss://bucket/key (got {show(value)})")
    if kind == "content":
        if len(value) + JSON_OVERHEAD > max_body:
            raise ItemError(f"content is {len(value) / _MB:.1f} MB of base64, too large to send inline "
                           f"(the request body limit is {max_body / _MB:.0f} MB): {remote}")
        if len(value) % 4 or not _B64.fullmatch(value):
            raise ItemError("content must be standard base64 (A-Z a-z 0-9 + / with = padding; "
                           "no 'data:' prefix, no line breaks)")
    stamp = None
    if kind == "path":
        given = os.path.expanduser(value)
        value = os.path.abspath(os.path.join(base_dir, given))
        if check_files:
            st = _check_local_file(value, given, base_dir, UNLIMITED if uploaded else max_body, remote)
            stamp = file_stamp(st.st_size, st.st_mtime_ns)
    return kind, value, stamp


def _check_local_file(path: str, given: str, base_dir: Path, max_body: int, remote: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ItemError(f"path: {clipped(path)} is a symbolic link to a file that does not exist "
                           f"({clipped(os.readlink(path))})") from None
        where = "" if os.path.isabs(given) else f" (relative paths are resolved against {base_dir})"
        raise ItemError(f"path: no such file {clipped(path)}{where}") from None
    except OSError as exc:
        raise ItemError(f"path: cannot access {clipped(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ItemError(f"path: {clipped(path)} is not a regular file")
    # The file is read at submit time, long after this check: refuse now what would fail then.
    if not os.access(path, os.R_OK):
        raise ItemError(f"path: {clipped(path)} is not readable by this user: check its permissions")
    if estimated_body_bytes(st.st_size) > max_body:
        raise ItemError(f"path: {clipped(path)} is {st.st_size / _MB:.1f} MB, too large to send inline "
                       f"(as base64 it needs {estimated_body_bytes(st.st_size) / _MB:.1f} MB; the "
                       f"request body limit is {max_body / _MB:.0f} MB): {remote}")
    return st


#: The longest service id accepted: the service's are about 25 characters, and a service id is
#: echoed whole in counts, price tables and the summary (a 2 MB one was printed in full).
MAX_SERVICE_ID = 96


def _check_service_id(item: dict[str, Any], cap: Capability) -> str:
    service_id = item.get("service_id", cap.default_service_id)
    if not isinstance(service_id, str) or not valid_service_id(service_id) or len(service_id) > MAX_SERVICE_ID:
        raise ItemError(f"service_id must be 'ops-' followed by letters, digits, '.', '_' or '-' (no '..'), "
                       f"at most {MAX_SERVICE_ID} characters, got {show(service_id)}: omit it to use "
                       f"{cap.default_service_id}")
    owner = owner_of_service_id(service_id)
    if owner is not None and owner is not cap:
        raise ItemError(f"service_id {clipped(service_id)} belongs to {owner.name}, not {cap.name}: "
                       f"use one of {', '.join(cap.known_service_ids)}")
    return service_id


def _file_name(item: dict[str, Any], cap: Capability, kind: str, job_id: str) -> str | None:
    """The given file_name; for inline content without one, `<id>.<file_type>` (the service
    needs a name to know the format, and the id is the only name the item has)."""
    name: str | None = item.get("file_name")
    if name is not None or kind != "content" or not cap.content_needs_file_name:
        return name
    file_type = item.get("file_type")
    if file_type is None:
        raise ItemError(f"inline content for {cap.name} needs a file name: give file_name (e.g. "
                       "\"scan.png\") or file_type (the name then becomes <id>.<file_type>)")
    return f"{_UNSAFE_NAME_CHARS.sub('_', job_id)}.{file_type.lower()}"


def _check_optional(item: dict[str, Any], cap: Capability) -> None:
    for key in ("file_name", "file_type"):
        if key in item and (not isinstance(item[key], str) or not item[key].strip()):
            raise ItemError(f"{key} must be a non-empty string, got {show(item[key])}")
    for key in ("parameters", "options"):
        if key in item and not isinstance(item[key], Mapping):
            raise ItemError(f"{key} must be an object, got {describe(item[key])}")
    for name, value in item.get("parameters", {}).items():
        spec = cap.parameters.get(name)
        if spec is None:
            continue  # undocumented parameters go to the service as given
        wrong_bool = isinstance(value, bool) and bool not in spec.types
        if wrong_bool or not isinstance(value, spec.types):
            expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in spec.types)
            raise ItemError(f"parameters.{name} must be {expected}, got {describe(value)} {show(value)}")
        if spec.choices and value not in spec.choices:
            raise ItemError(f"parameters.{name} must be one of {', '.join(map(str, spec.choices))}, "
                           f"got {show(value)}")
        if spec.minimum is not None and isinstance(value, (int, float)) and value < spec.minimum:
            raise ItemError(f"parameters.{name} must be at least {spec.minimum:g}, got {show(value)}")
    chunks = item.get("chunks")
    if chunks is not None:
        if not isinstance(chunks, list):
            raise ItemError(f"chunks must be a list of chunk objects, got {describe(chunks)}")
        for i, chunk in enumerate(chunks):
            if not isinstance(chunk, Mapping):
                raise ItemError(f"chunks[{i}] must be an object, got {describe(chunk)}")
    output = item.get("output")
    if output is not None:
        if not cap.output_types:
            raise ItemError(f"output is not used by {cap.name}: remove it")
        if not isinstance(output, (str, Mapping)):
            raise ItemError(f"output must be an object like {{\"oss\": \"oss://bucket/prefix/\"}} "
                           f"or an oss:// string, got {describe(output)}")
        if isinstance(output, Mapping) and not isinstance(output.get("type", ""), str):
            raise ItemError(f"output.type must be a string, got {describe(output['type'])}")
    for key in ("parameters", "options", "chunks", "output", "meta"):
        if key not in item or isinstance(item[key], str):
            continue
        try:  # YAML can hold what JSON cannot (sets, binary, NaN); results and checkpoints are JSON
            json.dumps(item[key], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ItemError(f"{key} must be plain JSON data: {exc}") from None


def _check_output(cap: Capability, job: Job) -> None:
    output = effective_output(cap, job) or {}
    oss, kind = output.get("oss"), output.get("type")
    example = '{"oss": "oss://bucket/prefix/"}'
    if oss is not None and not (isinstance(oss, str) and _OSS_PREFIX.fullmatch(oss)):
        raise ItemError(f"output.oss must be an OSS location like oss://bucket/prefix/ (got {show(oss)})")
    if cap.requires_output_oss and (kind != "oss" or oss is None):
        raise ItemError(f"output.oss is required for {cap.name}: give output: {example}, or set "
                        f"outputs.{cap.name} in the config")
    if job.output is not None and kind not in cap.output_types:
        raise ItemError(f"output.type must be one of {', '.join(cap.output_types)} for {cap.name}, "
                       f"got {show(kind)}")
    if kind == "oss" and oss is None:
        raise ItemError(f"output.oss is required when output.type is oss: give output: {example}")


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               list: "a list", dict: "an object"}


def describe(value: object) -> str:
    """What kind of JSON value `value` is, for messages ("a string", "an object", ...)."""
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


def show(value: object, limit: int = 60) -> str:
    """`value` as a message quotes it, bounded (`echo.shown`: the one rule of every message)."""
    return shown(value, limit)
