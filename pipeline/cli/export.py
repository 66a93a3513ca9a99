"""`export --by-item`: the results of a run regrouped by item, one JSON object per item.

The results file has one line per (item, analysis), in the order they finished. The export
writes one object per item instead::

    {"id": ..., "status": "SUCCESS" | "FAILED", "meta": ...,
     "analyses": {"<analysis>": {"capability", "service_id", "status", "task_id", "data", "usage",
                                 "error", "attempts", "polls", "submitted_at", "finished_at",
                                 "elapsed_s"[, "source_oss"]}, ...}}

`status` is SUCCESS when every analysis of the item succeeded; `meta` is the first line's (in
analysis-name order; an item's lines all carry the same meta). Analyses are ordered by name.

Items come in checkpoint key order: by id, compared byte-wise as UTF-8 (an id that extends
another id with the key separator, U+001F, comes before that other id).

Memory does not grow with the run: the checkpoint streams its done keys in key order
(`Checkpoint.done_lines`), so every analysis of an item comes in one stretch; each line is read
at the offset the checkpoint keeps for it, and an item is written as soon as its stretch ends.
The checkpoint is opened read-only, so a live run's state dir can be exported: the export sees
what was done when it started (while it reads, that run's SQLite WAL file cannot be reset and
grows a little).

`--out FILE` is written whole or not at all (a temporary file renamed over it). It replaces
only an earlier export: the run's own files, its manifests, the state dir, devices, directories,
symbolic links and any other existing file are refused before anything is written. On stdout the
items before an error (a line the results file no longer holds where the checkpoint says) are
already written; the exit code is 2 all the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import StateError, UsageError
from ..core.exit_codes import ExitCode
from ..core.job import KEY_SEP, job_key, split_key
from ..core.results import ItemStatus
from ..state.checkpoint import KEY_FORMAT, Checkpoint, MetaKey
from .export_out import ByteSink, check_out, to_file, to_stdout

__all__ = ["ANALYSIS_FIELDS", "export_by_item", "export_flat", "main",
           "selected_rows"]

log = logging.getLogger("pipeline.export")

#: What an item's entry under `analyses` keeps of each of its lines, in this order.
ANALYSIS_FIELDS = ("capability", "service_id", "status", "task_id", "data", "usage", "error", "attempts",
                   "polls", "submitted_at", "finished_at", "elapsed_s")
# Plain strings (the lines' JSON values), compared once per analysis.
SUCCESS, FAILED = ItemStatus.SUCCESS.value, ItemStatus.FAILED.value
#: Bytes read first at a line's offset (more when the line is longer): most lines fit.
READ_AHEAD = 4096
# Built once: json.loads / json.dumps with arguments build a new coder on every call.
_decode = json.JSONDecoder().decode
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def main(args: argparse.Namespace) -> int:
    """`python -m pipeline export [--by-item | --changes [--since-run N]] [--format jsonl|parquet] --state-dir DIR
    [--out FILE|-]`; returns the exit code."""
    changes = getattr(args, "changes", False)
    if args.by_item and changes:
        raise UsageError("--by-item and --changes do not combine: --changes writes one line per changed result")
    if getattr(args, "since_run", None) is not None and not changes:
        raise UsageError("--since-run goes with --changes")
    if getattr(args, "format", "jsonl") == "parquet":
        if changes:
            raise UsageError("--changes is written as JSONL (its vanished records are not result rows): "
                             "leave out --format parquet")
        from .export_parquet import main as parquet_main  # pyarrow: only a Parquet export needs it

        return parquet_main(args)
    state_dir = Path(args.state_dir)
    out = str(args.out or "-")
    if out != "-":  # all that can be told without the checkpoint, before opening it creates SQLite's files
        check_out(Path(out), state_dir)
    ckpt = _open(state_dir)
    try:
        if changes:  # which session wrote each line: kept only since the catalog's columns
            ckpt.require_today()
        results = _results_path(ckpt, state_dir)

        def write(sink: ByteSink) -> tuple[int, int]:
            if args.by_item:
                return export_by_item(ckpt, results, sink, state_dir=state_dir)
            since = None
            if changes:
                since = _since(args.since_run, ckpt.catalog.session(), last_run_since(ckpt))
            return export_flat(selected_rows(ckpt, since), results, sink, state_dir=state_dir)

        if out == "-":
            counts = to_stdout(write)
            if counts is None:  # cut short by its reader: not the whole export, so not 0
                return int(ExitCode.INTERRUPTED)
        else:
            check_out(Path(out), state_dir, run=(ckpt, results))
            counts = to_file(Path(out), write)
    finally:
        ckpt.close()
    what = "%d items (%d analyses)" if args.by_item else "%d lines (%d vanished records)"
    log.info(f"exported {what} to %s", *counts, "stdout" if out == "-" else out)
    return int(ExitCode.OK)


def _since(given: int | None, last: int, default: int) -> int:
    """The run `--changes` starts after: `given`, checked against the runs the state dir has
    (0 to the last: 0 is everything, the last an empty delta), or `default` (`last_run_since`)."""
    if given is None:
        return default
    if not 0 <= given <= last:
        runs = f"runs 1 to {last}" if last > 1 else ("run 1 only" if last == 1 else "no run yet")
        raise UsageError(f"--since-run {given}: this state dir has {runs}; give N from 0 (every line) to {last} "
                         "(run numbers: the summary's catalog.session, or `status --history`)")
    return given


def export_by_item(ckpt: Checkpoint, results: Path, sink: ByteSink, *, state_dir: Path) -> tuple[int, int]:
    """Write one line per item to `sink`, reading `results`; returns (items, analyses) written."""
    items = analyses = 0
    done = ckpt.done_lines()
    try:
        with _Lines(results, state_dir) as lines:
            for item_id, group in _items(done, lines, state_dir):
                sink.write(_encode(item_id, group))
                items += 1
                analyses += len(group)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{ckpt.path} is not a readable checkpoint ({exc})") from None
    finally:  # on any exit: the key stream's cursor must end before the checkpoint is closed
        close = getattr(done, "close", None)
        if close is not None:
            close()
    return items, analyses


def selected_rows(ckpt: Checkpoint, changes_since: int | None = None) -> Iterator[tuple[str, int | None]]:
    """The rows an export writes, in key order: (key, line start) of every live (item, analysis)'s
    current line; with `changes_since` N, only those a run after N wrote, then (key, None) for
    each key a run after N found vanished. A superseded line is never one of them (a key's row
    points at its current line only), nor a vanished key's."""
    if changes_since is None:
        yield from ckpt.done_lines()
        return
    yield from ckpt.catalog.changed_lines(changes_since)
    for key in ckpt.catalog.vanished_keys(changes_since):
        yield key, None


