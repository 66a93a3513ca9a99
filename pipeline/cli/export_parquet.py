"""`export --format parquet`: a run's results as a Parquet file, for DuckDB, pandas, Spark or a
warehouse. Written with pyarrow (the `parquet` extra), imported only here.

Two shapes, like the JSONL export's:

- the current view (no `--by-item`): one row per (item, analysis) the checkpoint holds done,
  in key order (by id, then analysis), with the columns of `COLUMNS`;
- `--by-item`: one row per item, `id`, `status` (SUCCESS when every analysis succeeded),
  `meta`, and `analyses`, a list of structs with the same per-analysis columns.

`usage`, `data` and `meta` are JSON text, not typed structs: their shape differs by capability,
service id and catalog (a transcript's segments, a detection's boxes, whatever `meta` a user put
in), and Parquet needs one schema per file; DuckDB reads them with `data::JSON` / `json_extract`,
pandas with `json.loads`. Timestamps are `timestamp[ms, UTC]`.

Memory stays flat: lines are read at the offsets the checkpoint keeps (as the JSONL export
reads them), gathered column by column and written as one row group every `BATCH_ROWS` lines
or `BATCH_BYTES` of JSON text, whichever comes first. The file is written whole or not at all
(a temporary file renamed over `--out`), and replaces only an earlier Parquet export (the
schema's `EXPORT_META` key tells one), refusing everything the JSONL export refuses.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from ..core.errors import StateError, UsageError
from ..core.exit_codes import ExitCode
from ..state.checkpoint import Checkpoint
from .export import _items, _Lines, _not_indexed, _open, _results_path
from .export_out import ByteSink, check_out, to_file

__all__ = ["BATCH_BYTES", "BATCH_ROWS", "COLUMNS", "EXPORT_META", "EXTRA_HINT", "Column", "main", "write_parquet"]

log = logging.getLogger("pipeline.export")

#: Lines per row group, and JSON text per row group: whichever comes first closes the group.
BATCH_ROWS = 8192
BATCH_BYTES = 32 << 20
#: The schema metadata key every export carries (value: "current" or "by-item").
EXPORT_META = b"media_pipeline.export"
EXTRA_HINT = ("Parquet export needs pyarrow: pip install 'opensearch-media-pipeline[parquet]' (or pip install "
              "pyarrow), then export again; --format jsonl needs nothing more")
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _error(record: dict[str, Any], field: str) -> Any:
    error = record.get("error")
    return error.get(field) if isinstance(error, dict) else None


def _json(field: str) -> Callable[[dict[str, Any]], str | None]:
    def get(record: dict[str, Any]) -> str | None:
        value = record.get(field)
        return None if value is None else _encode_json(value)
    return get


@dataclass(frozen=True)
class Column:
    """One per-analysis column: its name, kind (text, int, float, time, json) and how a result
    line's dict gives its value."""

    name: str
    kind: str
    get: Callable[[dict[str, Any]], Any]


def _field(name: str, kind: str) -> Column:
    return Column(name, kind, _json(name) if kind == "json" else itemgetter(name) if name in _ALWAYS
                  else lambda record: record.get(name))


_ALWAYS = frozenset({"id", "capability", "status"})  # every result line has them (`ResultLine.from_json`)

#: The current view's columns, in order (a new column is one line here). `analysis` of a line
#: from before analyses existed is its capability, as the checkpoint keys it.
COLUMNS: tuple[Column, ...] = (
    _field("id", "text"),
    Column("analysis", "text", lambda r: r.get("analysis") or r["capability"]),
    _field("capability", "text"),
    _field("service_id", "text"),
    _field("status", "text"),
    _field("task_id", "text"),
    _field("source", "text"),
    _field("fingerprint", "text"),
    Column("error_code", "text", lambda r: _error(r, "code")),
    Column("error_message", "text", lambda r: _error(r, "message")),
    Column("http_status", "int", lambda r: _error(r, "http_status")),
    _field("attempts", "int"),
    _field("polls", "int"),
    _field("submitted_at", "time"),
    _field("finished_at", "time"),
    _field("elapsed_s", "float"),
    _field("usage", "json"),
    _field("data", "json"),
    _field("meta", "json"),
)
#: An item's struct under `analyses` (`--by-item`): the columns that are the analysis's own.
ANALYSIS_COLUMNS = tuple(c for c in COLUMNS if c.name not in ("id", "meta"))


def main(args: argparse.Namespace) -> int:
    """`export --format parquet [--by-item] --state-dir DIR --out FILE`; returns the exit code."""
    out = str(args.out or "-")
    if out == "-":
        raise UsageError("--format parquet writes a file, not stdout: give --out FILE.parquet")
    _pyarrow()  # before anything is opened or written: a missing extra is a usage error
    state_dir = Path(args.state_dir)
    check_out(Path(out), state_dir, ours=_parquet_ours)
    ckpt = _open(state_dir)
    try:
        results = _results_path(ckpt, state_dir)
        check_out(Path(out), state_dir, run=(ckpt, results), ours=_parquet_ours)
        rows, lines = to_file(Path(out), lambda sink: write_parquet(ckpt, results, sink, state_dir=state_dir,
                                                                     by_item=bool(args.by_item)))
    finally:
        ckpt.close()
    what = f"{rows} items ({lines} analyses)" if args.by_item else f"{lines} (item, analysis) rows"
    log.info("exported %s to %s", what, out)
    return int(ExitCode.OK)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # the writer, checked now rather than half-way
    except ImportError:
        raise UsageError(EXTRA_HINT) from None
    return pyarrow


