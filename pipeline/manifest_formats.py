"""Streaming readers for the three manifest formats: JSON Lines, CSV and YAML.

Each reader turns an open file into a lazy stream of ``(line, raw_item)`` pairs, or a
`Rejected` when a record cannot even be parsed, and reads on after it. Nothing here knows
what an item means; `pipeline.manifest` validates the raw items. No reader holds more than
one record in memory: JSON Lines and CSV go line by line, YAML is composed one item node at a
time from PyYAML's event stream.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator, Union, cast

import yaml

#: CSV columns that hold JSON text (see DESIGN.md "Manifest item").
JSON_COLUMNS = frozenset({"parameters", "output", "options", "chunks", "meta"})


@dataclass(frozen=True)
class Rejected:
    """A manifest record that was not accepted: where it is, and why (naming the field)."""

    line: int  # 1-based: the item's first line (YAML) or the record's first physical line (CSV)
    reason: str
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The line of the rejects file: ``{"line", "id", "reason"}``."""
        return {"line": self.line, "id": self.id, "reason": self.reason}


RawRecord = Union[tuple[int, Any], Rejected]


# --------------------------------------------------------------------------- JSON Lines


def iter_jsonl(lines: Iterable[bytes | str]) -> Iterator[RawRecord]:
    """One record per line; blank lines and lines starting with ``#`` are skipped."""
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
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
        if not text or text.startswith("#"):
            continue
        try:
            item = json.loads(text)
            if "\\u" in text and not _is_unicode(item):
                yield Rejected(number, _LONE_SURROGATE)
                continue
            yield number, item
        except json.JSONDecodeError as exc:
            hint = ""
            if text in ("[", "{"):
                hint = ": a JSON manifest is JSON Lines, one complete object per line (not a pretty-printed document)"
            yield Rejected(number, f"malformed JSON: {exc.msg} at column {exc.colno}{hint}")
        except (UnicodeError, RecursionError, ValueError) as exc:  # lone surrogates, deep nesting
            yield Rejected(number, f"malformed JSON: {exc}")


_LONE_SURROGATE = "text holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape): not valid Unicode"


def _is_unicode(value: Any) -> bool:
    """False if `value` holds a lone surrogate, which no UTF-8 file (result, checkpoint) can store."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- CSV


def _csv_value(column: str, cell: str) -> Any:
    """A cell's value: JSON for the JSON columns (``output`` may be a bare oss:// string)."""
    if column not in JSON_COLUMNS:
        return cell
    if column == "output" and not cell.startswith("{"):
        return cell
    try:
        return json.loads(cell)
    except json.JSONDecodeError as exc:
        if column == "meta":  # any user data: plain text is kept as a string
            return cell
        raise ValueError(f"column '{column}' is not valid JSON ({exc.msg} at column {exc.colno}): "
                         f"write it as JSON text, e.g. {{\"key\": \"value\"}}") from exc


def iter_csv(f: IO[str], *, max_field: int) -> Iterator[RawRecord]:
    """Records of a CSV file with a header row; empty cells are absent keys.

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
        if not row or all(not cell.strip() for cell in row):
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
            for column, cell in zip(header, row):
                cell = cell.strip()
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


# --------------------------------------------------------------------------- YAML


class _ManifestLoader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver: dates stay strings, so items stay JSON."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def iter_yaml(stream: IO[bytes] | IO[str]) -> Iterator[RawRecord]:
    """Items of a YAML manifest: a top-level sequence of mappings, or one mapping per document.

    Composes one item node at a time from the event stream, so a huge list is never loaded
    whole. A syntax error cannot be resynchronised: it is reported once and reading stops.
    """
    try:
        loader = _ManifestLoader(stream)  # reads (and decodes) the first chunk already
    except yaml.YAMLError as exc:
        yield Rejected(1, f"YAML error: {_yaml_problem(exc)}; the file was not read")
        return
    skip = cast(Callable[[], object], loader.get_event)  # consume one event we already checked
    try:
        skip()  # StreamStart
        while not loader.check_event(yaml.StreamEndEvent):
            skip()  # DocumentStart
            if loader.check_event(yaml.SequenceStartEvent):
                skip()
                while not loader.check_event(yaml.SequenceEndEvent):
                    yield _construct(loader, loader.compose_node(None, None))  # type: ignore[arg-type]
                skip()
            else:
                node = loader.compose_node(None, None)  # type: ignore[arg-type]
                if not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
                    yield _construct(loader, node)
            skip()  # DocumentEnd
            loader.anchors = {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.context_mark or exc.problem_mark  # where the broken construct began
        line = mark.line + 1 if mark is not None else loader.line + 1
        yield Rejected(line, f"YAML syntax error: {_yaml_problem(exc)}; the rest of the file was not read")
    except yaml.YAMLError as exc:  # e.g. a ReaderError for bytes that are not UTF-8
        yield Rejected(loader.line + 1, f"YAML error: {_yaml_problem(exc)}; the rest of the file was not read")
    finally:
        loader.dispose()


def _construct(loader: _ManifestLoader, node: yaml.Node | None) -> RawRecord:
    assert node is not None  # compose_node returns None only at the end of a document
    line = node.start_mark.line + 1
    try:
        item = loader.construct_document(node)
        return (line, item) if _is_unicode(item) else Rejected(line, _LONE_SURROGATE)
    except yaml.YAMLError as exc:  # e.g. an unknown tag; the next item is unaffected
        loader.constructed_objects, loader.recursive_objects, loader.state_generators = {}, {}, []
        loader.deep_construct = False
        return Rejected(line, f"YAML item cannot be read: {_yaml_problem(exc)}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The one-line gist of a PyYAML error (its str() spans several lines with marks)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [exc.context, exc.problem]
        if exc.problem_mark is not None:
            parts.append(f"at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}")
        return " ".join(p for p in parts if p)
    if isinstance(exc, yaml.reader.ReaderError):
        return f"not valid UTF-8 ({exc.reason} at character {exc.position}): save the manifest as UTF-8"
    return str(exc).replace("\n", " ")