def last_run_since(ckpt: Checkpoint) -> int:
    """`--changes`' default: the session before the last run's first, so the export holds every
    session of that run (a night interrupted, then resumed, is one run: the lines of both). A
    state dir from before runs were recorded: the session before the last."""
    began = ckpt.catalog.run_began()
    return max((began if began is not None else ckpt.catalog.session()) - 1, 0)


def export_flat(rows: Iterator[tuple[str, int | None]], results: Path, sink: ByteSink, *,
                state_dir: Path) -> tuple[int, int]:
    """Write each row's result line as it is in the results file (checked to be that key's), or
    ``{"id", "analysis", "vanished": true}`` for a vanished key; returns (lines, vanished records)."""
    lines = vanished = 0
    with _Lines(results, state_dir) as reader:
        for key, at in rows:
            item_id, analysis = split_key(key)
            if at is None:
                sink.write(_encode_json({"id": item_id, "analysis": analysis, "vanished": True}).encode() + b"\n")
                vanished += 1
                continue
            sink.write(_encode_json(reader.read(key, at)).encode("utf-8") + b"\n")
            lines += 1
    return lines, vanished


# ---- the state dir ---------------------------------------------------------------------------
def _open(state_dir: Path) -> Checkpoint:
    if not (state_dir / Checkpoint.DB_NAME).is_file():
        raise UsageError(f"{state_dir} holds no run (no {Checkpoint.DB_NAME} in it): give the --state-dir of a run")
    ckpt = Checkpoint.open(state_dir, read_only=True)
    if ckpt.get_meta(MetaKey.KEY_FORMAT) != KEY_FORMAT or ckpt.flag(MetaKey.NEEDS_LINE_INDEX):
        ckpt.close()
        raise StateError(_not_indexed(state_dir))
    return ckpt


