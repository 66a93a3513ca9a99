"""Streaming readers for JSON Lines, plain text (a source per line) and CSV manifests, and the
`Rejected` record they share with the YAML reader (`pipeline.manifest_yaml`).

Each reader turns an open file into a lazy stream of ``(line, raw_item)`` pairs, or a
`Rejected` when a record cannot even be parsed, and reads on after it. Nothing here knows
what an item means; `pipeline.manifest_item` validates the raw items. No reader holds more
than one record in memory: both go line by line (a quoted CSV cell may span lines).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, TypeAlias

from ..core.echo import shown

#: CSV columns that hold JSON text (see docs/design.md, "Interfaces").
JSON_COLUMNS = frozenset({"parameters", "output", "options", "chunks", "meta", "analyses"})


@dataclass(frozen=True)
class Rejected:
    """A manifest record that was not accepted: where it is, and why (naming the field)."""

    line: int  # 1-based: the item's first line (YAML) or the record's first physical line (CSV)
    reason: str
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The line of the rejects file: ``{"line", "id", "reason"}``."""
        return {"line": self.line, "id": self.id, "reason": self.reason}


@dataclass(slots=True)
class Foreign:
    """JSON Lines lines left undecoded, another shard's by the id read from their bytes: `lines`
    of them in a row from `line` (one record for the run: a shard passes over most lines), the
    first one's id."""

    line: int
    id: str
    lines: int = 1


RawRecord: TypeAlias = tuple[int, Any] | Rejected | Foreign


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (which one wins differs between JSON readers)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key '{key}' appears twice in one JSON object: keep one")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads` object hook that refuses repeated keys instead of keeping the last one."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return obj


# --------------------------------------------------------------------------- JSON Lines


#: One decoder for every line: `json.loads(..., object_pairs_hook=...)` builds a new decoder per
#: call, which cost a resume of a million done lines several seconds.
_DECODER = json.JSONDecoder(object_pairs_hook=unique_keys)


def _text_lines(lines: Iterable[bytes | str], first: int = 1,
                foreign: Callable[[bytes, int], str | None] | None = None
                ) -> Iterator[tuple[int, str] | Rejected | Foreign]:
    """(number, stripped text) of each line that is neither blank nor a ``#`` comment, or a
    `Rejected` for a line that is not UTF-8 (a leading BOM is dropped), or a `Foreign` for a
    run of lines `foreign` names another shard's id for (asked of the raw bytes first)."""
    run: Foreign | None = None
    for number, raw in enumerate(lines, start=first):
        if isinstance(raw, bytes):
            if foreign is not None:
                owner = foreign(raw, number)
                if owner is not None:
                    if run is None:
                        run = Foreign(number, owner, 0)
                    run.lines += 1
                    continue
                if run is not None:
                    yield run
                    run = None
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield Rejected(number, f"line is not valid UTF-8 ({exc.reason} at byte {exc.start}): "
                                       "save the manifest as UTF-8")
                continue
        else:
            text = raw.lstrip("\ufeff") if number == 1 else raw
            if _has_surrogates(text):  # a text stream decoded with errors="surrogateescape"
                yield Rejected(number, "line is not valid UTF-8: save the manifest as UTF-8")
                continue
        text = text.strip()
        if text and not text.startswith("#"):
            yield number, text
    if run is not None:
        yield run


def iter_jsonl(lines: Iterable[bytes | str], first: int = 1,
               foreign: Callable[[bytes, int], str | None] | None = None) -> Iterator[RawRecord]:
    """One record per line; blank lines and lines starting with ``#`` are skipped; an object that
    repeats a key is rejected naming the key. `first`: the number of the first line given (a
    read that starts part-way through the file). `foreign(raw, number)` (a shard's filter) may
    name a line's id from its bytes before it is decoded: such lines come out undecoded, as a
    `Foreign` per run of them."""
    for record in _text_lines(lines, first, foreign):
        if isinstance(record, (Rejected, Foreign)):
            yield record
            continue
        number, text = record
        try:
            item = _DECODER.decode(text)
            if "\\u" in text and not is_unicode(item):
                yield Rejected(number, LONE_SURROGATE)
                continue
            yield number, item
        except DuplicateKeyError as exc:
            yield Rejected(number, str(exc))
        except json.JSONDecodeError as exc:
            hint = ""
            if text in ("[", "{"):
                hint = ": a JSON manifest is JSON Lines, one complete object per line (not a pretty-printed document)"
            yield Rejected(number, f"malformed JSON: {exc.msg} at column {exc.colno}{hint}")
        except (UnicodeError, RecursionError, ValueError) as exc:  # lone surrogates, deep nesting
            yield Rejected(number, f"malformed JSON: {exc}")


