"""Chained analyses: an analysis with `after: <name>` starts only when that analysis of the same
item has its durable result line (invariant 15).

- `follow(child, parent_line)` (pure) decides what the child becomes: the job to submit (with
  the parent's `data` as its `chunks` when the protocol chains the two capabilities, e.g.
  video segmentation -> summarization), or a `DependencyFailed` error: the parent failed, so
  the child is written FAILED without being submitted (nothing is billed).
- `Chain` keeps the children whose parent has no durable line yet. The reader asks it for each
  child's parent (`parent_line`): when the parent's line is durable already (done in an earlier
  session, or just now), the child is decided at once from that line, read back from the
  results file at the offset the checkpoint keeps; otherwise the child waits. The stage after
  the sink hands it every durable line (`parent_written`), and the children waiting for that
  line go on the `ready` stream, which the reader takes them from.

Why no child is missed or released twice, though the written lines reach the chain on a stream,
some time after the sink marked them done: the checkpoint decides. The sink marks a line done
before it sends it on, so `parent_written(line)` always comes after the line is done in the
checkpoint. `parent_line` reads the checkpoint and, if the parent is not done, registers the
child, in one synchronous step (no await, so nothing runs in between). If that step comes before
the sink marks the parent done, the registration also precedes `parent_written` for it, which
releases the child; if it comes after, the child is decided at once and never registered, and
`parent_written` finds nobody waiting. There is no third order.

Waiting children are bounded by the parents in flight (each holds an in-flight token) times
the analyses per item. A run that stops leaves them unsubmitted; the next run finds their
parents done and decides them then. A crash between a parent and its child resumes at the
child: the parent is done (skipped) or recorded (polled), never submitted again.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ..core.capabilities import CAPABILITIES
from ..core.errors import DependencyFailed, StateError
from ..core.job import Job
from ..core.results import ItemStatus, ResultLine
from ..state.checkpoint import Checkpoint
from ..state.resume import read_line

__all__ = ["Chain", "follow"]


def follow(child: Job, parent: ResultLine) -> Job | DependencyFailed:
    """What `child` becomes once its parent's line is known."""
    if parent.status is not ItemStatus.SUCCESS:
        code = parent.error_code or "FAILED"
        return DependencyFailed(None, f"not submitted: analysis '{parent.analysis}' of item {child.id} failed "
                                      f"({code}); fix it, then run again with --retry-failed", attempts=0)
    if CAPABILITIES[child.capability].chunks_from == parent.capability and child.chunks is None:
        if not isinstance(parent.data, list):
            return DependencyFailed(None, f"not submitted: analysis '{parent.analysis}' of item {child.id} "
                                          f"returned no chunks to pass on", attempts=0)
        return dataclasses.replace(child, chunks=parent.data)
    return child


class Chain:
    """The children waiting for their parents' lines, and the ones ready to go on."""

    def __init__(self, checkpoint: Checkpoint, results: Path) -> None:
        self._ckpt = checkpoint
        self._results = results
        self._waiting: dict[str, list[Job]] = {}  # parent key -> children
        self._send, self._ready = anyio.create_memory_object_stream[tuple[Job, ResultLine]](math.inf)
        self._reading = True

    @property
    def ready(self) -> MemoryObjectReceiveStream[tuple[Job, ResultLine]]:
        """(child, parent line) pairs whose parent ended during this session; ends once the
        reader is done and no child waits any more (`reader_done`)."""
        return self._ready

    @property
    def waiting(self) -> int:
        return sum(len(children) for children in self._waiting.values())

    def parent_line(self, child: Job) -> ResultLine | None:
        """The parent's line if it is already written, else None and the child waits for it."""
        key = child.after_key
        assert key is not None
        done, at = self._ckpt.done_line(key)
        if not done:
            self._waiting.setdefault(key, []).append(child)
            return None
        if at is None:
            raise StateError(f"the result line of {key.replace(chr(31), ' / ')} is done but its place in "
                             f"{self._results} is not recorded: run the same command again to index it")
        return read_line(self._results, at)

    def parent_written(self, line: ResultLine) -> None:
        """`line` is durable (written and marked done): the children waiting for it go on."""
        if not self._waiting:
            return
        children = self._waiting.pop(line.key, None)
        try:
            for child in children or ():
                self._send.send_nowait((child, line))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the run is stopping: the next run decides these children
        self._maybe_close()

    def reader_done(self) -> None:
        self._reading = False
        self._maybe_close()

    def close(self) -> None:
        """Both ends (the reader closes the receiving end itself when it runs)."""
        self._send.close()
        self._ready.close()

    def _maybe_close(self) -> None:
        if not self._reading and not self._waiting:
            self._send.close()

