"""Items with several analyses: the manifest's `analyses` list and the run-wide `--analyses`.

An item may carry `analyses`: capability names (aliases allowed) or objects ``{name?,
capability, service_id?, parameters?, options?, output?, chunks?, after?}``. Every analysis
shares the item's one source and its `id`, `file_name`, `file_type` and `meta`; each becomes
one `Job` named by `name` (default: the canonical capability name), checked exactly like a
single-capability item by `validate_item` with the analysis's fields laid over the item's. An
item that names neither `capability` nor `analyses` gets the run-wide `--analyses`.

`validate_record` is what `read_manifest` calls for every raw record: the item's Jobs in
manifest order, or one `Rejected` for the whole line (any bad analysis rejects the line).
`analysis_names` tells a resume which analyses an item has without validating it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.capabilities import CAPABILITIES, MAX_BODY_BYTES, Capability, resolve
from ..core.errors import ManifestError
from ..core.job import ANALYSIS_NAME, Job
from .formats import Rejected
from .item import ItemError, capability_of, check_id, check_keys, derive_id, describe, show, validate_item

__all__ = ["ANALYSIS_KEYS", "ITEM_KEYS", "analysis_names", "run_analyses", "validate_record"]

#: What one analysis object may carry.
ANALYSIS_KEYS = ("name", "capability", "service_id", "parameters", "options", "output", "chunks", "after")
#: Fields of one analysis that an item with analyses may not carry itself.
PER_ANALYSIS = ("service_id", "parameters", "options", "output", "chunks")
#: Fields every analysis of an item shares.
SHARED = ("url", "oss", "path", "content", "file_name", "file_type", "meta")
#: What an item with analyses (its own or the run's) may carry.
ITEM_KEYS = ("id", "analyses", *SHARED)
_NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-'"
_SERVICE_WORD = re.compile(r"ops-(?:[a-z0-9.]+-)*?([a-z]+)-\d+")


@dataclass(frozen=True)
class _Spec:
    """One entry of `analyses`, its shape checked."""

    index: int
    name: str
    cap: Capability
    fields: dict[str, Any]
    after: str | None = None

    def where(self, run_wide: bool) -> str:
        return f"{self.name} (--analyses)" if run_wide else f"analyses[{self.index}] ({self.name})"


def run_analyses(names: Sequence[str] | None) -> tuple[str, ...]:
    """The run-wide `--analyses` as canonical capability names (empty: none given).

    Raises `ManifestError` (exit 2) for an unknown capability or one given twice, before any
    line is read."""
    canonical: list[str] = []
    for given in names or ():
        cap = resolve(given) if isinstance(given, str) else None
        if cap is None:
            raise ManifestError(f"unknown capability {show(given)} (known: {', '.join(CAPABILITIES)}): give "
                                "capability names separated by commas, e.g. image_analyze,object_detection",
                                source="--analyses")
        if cap.name in canonical:
            raise ManifestError(f"{show(given)} is {cap.name} again: give each capability once (two analyses of one "
                                "capability need names: list them per item under analyses)", source="--analyses")
        canonical.append(cap.name)
    return tuple(canonical)


def validate_record(raw: object, line: int, *, base_dir: Path | None = None,
                    max_body_bytes: int = MAX_BODY_BYTES, check_files: bool = True, uploads: bool = False,
                    analyses: Sequence[str] | None = None, outputs: Mapping[str, str] | None = None,
                    presigned: bool = False) -> list[Job] | Rejected:
    """Check one raw manifest record: its Jobs (one per analysis, in manifest order), or why not.

    An item with `capability` gives one Job named after it (as `validate_item`); one with
    `analyses` one Job per entry; one with neither, one Job per run-wide `analyses` (canonical
    names, see `run_analyses`), and without those it is rejected. `outputs` (config `outputs`)
    fills the `output` of analyses that give none; `presigned`: see `validate_item`."""
    checks: dict[str, Any] = {"base_dir": base_dir, "max_body_bytes": max_body_bytes, "check_files": check_files,
                              "uploads": uploads, "outputs": outputs, "presigned": presigned}
    entries = raw.get("analyses") if isinstance(raw, Mapping) else None
    run_wide = entries is None and isinstance(raw, Mapping) and raw.get("capability") is None and bool(analyses)
    if entries is None and not run_wide:
        result = validate_item(raw, line, **checks)
        return [result] if isinstance(result, Job) else result
    assert isinstance(raw, Mapping)
    item = {k: v for k, v in raw.items() if v is not None}  # null means absent, as in validate_item
    item_id: str | None = None
    try:
        item_id = check_id(item)
        _check_item_keys(item, run_wide)
        specs = _specs(list(analyses or ()) if run_wide else item["analyses"])
        _check_after(specs, run_wide)
    except ItemError as exc:
        return Rejected(line, str(exc), item_id)
    job_id = item_id if item_id is not None else derive_id(item)
    shared = {key: item[key] for key in SHARED if key in item}
    jobs: list[Job] = []
    for spec in specs:
        one = {"id": job_id, **shared, "capability": spec.cap.name, **spec.fields}
        result = validate_item(one, line, analysis=spec.name, **checks)
        if isinstance(result, Rejected):
            return Rejected(line, f"{spec.where(run_wide)}: {result.reason}", item_id)
        jobs.append(dataclasses.replace(result, after=spec.after) if spec.after is not None else result)
    return jobs


def analysis_names(raw: Mapping[str, Any], analyses: Sequence[str] | None) -> list[tuple[str, str | None]] | None:
    """(name, canonical capability or None) of each analysis `raw` would have, without validating
    it; None when that cannot be told cheaply (the item is then validated). `analyses`: the
    run-wide names, canonical (`run_analyses`)."""
    entries = raw.get("analyses")
    if entries is None:
        given = raw.get("capability")
        if given is None:
            return [(name, name) for name in analyses] if analyses else None
        cap = resolve(given) if isinstance(given, str) else None
        return [(cap.name, cap.name)] if cap is not None else None
    if raw.get("capability") is not None or not isinstance(entries, list) or not entries:
        return None  # rejected by validation
    names: list[tuple[str, str | None]] = []
    for entry in entries:
        value = entry.get("capability") if isinstance(entry, Mapping) else entry
        cap = resolve(value) if isinstance(value, str) else None
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if name is None:
            name = cap.name if cap is not None else None
        if not isinstance(name, str):
            return None
        names.append((name, cap.name if cap is not None else None))
    return names if len({name for name, _ in names}) == len(names) else None


# ---------------------------------------------------------------------------- the checks


def _check_item_keys(item: Mapping[str, Any], run_wide: bool) -> None:
    if not run_wide and "capability" in item:
        raise ItemError("capability and analyses both given: give capability or analyses, not both "
                        "(for one analysis, capability alone is enough)")
    for key in PER_ANALYSIS:
        if key in item:
            if run_wide:
                raise ItemError(f"{key} is for one capability, and this item gets --analyses: give capability "
                                f"with it, or list analyses: [{{capability: ..., {key}: ...}}] on the item")
            raise ItemError(f"{key} belongs inside an analysis when an item has analyses: move it into the "
                            f"analysis it is for, e.g. analyses: [{{capability: ..., {key}: ...}}]")
    check_keys(item, ITEM_KEYS)


def _specs(entries: object) -> list[_Spec]:
    if not isinstance(entries, list) or not entries:
        got = "an empty list" if entries == [] else describe(entries)
        raise ItemError(f"analyses must be a non-empty list of capability names or objects like "
                        f"{{capability: ..., name: ...}}, got {got}")
    specs: list[_Spec] = []
    by_name: dict[str, _Spec] = {}
    for index, entry in enumerate(entries):
        try:
            spec = _spec(index, entry)
        except ItemError as exc:
            raise ItemError(f"analyses[{index}]: {exc}") from None
        prior = by_name.get(spec.name)
        if prior is not None:
            if isinstance(entry, Mapping) and entry.get("name") is not None:
                raise ItemError(f"analyses[{index}]: name '{spec.name}' is already used by analyses[{prior.index}]: "
                                "names must be unique within an item")
            raise ItemError(f"analyses[{index}]: a second {spec.cap.name} needs a name "
                            f"(e.g. name: {_suggest(spec, specs)})")
        by_name[spec.name] = spec
        specs.append(spec)
    return specs


def _spec(index: int, entry: object) -> _Spec:
    if isinstance(entry, str):
        cap = capability_of(entry, missing="missing capability")
        return _Spec(index, cap.name, cap, {})
    if not isinstance(entry, Mapping):
        raise ItemError(f"must be a capability name or an object like {{capability: ..., name: ...}}, "
                        f"got {describe(entry)}")
    fields = {k: v for k, v in entry.items() if v is not None}
    for key in fields:
        if key in ("id", *SHARED):
            raise ItemError(f"{key} belongs to the item, not to one analysis: all analyses of an item share its "
                            "id, source (url, oss, path or content), file_name, file_type and meta")
    check_keys(fields, ANALYSIS_KEYS)
    cap = capability_of(fields.get("capability"), missing="missing capability: give capability")
    name = fields.get("name", cap.name)
    if not isinstance(name, str) or not ANALYSIS_NAME.fullmatch(name):
        raise ItemError(f"name must be {_NAME_RULE}, got {describe(name)} {show(name)}")
    after = fields.get("after")
    if after is not None and not isinstance(after, str):
        raise ItemError(f"after must be the name of another analysis of this item, got {describe(after)}")
    return _Spec(index, name, cap, {k: fields[k] for k in PER_ANALYSIS if k in fields}, after)


def _suggest(spec: _Spec, earlier: list[_Spec]) -> str:
    """A name for a repeated capability: the service id's telling word (vlm, face), else <cap>_<n>."""
    service_id = spec.fields.get("service_id")
    match = _SERVICE_WORD.fullmatch(service_id) if isinstance(service_id, str) else None
    if match and match.group(1) not in {s.name for s in earlier}:
        return match.group(1)
    return f"{spec.cap.name}_{1 + sum(s.cap is spec.cap for s in earlier)}"


def _check_after(specs: list[_Spec], run_wide: bool) -> None:
    by_name = {spec.name: spec for spec in specs}
    for spec in specs:
        if spec.after is None or spec.after == spec.name:
            continue
        target = by_name.get(spec.after)
        if target is None:
            others = ", ".join(s.name for s in specs if s is not spec)
            raise ItemError(f"{spec.where(run_wide)}: after '{spec.after}' names no analysis of this item "
                            f"({f'its other analyses: {others}' if others else 'it has no other analysis'})")
        if spec.cap.chunks_from == target.cap.name and "chunks" in spec.fields:  # the parent's data are its chunks
            raise ItemError(f"{spec.where(run_wide)}: chunks come from '{target.name}' (the {target.cap.name} "
                            "it runs after): remove chunks")
    for spec in specs:  # every `after` names an analysis now: follow each chain
        path = [spec.name]
        current = spec
        while current.after is not None:
            if current.after in path:
                cycle = [*path[path.index(current.after):], current.after]
                raise ItemError(f"analyses: after forms a cycle: {' -> '.join(cycle)}")
            path.append(current.after)
            current = by_name[current.after]

