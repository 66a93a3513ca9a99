"""The one JSONL writer: exactly one result line per item, across crashes and resumes.

Order of durability (see `checkpoint` for the other half): a batch of lines is appended and
flushed to the results file, then the batch is marked done in the checkpoint together with
the file's new size. `resume.reconcile()` runs before a run writes anything: it marks done the
lines a crash left past the recorded size and cuts a torn last line, so no line is ever
written twice.

The sink reads lines from a memory stream and returns when every sender has closed its end
(after writing what was sent). Each line, once durable in both places, goes on to the `durable`
stream (progress, chained analyses and the failure watch read it there), which the sink closes
when it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..core.results import ResultLine
from .checkpoint import Checkpoint, Outcome

__all__ = ["BATCH_MAX", "Sink", "outcome_of"]

#: Lines written (and marked done) in one transaction at most.
BATCH_MAX = 1000
#: How long the sink lets lines gather after the first one of a batch.
BATCH_WAIT_S = 0.005


def outcome_of(line: ResultLine, line_at: int | None = None) -> Outcome:
    """What the checkpoint keeps of a line written at byte `line_at` of the results file."""
    return Outcome(key=line.key, capability=line.capability, service_id=line.service_id, status=line.status,
                   task_id=line.task_id, error_code=line.error_code, usage=line.usage, elapsed=line.elapsed_s,
                   attempts=line.attempts, line_at=line_at, fingerprint=line.fingerprint, source=line.source)


class Sink:
    """Appends result lines in batches; every line goes on to `durable` once it is durable in
    both places, so progress and summary counts always agree with the file."""

    def __init__(self, path: Path, checkpoint: Checkpoint,
                 cost: Callable[[ResultLine], float] | None = None) -> None:
        self.path = path
        self._checkpoint = checkpoint
        self._cost = cost  # settles each item's spend reservation with what it cost
        self.written = 0

    def __repr__(self) -> str:
        return f"Sink({str(self.path)!r}, written={self.written})"

    async def run(self, lines: MemoryObjectReceiveStream[ResultLine],
                  durable: MemoryObjectSendStream[ResultLine] | None = None) -> None:
        """Write every line sent until all senders close, passing each on to `durable` once it is
        durable; the file and `durable` are closed on any exit. `durable` must be unbounded: the
        sink never waits for its reader (which takes every line without waiting on anything
        else, so it holds about one batch)."""
        # Blocking writes on purpose: a batch is durable (flushed, then marked done) before the
        # next one is taken; batches are small and the disk is local.
        with open(self.path, "ab") as file, lines, durable or nullcontext():  # noqa: ASYNC230
            async for first in lines:
                # A moment first: lines finished meanwhile join this batch, so a busy run
                # writes (and commits) in batches, not line by line. A line is late by at most
                # this long; nothing is at risk, a crash in between only re-polls its task.
                await anyio.sleep(BATCH_WAIT_S)
                batch = [first]
                while len(batch) < BATCH_MAX:
                    try:
                        batch.append(lines.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                self.write(file, batch)
                if durable is not None:
                    for line in batch:
                        durable.send_nowait(line)

    def write(self, f: BinaryIO, batch: list[ResultLine]) -> None:
        """Append `batch`, flush, then mark it done with the file's new size (one transaction)."""
        encoded = [line.to_json().encode("utf-8") + b"\n" for line in batch]
        at = f.tell()
        outcomes = []
        for line, raw in zip(batch, encoded, strict=True):
            outcomes.append(outcome_of(line, at))
            at += len(raw)
        f.write(b"".join(encoded))
        f.flush()
        costs = [(line.key, self._cost(line)) for line in batch] if self._cost is not None else []
        self._checkpoint.mark_done(outcomes, f.tell(), costs)
        self.written += len(batch)