# --------------------------------------------------------------------------- plain text

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def iter_txt(lines: Iterable[bytes | str]) -> Iterator[RawRecord]:
    """One source per line: ``http(s)://`` is a url, ``oss://`` an oss object, anything else a
    local path (relative to the manifest's directory). Blank lines and lines starting with ``#``
    are skipped. The items carry no id (one is derived) and no capability (``--analyses``)."""
    for record in _text_lines(lines):
        if isinstance(record, (Rejected, Foreign)):  # (never Foreign: no filter is given)
            yield record
            continue
        number, text = record
        scheme = _SCHEME.match(text)
        kind = "path" if scheme is None else {"http": "url", "https": "url", "oss": "oss"}.get(scheme[1].lower())
        if kind is None:
            yield Rejected(number, f"unsupported source {shown(scheme[0] if scheme else text)}: a .txt manifest "
                                   "line is an http(s):// URL, an oss://bucket/key or a local file path")
        elif text.startswith("{"):
            yield Rejected(number, "a .txt manifest holds one source per line (URL, oss:// or path); for items "
                                   "with fields write a .jsonl manifest")
        else:
            yield number, {kind: text}


LONE_SURROGATE = "text holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape): not valid Unicode"


def is_unicode(value: Any) -> bool:
    """False if `value` holds a lone surrogate, which no UTF-8 file (result, checkpoint) can store."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- CSV


def _csv_value(column: str, cell: str) -> Any:
    """A cell's value: JSON for the JSON columns (``output`` may be a bare oss:// string, and
    ``analyses`` capability names separated by commas)."""
    if column not in JSON_COLUMNS:
        return cell
    if column == "output" and not cell.startswith("{"):
        return cell
    if column == "analyses" and not cell.startswith("["):
        return [name.strip() for name in cell.split(",")]
    try:
        return _DECODER.decode(cell)
    except DuplicateKeyError as exc:
        raise ValueError(f"column '{column}': {exc}") from exc
    except json.JSONDecodeError as exc:
        # Any user data: plain text is kept as a string; text that starts like JSON but is not
        # (`{bad`) is a mistake, and would end up in every result line as a string if kept.
        if column == "meta" and not cell.lstrip().startswith(("{", "[")):
            return cell
        raise ValueError(f"column '{column}' is not valid JSON ({exc.msg} at column {exc.colno}): "
                         f"write it as JSON text, e.g. {{\"key\": \"value\"}}") from exc


def iter_csv(f: IO[str], *, max_field: int) -> Iterator[RawRecord]:
    """Records of a CSV file with a header row; empty cells are absent keys; blank rows and rows
    whose first cell starts with ``#`` (comments, as in JSON Lines) are skipped.

    `f` must be opened with ``newline=""`` (and ``errors="surrogateescape"``, so that bad
    UTF-8 turns into a rejected record instead of an exception).
    """
    # The csv module's default field limit (128 KiB) would break inline `content` cells.
    if csv.field_size_limit() < max_field:
        csv.field_size_limit(max_field)
    reader = csv.reader(f)
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Rejected(start, f"CSV error: {exc}")
            if reader.line_num < start:  # no progress: the reader cannot go on
                return
            continue
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if any(_has_surrogates(cell) for cell in row):
            yield Rejected(start, "record is not valid UTF-8: save the manifest as UTF-8")
            continue
        if header is None:
            header = [name.strip() for name in row]
            dupes = sorted({n for n in header if n and header.count(n) > 1})
            if dupes:
                yield Rejected(start, f"CSV header repeats column(s) {', '.join(dupes)}: "
                                      "each column may appear once; no records were read")
                return
            continue
        if len(row) > len(header):
            yield Rejected(start, f"record has {len(row)} cells but the header has {len(header)} "
                                  "columns: quote cells that contain commas")
            continue
        item: dict[str, Any] = {}
        try:
            for column, raw_cell in zip(header, row, strict=False):  # short rows: missing cells are absent
                cell = raw_cell.strip()
                if cell:
                    item[column] = _csv_value(column, cell)
        except ValueError as exc:
            yield Rejected(start, str(exc))
            continue
        yield start, item


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
