"""Shared helpers for the tests of the checkpoint, the sink and resume preparation."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

from pipeline.core.job import job_key, split_key
from pipeline.core.results import ItemStatus, ResultLine
from pipeline.state.checkpoint import Checkpoint, Outcome

CAP = "image_analyze"
SVC = "ops-image-analyze-ocr-001"


def line_for(item_id: str, status: ItemStatus | str = ItemStatus.SUCCESS, code: str | None = None,
             **extra: Any) -> ResultLine:
    """The test item's line (`status` also as its JSON value: other test modules give "FAILED")."""
    status = ItemStatus(status)
    failed = status is ItemStatus.FAILED
    error = {"code": code, "message": "boom", "http_status": 400} if failed else None
    return ResultLine.finished(id=item_id, capability=CAP, service_id=SVC, status=status,
                               task_id=extra.pop("task_id", None), data=None if failed else {"ok": True},
                               usage=extra.pop("usage", None), error=error, attempts=1, polls=0,
                               submitted_at=1_700_000_000.0, finished_at=1_700_000_001.5, meta=extra.pop("meta", None))


def encode(line: ResultLine) -> bytes:
    return line.to_json().encode() + b"\n"


def key(item_id: str) -> str:
    """The checkpoint key of a test item (one analysis: its capability)."""
    return job_key(item_id, CAP)


def outcome(item_id: str, status: ItemStatus | str = ItemStatus.SUCCESS, code: str | None = None,
            task_id: str | None = None) -> Outcome:
    """What the checkpoint keeps of the test item's one analysis."""
    return Outcome(key(item_id), CAP, SVC, ItemStatus(status), task_id, code, None, None, 1)


def done_ids(ckpt: Checkpoint) -> list[str]:
    """The item ids the checkpoint has done, sorted."""
    return sorted(split_key(k)[0] for k in ckpt.iter_done_keys())


def pending_ids(ckpt: Checkpoint) -> dict[str, Any]:
    """The checkpoint's unfinished items by item id."""
    return {split_key(k)[0]: task for k, task in ckpt.pending().items()}


def file_ids(path: Path) -> list[str]:
    return [ResultLine.from_json(raw).id for raw in path.read_bytes().splitlines()]


def write_done(path: Path, ckpt: Checkpoint, item_ids: list[str], **extra: Any) -> None:
    """Append lines for `item_ids` and mark them done with their offsets, the way the sink does."""
    outcomes = []
    with open(path, "ab") as f:
        for i in item_ids:
            outcomes.append(dataclasses.replace(outcome(i, task_id=extra.get("task_id")), line_at=f.tell()))
            f.write(encode(line_for(i, **extra)))
    ckpt.mark_done(outcomes, path.stat().st_size)


#: The checkpoint's tables as the version before the `manifests` table wrote them (its manifests
#: were meta keys); the jobs were already keyed by (item id, analysis).
PREVIOUS_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (id TEXT PRIMARY KEY, capability TEXT NOT NULL, service_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('submitted', 'done', 'retry')), task_id TEXT, submitted_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0, resubmits INTEGER NOT NULL DEFAULT 0, status TEXT, error_code TEXT,
    usage TEXT, elapsed REAL, finished_at REAL, line_at INTEGER);
CREATE INDEX jobs_state ON jobs (state);
CREATE TABLE uploads (id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL,
    sha256 TEXT NOT NULL);
CREATE TABLE upload_stamps (id TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL);
CREATE TABLE spend (id TEXT PRIMARY KEY, reserved REAL NOT NULL DEFAULT 0, settled REAL NOT NULL DEFAULT 0);
"""


def previous_state_dir(state_dir: Path, meta: dict[str, str]) -> Path:
    """A state dir as the version before the `manifests` table left it, holding `meta` (and
    `key_format` 2, as that version wrote on its first open)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state_dir / Checkpoint.DB_NAME)
    try:
        conn.executescript(PREVIOUS_SCHEMA)
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [("key_format", "2"), *meta.items()])
        conn.commit()
    finally:
        conn.close()
    return state_dir


def to_previous_layout(state_dir: Path) -> dict[str, str]:
    """Turn a state dir of today into what the version before the `manifests` table would have
    left: each manifest's row back into the meta keys that version wrote (`manifests`, `manifest`,
    `rejected:<name>`, `items:<name>` once read to its end, `shared:<name>`, `empty:<name>`), and
    the table dropped. Returns the meta keys written."""
    conn = sqlite3.connect(state_dir / Checkpoint.DB_NAME)
    try:
        rows = conn.execute("SELECT name, rejected, items, shared, empty FROM manifests ORDER BY position").fetchall()
        meta = {"manifests": "\n".join(r[0] for r in rows), "manifest": rows[-1][0]}
        for name, rejected, item_count, shared, empty in rows:
            meta[f"rejected:{name}"] = str(rejected)
            if item_count is not None:
                meta[f"items:{name}"] = str(item_count)
            if shared:
                meta[f"shared:{name}"] = str(shared)
            if empty is not None:
                meta[f"empty:{name}"] = "1" if empty else "0"
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
        conn.execute("DROP TABLE manifests")
        conn.commit()
    finally:
        conn.close()
    return meta


def meta_of(state_dir: Path) -> dict[str, str]:
    """Every meta key of a state dir, read without the checkpoint's code."""
    conn = sqlite3.connect(state_dir / Checkpoint.DB_NAME)
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()


def tables_of(state_dir: Path) -> set[str]:
    conn = sqlite3.connect(state_dir / Checkpoint.DB_NAME)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
