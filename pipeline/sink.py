"""The one JSONL writer: exactly one result line per item, across crashes and resumes.

Order of durability (see `checkpoint` for the other half): a batch of lines is appended and
flushed to the results file, then the batch is marked done in the checkpoint together with
the file's new size. `reconcile()` runs before a run writes anything: it marks done the lines
a crash left past the recorded size and cuts a torn last line, so no line is ever written twice.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from .checkpoint import Checkpoint, Outcome
from .errors import UsageError

BATCH_MAX = 1000


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def result_line(
    *,
    job_id: str,
    capability: str,
    service_id: str,
    status: str,
    task_id: str | None,
    data: Any,
    usage: Any,
    error: dict[str, Any] | None,
    attempts: int,
    polls: int,
    submitted_at: float | None,
    finished_at: float,
    meta: Any,
) -> dict[str, Any]:
    """The result line of DESIGN.md, field for field."""
    return {
        "id": job_id,
        "capability": capability,
        "service_id": service_id,
        "status": status,
        "task_id": task_id,
        "data": data,
        "usage": usage,
        "error": error,
        "attempts": attempts,
        "polls": polls,
        "submitted_at": iso(submitted_at),
        "finished_at": iso(finished_at),
        "elapsed_s": round(finished_at - submitted_at, 3) if submitted_at is not None else None,
        "meta": meta,
    }


def outcome_of(line: dict[str, Any]) -> Outcome:
    error = line.get("error") or {}
    return Outcome(
        id=line["id"],
        capability=line.get("capability", ""),
        service_id=line.get("service_id", ""),
        status=line.get("status", "FAILED"),
        task_id=line.get("task_id"),
        error_code=error.get("code") if isinstance(error, dict) else None,
        usage=line.get("usage"),
        elapsed=line.get("elapsed_s"),
        attempts=int(line.get("attempts") or 0),
    )


class ResultsMissing(UsageError):
    """The state dir says results were written, but the results file is gone (exit 2)."""


def reconcile(path: Path, checkpoint: Checkpoint) -> int:
    """Bring the checkpoint and the results file into agreement after any crash.

    Returns how many lines were found written but not yet marked done.
    """
    offset = checkpoint.sink_offset()
    if not path.exists():
        if offset > 0:
            raise ResultsMissing(
                f"results file {path} is missing, but the state dir records {offset} bytes of "
                "results in it: restore the file, or start over with a new --state-dir")
        return 0
    size = path.stat().st_size
    if size < offset:
        return _full_reconcile(path, checkpoint)
    if size == offset:
        return 0
    with open(path, "r+b") as f:
        f.seek(offset)
        tail = f.read()
        end = tail.rfind(b"\n") + 1  # 0 when there is no complete line
        if end < len(tail):  # a torn last line: the crash came mid-write
            f.truncate(offset + end)
    outcomes = [outcome_of(json.loads(raw)) for raw in tail[:end].splitlines() if raw.strip()]
    checkpoint.mark_done(outcomes, offset + end)
    return len(outcomes)


def _full_reconcile(path: Path, checkpoint: Checkpoint) -> int:
    """The file is shorter than recorded (a rewrite was interrupted): trust the file."""
    in_file: list[Outcome] = []
    good_end = 0
    with open(path, "r+b") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                f.truncate(good_end)
                break
            good_end += len(raw)
            if raw.strip():
                in_file.append(outcome_of(json.loads(raw)))
    present = {o.id for o in in_file}
    missing = checkpoint.ids_in_state("done") - present
    checkpoint.reset_to_pending(missing)
    checkpoint.mark_done(in_file, good_end)
    return len(in_file)


def drop_lines(path: Path, ids: set[str], checkpoint: Checkpoint) -> int:
    """Remove the lines of `ids` from the results file (for `--retry-failed`), atomically."""
    if not path.exists() or not ids:
        return 0
    tmp = path.with_name(path.name + ".rewrite")
    dropped = 0
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for raw in src:
            if not raw.endswith(b"\n"):
                break  # torn tail: never copy half a line
            try:
                line_id = json.loads(raw).get("id")
            except ValueError:
                line_id = None
            if line_id in ids:
                dropped += 1
                continue
            dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    checkpoint.set_meta("sink_offset", str(path.stat().st_size))
    return dropped


class Sink:
    """Appends result lines in batches from one writer task; `close()` flushes and is safe twice.

    `on_written(line)` is called for every line after it is durable in both places, so
    progress and summary counts always agree with the file (DESIGN.md invariant 7).
    """

    def __init__(self, path: Path, checkpoint: Checkpoint,
                 on_written: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self._checkpoint = checkpoint
        self._on_written = on_written
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._file = open(path, "ab")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.written = 0

    def __repr__(self) -> str:
        return f"Sink({str(self.path)!r}, written={self.written}, queued={self._queue.qsize()})"

    def start(self) -> asyncio.Task[None]:
        """Start the writer task; the caller watches it (a write error, e.g. a full disk, ends it)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sink")
        return self._task

    def put(self, line: dict[str, Any]) -> None:
        if self._closed:
            raise RuntimeError("sink is closed")
        self._queue.put_nowait(line)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            done = None in batch
            self._write([line for line in batch if line is not None])
            if done:
                return

    def _write(self, lines: Iterable[dict[str, Any]]) -> None:
        lines = list(lines)
        if not lines:
            return
        payload = b"".join(
            json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
            for line in lines
        )
        self._file.write(payload)
        self._file.flush()
        self._checkpoint.mark_done([outcome_of(line) for line in lines], self._file.tell())
        self.written += len(lines)
        if self._on_written:
            for line in lines:
                self._on_written(line)

    async def close(self) -> None:
        """Write everything queued, then close the file."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
        else:
            pending = []
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    pending.append(item)
            self._write(pending)
        self._file.close()

    def abandon(self) -> None:
        """Hard stop (second signal): close the file without writing what is queued."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._file.close()
