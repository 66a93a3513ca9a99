"""Shared helpers for the tests of the checkpoint, the sink and resume preparation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.core.job import job_key, split_key
from pipeline.core.results import ItemStatus, ResultLine
from pipeline.state.checkpoint import Checkpoint, Outcome

CAP = "image_analyze"
SVC = "ops-image-analyze-ocr-001"


def line_for(job_id: str, status: str = "SUCCESS", code: str | None = None, **extra: Any) -> ResultLine:
    error = {"code": code, "message": "boom", "http_status": 400} if status == "FAILED" else None
    return ResultLine.finished(id=job_id, capability=CAP, service_id=SVC, status=ItemStatus(status),
                               task_id=extra.pop("task_id", None), data={"ok": True} if status == "SUCCESS" else None,
                               usage=extra.pop("usage", None), error=error, attempts=1, polls=0,
                               submitted_at=1_700_000_000.0, finished_at=1_700_000_001.5, meta=extra.pop("meta", None))


def encode(line: ResultLine) -> bytes:
    return line.to_json().encode() + b"\n"


def key(job_id: str) -> str:
    """The checkpoint key of a test item (one analysis: its capability)."""
    return job_key(job_id, CAP)


def outcome(job_id: str, status: str = "SUCCESS", code: str | None = None, task_id: str | None = None) -> Outcome:
    return Outcome(key(job_id), CAP, SVC, status, task_id, code, None, None, 1)


def done_ids(ckpt: Checkpoint) -> list[str]:
    """The item ids the checkpoint has done, sorted."""
    return sorted(split_key(k)[0] for k in ckpt.iter_done_ids())


def pending_ids(ckpt: Checkpoint) -> dict[str, Any]:
    """The checkpoint's unfinished items by item id."""
    return {split_key(k)[0]: task for k, task in ckpt.pending().items()}


def file_ids(path: Path) -> list[str]:
    return [ResultLine.from_json(raw).id for raw in path.read_bytes().splitlines()]


def write_done(path: Path, ckpt: Checkpoint, ids: list[str], **extra: Any) -> None:
    """Append lines for `ids` and mark them done with their offsets, the way the sink does."""
    outcomes = []
    with open(path, "ab") as f:
        for i in ids:
            outcomes.append(dataclasses.replace(outcome(i, task_id=extra.get("task_id")), line_at=f.tell()))
            f.write(encode(line_for(i, **extra)))
    ckpt.mark_done(outcomes, path.stat().st_size)