def _not_indexed(state_dir: Path) -> str:
    return (f"state dir {state_dir} is from an earlier version: the checkpoint does not know where each result "
            "line is yet. Run `python -m pipeline run` once on it (the same manifest, --out and --state-dir; "
            "resuming indexes the results file), then export again")


def _results_path(ckpt: Checkpoint, state_dir: Path) -> Path:
    recorded = ckpt.get_meta(MetaKey.OUT)
    if not recorded:
        raise StateError(f"state dir {state_dir} records no results file: it holds no run that wrote results")
    return Path(recorded)


class _Lines:
    """The results file, open once: the line starting at a byte offset, as the dict it encodes.

    Read with `os.pread` at each offset (no seek, no read buffer to refill after each jump)."""

    def __init__(self, path: Path, state_dir: Path) -> None:
        self.path = path
        self._state_dir = state_dir
        self._fd: int | None = None

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _line_at(self, at: int) -> bytes:
        """The bytes from `at` to the end of the line (without the newline), or to the end of the file."""
        if self._fd is None:  # opened at the first line: a run with nothing done may have no file yet
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                raise StateError(f"results file {self.path} of the run in {self._state_dir} is missing: restore "
                                 "it (the export reads every item's lines from it)") from None
        size = READ_AHEAD
        while True:
            raw = os.pread(self._fd, size, at)
            end = raw.find(b"\n")
            if end >= 0:
                return raw[:end]
            if len(raw) < size:  # the end of the file
                return raw
            size *= 4  # a long line (a transcript, many objects): read it whole

    def read(self, key: str, at: int) -> dict[str, Any]:
        """The line of `key` at byte `at`; it must be that key's line (else the file was edited)."""
        raw = self._line_at(at)
        try:
            record = _decode(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            record = None
        found = _key_of(record)
        if found != key:
            item_id, analysis = split_key(key)
            there = "its end" if not raw else (f"the line of {found!r}" if found else "no result line")
            raise StateError(
                f"results file {self.path} was changed after the run wrote it: the state dir {self._state_dir} "
                f"has the line of item {item_id!r} (analysis {analysis}) at byte {at}, but finds {there} there. "
                "Restore the file the run wrote, then export again")
        assert isinstance(record, dict)
        return record


def _key_of(record: Any) -> str | None:
    """The checkpoint key of a parsed line, or None when it is not a result line."""
    if not isinstance(record, dict):
        return None
    item_id, capability, analysis = record.get("id"), record.get("capability"), record.get("analysis")
    if not isinstance(item_id, str) or not isinstance(capability, str):
        return None
    return job_key(item_id, analysis if isinstance(analysis, str) and analysis else capability)


# ---- grouping --------------------------------------------------------------------------------
def _items(done: Iterator[tuple[str, int | None]], lines: _Lines,
           state_dir: Path) -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """(item id, [(analysis, line)]) per item, from the done keys in key order.

    Every key starting with `<id><sep>` comes in one stretch of the key order, so an item is
    complete once a key outside its stretch arrives. Its own keys may be split by those of an
    item whose id is `<id><sep>...` (ids may hold the separator): such items nest, hence the
    stack; it holds one item unless ids do that.
    """
    open_items: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
    for key, at in done:
        item_id, analysis = split_key(key)
        if analysis is None or at is None:
            raise StateError(_not_indexed(state_dir))
        while open_items and not key.startswith(open_items[-1][0] + KEY_SEP):
            yield open_items.pop()
        if not open_items or open_items[-1][0] != item_id:
            open_items.append((item_id, []))
        open_items[-1][1].append((analysis, lines.read(key, at)))
    while open_items:
        yield open_items.pop()


def _encode(item_id: str, group: list[tuple[str, dict[str, Any]]]) -> bytes:
    """One item's output line. `group` is in key order, so already by analysis name."""
    analyses: dict[str, dict[str, Any]] = {}
    ok = True
    for analysis, record in group:
        entry = {name: record.get(name) for name in ANALYSIS_FIELDS}
        source_oss = record.get("source_oss")
        if source_oss is not None:
            entry["source_oss"] = source_oss
        analyses[analysis] = entry
        ok = ok and entry["status"] == SUCCESS
    item = {"id": item_id, "status": SUCCESS if ok else FAILED, "meta": group[0][1].get("meta"),
            "analyses": analyses}
    return _encode_json(item).encode("utf-8") + b"\n"  # as json.dumps(ensure_ascii=False, separators=(",", ":"))
