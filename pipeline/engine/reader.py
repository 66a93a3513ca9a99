"""The read stage: the manifest, streamed record by record, becomes work for the other stages.

Items are read in batches (`READER_YIELD_EVERY` (item, analysis) units, whole items): each
unit's fingerprint is computed (`core.fingerprint`), the batch's keys are looked up in the
checkpoint in one query, and each is decided (`delta.decide`: new, changed, unchanged, or
unfinished work to resume), the batch's writes (keys seen, fingerprints adopted, changed keys
superseded) in one transaction. Then each unit goes one way (counted by route for -v):

- unchanged (done, same fingerprint): skipped, never sent (counted);
- a task an earlier session recorded for the same fingerprint: its handle, under an in-flight
  token, straight to the capability's poller (it is polled, never submitted again);
- `after` another analysis: to the chain; once the parent's line is durable (at once, if it is
  already current) the child goes on as a job, or, if the parent failed, ends here FAILED with
  `DependencyFailed` (an ending without a token: nothing was sent). A changed parent is
  superseded before its children are routed, so they wait for its new line;
- otherwise (new, changed, or unfinished without a task): to its capability's job stream.

A bad line goes to the rejects file with its line number. When the manifest is read, the reader
goes on taking chained analyses from the chain's `ready` stream until no child waits; then it
closes its streams, which is how the submitters and pollers learn it is done. A stop cancels it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream

from ..core.errors import FatalError
from ..core.fingerprint import source_of
from ..core.job import Job
from ..core.results import ResultLine
from ..manifest.reader import Rejected, Skipped
from ..observe.report import RunStats
from ..state.catalog import CatalogStore
from ..state.resume import ResumeState
from ..state.shards import Shard
from ..state.uploads import UploadRecord
from .chaining import Chain, follow
from .decisions import ResumeRoute, route_resumed
from .delta import Delta, Verdict, decide
from .forcing import redone
from .inflight import InFlight
from .item_source import ItemSource
from .read_cursor import ReadCursor
from .spend import SpendLedger
from .stopping import Stopping
from .streams import hand_over, put
from .touched import confirmed, fingerprinted, suspects
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

    def __init__(self, source: ItemSource, state: ResumeState, rejects: IO[str], *, stats: RunStats,
                 stops: Stopping, inflight: InFlight, chain: Chain, ledger: SpendLedger, clock: Callable[[], float],
                 catalog: CatalogStore, session: int, shard: Shard | None = None, force: bool = False,
                 force_analyses: frozenset[str] = frozenset(), cursor: ReadCursor | None = None,
                 upload_record: Callable[[str], UploadRecord | None] | None = None) -> None:
        self._source = source
        self._cursor = cursor  # where this session reads from, and how far it got (read_cursor.py)
        self._batch_ids: set[str] = set()  # item ids of the batch not committed yet
        self._catalog = catalog  # the batched lookups and writes of the decisions
        self._session = session
        self._force = force  # --force: every unit read is processed again
        self._force_analyses = force_analyses  # --force-analysis NAME: those analyses only
        self._upload_record = upload_record  # a touched file's recorded digest (`touched`)
        self._forced_from = catalog.forced_from()  # a forced run resumed: what it re-did is not forced again
        self._state = state
        self._rejects = rejects
        self._stats = stats
        self._stops = stops
        self._inflight = inflight  # a recorded task is in flight from the moment it is found
        self._chain = chain
        self._ledger = ledger  # a recorded task's reservation is settled by this session
        self._clock = clock  # the pollers' clock, for a recorded task's start
        self._shard = shard
        self.rejected = 0
        self._last_rejected: Rejected | None = None
        #: Rejected lines with no readable id (a bad JSON line): their items are unknown, so this
        #: read decides nothing vanished (`vanishing.vanish_rule`).
        self.unidentified = 0
        self._rejected_ids: list[str] = []  # ids of rejected lines not committed yet: found, kept live
        self.complete = False  # read to the end (not stopped part-way)
        self.any_items = False  # a valid item seen, whichever shard owns it: an empty catalog is not a success
        #: What became of the (item, analysis) units read, by route (for -v).
        self.routed: Counter[str] = Counter()
        #: Units of this manifest the checkpoint knew at the start (done, or a task recorded):
        #: after `--append`, the ones an earlier manifest of the run holds too.
        self.known = 0
        #: Tonight's delta: (item, analysis) units by how they compare with the checkpoint.
        self.catalog: Counter[str] = Counter()
        self._cut = False
        self.reread_units = 0  # units of open lines read again (below where this session started)

    @property
    def items(self) -> int:
        """Valid (item, analysis) units of the manifest read, done ones included (with a part
        skipped as unchanged, the units it held)."""
        return self._stats.units_read + self._carried("units")

    @property
    def skipped_units(self) -> int:
        """Units of the part skipped as unchanged and not read again: each one's line is current."""
        return max(self._carried("units") - self.reread_units, 0)

    def _carried(self, name: str) -> int:
        return self._cursor.carried.get(name, 0) if self._cursor is not None else 0

    def _unique(self, item_id: str, line: int) -> bool:
        """Whether `item_id` (at `line`) is the first item with that id in the manifest: not in
        this batch, and no key of it found earlier by this read (committed batches, of this
        session or of the part skipped); flat in memory. A line read again (an open line, below
        where this session starts) is not its own duplicate."""
        if item_id in self._batch_ids:
            return False
        self._batch_ids.add(item_id)
        read = self._cursor.read if self._cursor is not None else self._session
        first = self._cursor.first_line if self._cursor is not None else 1
        return line < first or not self._catalog.seen_by_read(item_id, read)

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
        try:
            await self._read_all(out)
        except FatalError as exc:  # OSS refusing the key pair or unreachable mid-listing: a resumable stop
            self._stops.fatal(exc)

    async def _read_all(self, out: ReaderStreams) -> None:
        stats = self._stats
        cursor = self._cursor
        self.rejected = self._carried("rejected")
        self.unidentified = self._carried("unidentified")
        self.known = self._carried("known")
        self.any_items = bool(self._carried("any"))
        items = self._source.items(tracker=cursor.tracker if cursor else None, reread=cursor.reread if cursor else (),
                                   ids=self._unique, shard=self._shard)
        last_line = -1
        batch: list[Job] = []
        async for item in items:
            if not self._stops.taking:
                return
            if isinstance(item, Skipped):  # another shard's, told before validating it
                self.any_items = True
                self.routed["left to other shards"] += item.lines
                continue
            self.any_items = self.any_items or not isinstance(item, Rejected)
            if not self._mine(item):
                self.routed["left to other shards"] += not isinstance(item, Rejected)
                continue
            if item.line != last_line:  # an item's analyses come one after another, on its line
                if len(batch) >= READER_YIELD_EVERY:  # whole items per batch: a chain is decided in one
                    await self._batch(batch, out, next_line=item.line)
                    batch = []
                last_line = item.line
                stats.records_read += not self._again(item.line)
            if isinstance(item, Rejected):
                self._reject(item)
                continue
            if self._again(item.line):
                self.reread_units += 1
            else:
                stats.units_read += 1
            batch.append(item)
            if self._source.chunk_end:  # the listing's next page may be slow: route what is here
                await self._batch(batch, out, next_line=item.line + 1)  # no cursor moves for a listing
                batch = []
        if self._source.cut_short:  # a stop ended the wait for a stream's next item: not read to its end
            return
        await self._batch(batch, out, next_line=None)
        if self._cut:  # a stop came while the last batch was routed
            return
        self.complete = stats.read_complete = True
        if self.rejected > LOG_FIRST:
            log.warning("%d manifest lines rejected in all; every one is in %s", self.rejected,
                        self._rejects.name)

    def _counts(self) -> dict[str, int]:
        """What the read found so far, the skipped part included (carried by the cursor). A last
        line still being written, rejected now, is left out: the position stays before it, and
        the session that reads it whole counts it then."""
        tracker = self._cursor.tracker if self._cursor is not None else None
        last = self._last_rejected
        tail = int(tracker is not None and last is not None and tracker.tail_line == last.line)
        return {"records": self._stats.records_read + self._carried("records") - tail, "units": self.items,
                "rejected": self.rejected - tail, "known": self.known, "any": int(self.any_items),
                "unidentified": self.unidentified - (tail and last is not None and last.id is None)}

    async def _batch(self, batch: list[Job], out: ReaderStreams, *, next_line: int | None) -> None:
        """Fingerprint, look up and decide a batch of whole items (one query, one transaction,
        with where the read got to), then route each unit; yields to the loop once per batch."""
        suspected = suspects(batch, self._upload_record) if self._upload_record is not None else {}
        # Files touched, not changed? hashed in a worker thread; the digest on record decides.
        kept = await anyio.to_thread.run_sync(confirmed, suspected) if suspected else {}
        jobs = fingerprinted(batch, kept)
        known = self._catalog.lookup([job.key for job in jobs])
        verdicts: list[Verdict] = []
        adopt, restore, supersede = [], [], []
        forced_items: set[tuple[str, str]] = set()  # (item, analysis) forced: their children re-run too
        for job in jobs:
            assert job.fingerprint is not None
            forced = (self._force or job.analysis in self._force_analyses or (
                job.after is not None and (job.id, job.after) in forced_items)) and not redone(
                known.get(job.key), self._forced_from)
            verdict = decide(known.get(job.key), job.fingerprint, forced=forced)
            if forced and verdict.delta is Delta.CHANGED:
                forced_items.add((job.id, job.analysis))
            verdicts.append(verdict)
            if verdict.adopt:
                adopt.append((job.fingerprint, source_of(job), job.key))
            if verdict.restore:
                restore.append(job.key)
            if verdict.delta is Delta.CHANGED:
                supersede.append((job.fingerprint, source_of(job), job.key))
        # Counted before routing: the commit holds the read's figures so far (an open line read
        # again was counted by the session that first read it).
        self.known += sum(verdict.delta is not Delta.NEW and not self._again(job.line)
                          for job, verdict in zip(jobs, verdicts, strict=True))
        position, open_keys = None, []
        if self._cursor is not None:
            open_keys = self._cursor.open_keys(
                [job for job, verdict in zip(jobs, verdicts, strict=True) if verdict.delta is not Delta.UNCHANGED])
            position = self._cursor.advance(next_line, self._counts(),
                                            local=any(job.source_kind == "path" for job in jobs))
        self._catalog.apply(seen=(job.key for job in jobs), adopt=adopt, restore=restore, supersede=supersede,
                            session=self._session, read=self._cursor.read if self._cursor else None,
                            cursor=position, open_keys=open_keys,
                            closed=[job.key for job, verdict in zip(jobs, verdicts, strict=True)
                                    if verdict.delta is Delta.UNCHANGED and self._again(job.line)],
                            seen_items=self._rejected_ids)
        self._batch_ids.clear()
        self._rejected_ids.clear()
        for job, verdict in zip(jobs, verdicts, strict=True):
            if not self._stops.taking:
                self._cut = True
                return
            self.catalog[verdict.counted] += 1
            await self._route(job, verdict, out)
        await anyio.lowlevel.checkpoint()

    async def _route(self, job: Job, verdict: Verdict, out: ReaderStreams) -> None:
        """Send a decided (item, analysis) of this shard where it goes (see the module docstring)."""
        state, stats = self._state, self._stats
        known = state.pending.pop(job.key, None)
        if verdict.delta is Delta.UNCHANGED:
            self.routed["unchanged (current line kept)"] += 1
            stats.caps[job.capability].skipped += 1
            return
        if verdict.delta is Delta.CHANGED:
            self.routed["changed (run again)"] += 1
        elif known is not None and route_resumed(known) is ResumeRoute.POLL:
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

    def _again(self, line: int) -> bool:
        """Whether `line` is an open line read again (counted by the session that first read it)."""
        return self._cursor is not None and line < self._cursor.first_line

    def _mine(self, item: Job | Rejected) -> bool:
        """With --shard, whether this shard owns the item (a line without an id: by line number)."""
        if self._shard is None:
            return True
        if isinstance(item, Rejected):
            return self._shard.owns(item.id) if item.id else self._shard.owns_line(item.line)
        return self._shard.owns(item.id)

    def _reject(self, item: Rejected) -> None:
        self.rejected += 1
        self._last_rejected = item
        self._stats.rejected += 1
        if item.id is not None:
            self._rejected_ids.append(item.id)  # there, only refused: not vanished
        else:
            self.unidentified += 1
        self._rejects.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
        if self.rejected <= LOG_FIRST:
            log.warning("%s rejected: %s", self._source.where(item), item.reason)
        elif self.rejected == LOG_FIRST + 1:
            log.warning("more lines rejected; counting them, see the rejects file")
