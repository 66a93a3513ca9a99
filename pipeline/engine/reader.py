"""The read stage: the manifest, streamed record by record, becomes work for the other stages.

Each (item, analysis) read goes one way (counted by route for -v):

- done in an earlier session: skipped (counted);
- a task an earlier session recorded: its handle, under an in-flight token, straight to the
  capability's poller (it is polled, never submitted again);
- `after` another analysis: to the chain; once the parent's line is durable (at once, if it is
  already) the child goes on as a job, or, if the parent failed, ends here FAILED with
  `DependencyFailed` (an ending without a token: nothing was sent);
- otherwise: to its capability's job stream, for the submitters.

A bad line goes to the rejects file with its line number. When the manifest is read, the reader
goes on taking chained analyses from the chain's `ready` stream until no child waits; then it
closes its streams, which is how the submitters and pollers learn it is done. A stop cancels it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream

from ..core.capabilities import MAX_BODY_BYTES
from ..core.job import Job
from ..core.results import ResultLine
from ..manifest.reader import Rejected, Skipped, read_manifest
from ..observe.report import RunStats
from ..state.resume import ResumeState
from ..state.shards import Shard
from .chaining import Chain, follow
from .decisions import ResumeRoute, route_resumed
from .inflight import InFlight
from .spend import SpendLedger
from .stopping import Stopping
from .streams import hand_over, put
from .work import Ending, TaskHandle

__all__ = ["LOG_FIRST", "READER_YIELD_EVERY", "Reader", "ReaderStreams"]

log = logging.getLogger("pipeline.run")

#: Rejected lines logged one by one before the log only counts them.
LOG_FIRST = 20
#: Items the reader handles between two yields to the loop (a resume may skip many at once).
READER_YIELD_EVERY = 512


@dataclass
class ReaderStreams:
    """Where the reader sends work: jobs and recorded tasks by capability, and endings."""

    jobs: dict[str, MemoryObjectSendStream[Job]]
    handles: dict[str, MemoryObjectSendStream[TaskHandle]]
    endings: MemoryObjectSendStream[Ending]

    def close(self) -> None:
        for jobs in self.jobs.values():
            jobs.close()
        for handles in self.handles.values():
            handles.close()
        self.endings.close()


class Reader:
    """Streams the manifest into the other stages' streams (see the module docstring)."""

    def __init__(self, manifest: str, state: ResumeState, rejects: IO[str], *, stats: RunStats, stops: Stopping,
                 inflight: InFlight, chain: Chain, ledger: SpendLedger, clock: Callable[[], float],
                 shard: Shard | None = None, uploads: bool = False, analyses: tuple[str, ...] | None = None,
                 outputs: Mapping[str, str] | None = None) -> None:
        self._manifest = manifest
        self._state = state
        self._rejects = rejects
        self._stats = stats
        self._stops = stops
        self._inflight = inflight  # a recorded task is in flight from the moment it is found
        self._chain = chain
        self._ledger = ledger  # a recorded task's reservation is settled by this session
        self._clock = clock  # the pollers' clock, for a recorded task's start
        self._shard = shard
        self._uploads = uploads  # local files of any size are accepted: they go through OSS
        self._analyses = analyses  # --analyses: for items that name none
        self._outputs = outputs  # config `outputs:` templates
        self.rejected = 0
        self.complete = False  # read to the end (not stopped part-way)
        self.any_items = False  # a valid item seen, whichever shard owns it: an empty catalog is not a success
        #: What became of the (item, analysis) units read, by route (for -v).
        self.routed: Counter[str] = Counter()
        #: Units of this manifest the checkpoint knew at the start (done, or a task recorded):
        #: after `--append`, the ones an earlier manifest of the run holds too.
        self.known = 0

    @property
    def items(self) -> int:
        """Valid (item, analysis) units seen this session, done ones included."""
        return self._stats.units_read

    async def run(self, out: ReaderStreams) -> None:
        """Read the manifest, then go on with chained analyses as their parents end."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._release, out)
                await self._read(out)
                self._chain.reader_done()
        finally:  # closing them is how the submitters, pollers and finisher learn the reader is done
            out.close()

    async def _release(self, out: ReaderStreams) -> None:
        """Chained analyses whose parent ended in this session."""
        async with self._chain.ready as ready:
            async for child, parent in ready:
                if self._stops.taking:
                    await self._go_on(child, parent, out)

    async def _go_on(self, child: Job, parent: ResultLine, out: ReaderStreams) -> None:
        """Queue `child` now that its parent ended, or end it FAILED (DependencyFailed) unsent."""
        step = follow(child, parent)
        if isinstance(step, Job):
            self._stats.caps[step.capability].queued += 1
            await put(out.jobs[step.capability], step)
            return
        await hand_over(out.endings, Ending(child, None, step, attempts=0))

    async def _read(self, out: ReaderStreams) -> None:
        state, stats = self._state, self._stats
        items = read_manifest(self._manifest, max_body_bytes=MAX_BODY_BYTES, skip=state.done.__contains__,
                              expected_items=len(state.done) + len(state.pending), uploads=self._uploads,
                              analyses=self._analyses, outputs=self._outputs)
        last_line = -1
        for seen, item in enumerate(items, 1):
            if not self._stops.taking:
                return
            if seen % READER_YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()
            self.any_items = self.any_items or not isinstance(item, Rejected)
            if not self._mine(item):
                self.routed["left to other shards"] += not isinstance(item, Rejected)
                continue
            if item.line != last_line:  # an item's analyses come one after another, on its line
                last_line = item.line
                stats.records_read += 1
            if not isinstance(item, Rejected):
                stats.units_read += 1
            if isinstance(item, Skipped):  # done in an earlier session
                self.known += 1
                self.routed["done already"] += 1
                if item.capability is not None:
                    stats.caps[item.capability].skipped += 1
                continue
            if isinstance(item, Rejected):
                self._reject(item)
                continue
            await self._route(item, out)
        self.complete = stats.read_complete = True
        if self.rejected > LOG_FIRST:
            log.warning("%d manifest lines rejected in all; every one is in %s", self.rejected,
                        self._rejects.name)

    async def _route(self, job: Job, out: ReaderStreams) -> None:
        """Send a valid (item, analysis) of this shard where it goes (see the module docstring)."""
        state, stats = self._state, self._stats
        if job.key in state.done:  # one analysis of an item whose others are not all done
            self.known += 1
            self.routed["done already"] += 1
            stats.caps[job.capability].skipped += 1
            return
        known = state.pending.pop(job.key, None)
        self.known += known is not None
        if known is not None and route_resumed(known) is ResumeRoute.POLL:
            assert known.task_id is not None
            self.routed["recorded tasks polled"] += 1
            token = await self._inflight.take(job.capability)
            self._ledger.adopt(job)
            await put(out.handles[job.capability], TaskHandle.recorded(
                job, known.task_id, known.submitted_at, token=token, attempts=known.attempts,
                resubmits=known.resubmits, wall_now=time.time(), clock_now=self._clock()))
            return
        if job.after is not None:
            self.routed["chained to their parent"] += 1
            parent = self._chain.parent_line(job)
            if parent is not None:  # ended already: in an earlier session, or just now
                await self._go_on(job, parent, out)
            return  # else it waits: `_release` takes it on when the parent's line is durable
        self.routed["queued to submit"] += 1
        stats.caps[job.capability].queued += 1
        await put(out.jobs[job.capability], job)

    def _mine(self, item: Job | Rejected | Skipped) -> bool:
        """With --shard, whether this shard owns the item (a line without an id: by line number)."""
        if self._shard is None:
            return True
        if isinstance(item, Rejected):
            return self._shard.owns(item.id) if item.id else self._shard.owns_line(item.line)
        return self._shard.owns(item.id)

    def _reject(self, item: Rejected) -> None:
        self.rejected += 1
        self._stats.rejected += 1
        self._rejects.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
        if self.rejected <= LOG_FIRST:
            log.warning("manifest line %d rejected: %s", item.line, item.reason)
        elif self.rejected == LOG_FIRST + 1:
            log.warning("more manifest lines rejected; counting them, see the rejects file")