def _parquet_ours(path: Path) -> str | None:
    """None when `path` is an earlier Parquet export (its schema says so), else why not."""
    pa = _pyarrow()
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError):
        metadata = {}
    if EXPORT_META in metadata:
        return None
    return ("already exists and is not a Parquet export of this pipeline: move it away or give --out a path of its "
            "own; an export replaces only an earlier export")


def write_parquet(ckpt: Checkpoint, results: Path, sink: ByteSink, *, state_dir: Path,
                  by_item: bool = False) -> tuple[int, int]:
    """Write the export to `sink`; returns (rows, result lines) written."""
    pa = _pyarrow()
    import pyarrow.parquet as pq

    schema = _schema(pa, by_item)
    done = ckpt.done_lines()
    rows = count = 0
    try:
        with _Lines(results, state_dir) as lines, pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            batches = _item_batches(_items(done, lines, state_dir)) if by_item else _line_batches(done, lines,
                                                                                                 state_dir)
            for batch in batches:
                writer.write_batch(batch.to_arrow(pa, schema), row_group_size=len(batch))
                rows += len(batch)
                count += batch.lines
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{ckpt.path} is not a readable checkpoint ({exc})") from None
    finally:  # the key stream's cursor must end before the checkpoint is closed
        close = getattr(done, "close", None)
        if close is not None:
            close()
    return rows, count


def _arrow_type(pa: Any, kind: str) -> Any:
    return {"text": pa.string(), "json": pa.string(), "int": pa.int32(), "float": pa.float64(),
            "time": pa.timestamp("ms", tz="UTC")}[kind]


def _schema(pa: Any, by_item: bool) -> Any:
    meta = {EXPORT_META: b"by-item" if by_item else b"current"}
    if not by_item:
        return pa.schema([(c.name, _arrow_type(pa, c.kind)) for c in COLUMNS], metadata=meta)
    analysis = pa.struct([(c.name, _arrow_type(pa, c.kind)) for c in ANALYSIS_COLUMNS])
    return pa.schema([("id", pa.string()), ("status", pa.string()), ("meta", pa.string()),
                      ("analyses", pa.list_(analysis))], metadata=meta)


class _Columns:
    """Result lines gathered column by column, then turned into Arrow arrays."""

    def __init__(self, columns: tuple[Column, ...]) -> None:
        self.columns = columns
        self.values: list[list[Any]] = [[] for _ in columns]
        self.json_bytes = 0
        self.lines = 0

    def add(self, record: dict[str, Any]) -> None:
        self.lines += 1
        for column, values in zip(self.columns, self.values, strict=True):
            value = column.get(record)
            if column.kind == "json" and value is not None:
                self.json_bytes += len(value)
            values.append(value)

    def arrays(self, pa: Any) -> list[Any]:
        return [_time_array(pa, values) if column.kind == "time" else pa.array(values, _arrow_type(pa, column.kind))
                for column, values in zip(self.columns, self.values, strict=True)]


def _time_array(pa: Any, values: list[Any]) -> Any:
    """ISO-8601 strings (`…Z`) as UTC timestamps; a value that is not one is null, not an error."""
    target = pa.timestamp("ms", tz="UTC")
    try:
        return pa.array(values, pa.string()).cast(target)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # an edited or foreign value somewhere in the batch
        return pa.array([_parse_time(v) for v in values], target)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class _LineBatch(_Columns):
    def __len__(self) -> int:
        return self.lines

    def to_arrow(self, pa: Any, schema: Any) -> Any:
        return pa.record_batch(self.arrays(pa), schema=schema)


def _line_batches(done: Iterable[tuple[str, int | None]], lines: _Lines, state_dir: Path) -> Iterator[_LineBatch]:
    batch = _LineBatch(COLUMNS)
    for key, at in done:
        if at is None:
            raise StateError(_not_indexed(state_dir))
        batch.add(lines.read(key, at))
        if batch.lines >= BATCH_ROWS or batch.json_bytes >= BATCH_BYTES:
            yield batch
            batch = _LineBatch(COLUMNS)
    if batch.lines:
        yield batch


class _ItemBatch:
    """Items, with their analyses gathered as one flat set of columns and list offsets."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.status: list[str] = []
        self.meta: list[str | None] = []
        self.offsets = [0]
        self.analyses = _Columns(ANALYSIS_COLUMNS)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lines(self) -> int:
        return self.analyses.lines

    def add(self, item_id: str, group: list[tuple[str, dict[str, Any]]]) -> None:
        self.ids.append(item_id)
        ok = True
        for _analysis, record in group:
            self.analyses.add(record)
            ok = ok and record.get("status") == "SUCCESS"
        self.status.append("SUCCESS" if ok else "FAILED")
        meta = group[0][1].get("meta")  # an item's lines all carry its meta (as the JSONL export)
        self.meta.append(None if meta is None else _encode_json(meta))
        self.offsets.append(self.analyses.lines)

    def to_arrow(self, pa: Any, schema: Any) -> Any:
        struct = pa.StructArray.from_arrays(self.analyses.arrays(pa), fields=list(schema.field("analyses").type
                                                                                   .value_type))
        analyses = pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), struct)
        return pa.record_batch([pa.array(self.ids, pa.string()), pa.array(self.status, pa.string()),
                                pa.array(self.meta, pa.string()), analyses], schema=schema)


def _item_batches(items: Iterable[tuple[str, list[tuple[str, dict[str, Any]]]]]) -> Iterator[_ItemBatch]:
    batch = _ItemBatch()
    for item_id, group in items:
        batch.add(item_id, group)
        if batch.lines >= BATCH_ROWS or batch.analyses.json_bytes >= BATCH_BYTES:
            yield batch
            batch = _ItemBatch()
    if len(batch):
        yield batch
