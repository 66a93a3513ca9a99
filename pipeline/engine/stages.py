"""The working stages of a run: the reader, the submitters, and how an item ends.

Stages hand work on through bounded memory streams (reader -> jobs per capability ->
submitters -> task handles per capability -> pollers; every stage -> result lines -> sink);
closing a send side is how a stage says it is finished. `Control` is the one piece of shared
state: the stop flags, the in-flight slots, and the submits in progress (for the drain on stop).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..core.capabilities import CAPABILITIES, MAX_BODY_BYTES
from ..core.errors import BadResponse, FatalError, ServiceError, Stopped
from ..core.job import Job
from ..core.results import ItemStatus, ResultLine
from ..manifest.reader import Rejected, Skipped, read_manifest
from ..observe.report import RunStats
from ..service.bodies import request_body
from ..service.client import ServiceClient
from ..service.responses import ApiResponse
from ..state.checkpoint import Checkpoint
from ..state.resume import ResumeState
from ..state.shards import Shard
from ..upload.stage import Uploads
from .chaining import Chain, follow
from .decisions import ResumeRoute, route_resumed
from .poller import TaskHandle
from .streams import items_of, put

__all__ = ["Control", "Reader", "Submitter"]

log = logging.getLogger("pipeline.run")
T = TypeVar("T")

#: Rejected lines and lost tasks logged one by one before the log only counts them.
LOG_FIRST = 20
#: Items the reader handles between two yields to the loop (a resume may skip many at once).
READER_YIELD_EVERY = 512


class Control:
    """Shared run state: stop flags, per-capability in-flight slots, submits in progress."""

    def __init__(self, max_in_flight: int, stats: RunStats) -> None:
        self.stats = stats
        self.taking = True  # False: take no new items (any stop)
        self.interrupted = False  # True: stop submitting at once (not a draining stop)
        self._slots = {name: anyio.Semaphore(max_in_flight) for name in CAPABILITIES}
        self._waiting: set[anyio.CancelScope] = set()  # submits waiting for a slot or a backoff
        self.submitting = 0  # submits between their start and their answer
        self.idle = anyio.Event()  # set whenever `submitting` drops to 0

    async def acquire_slot(self, capability: str) -> None:
        await self._slots[capability].acquire()
        self.stats.caps[capability].in_flight += 1

    def release_slot(self, capability: str) -> None:
        self._slots[capability].release()
        self.stats.caps[capability].in_flight -= 1

    async def interruptible(self, wait: Callable[[], Awaitable[T]]) -> T:
        """Await `wait` (a pacer slot, a backoff sleep) unless the run stops taking items:
        then raise `Stopped`. Nothing of this request has reached the service yet."""
        if not self.taking:
            raise Stopped("stopping")
        with anyio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                result = await wait()
            finally:
                self._waiting.discard(scope)
        if scope.cancelled_caught or not self.taking:
            raise Stopped("stopping")
        return result

    def stop_taking(self, *, interrupt: bool) -> None:
        self.taking = False
        self.interrupted = self.interrupted or interrupt
        for scope in list(self._waiting):
            scope.cancel()

    def submit_started(self) -> None:
        self.submitting += 1

    def submit_ended(self) -> None:
        self.submitting -= 1
        if self.submitting == 0:
            self.idle.set()
            self.idle = anyio.Event()


class Submitter:
    """Submits jobs and turns every way an item can end into its one result line."""

    def __init__(self, *, control: Control, client: ServiceClient, checkpoint: Checkpoint,
                 lines: MemoryObjectSendStream[ResultLine], clock: Callable[[], float],
                 reserve: Callable[[Job], Awaitable[bool]], on_fatal: Callable[[FatalError], None],
                 on_cap_reached: Callable[[Job], None], uploads: Uploads | None = None) -> None:
        self._control = control
        self._client = client
        self._ckpt = checkpoint
        self._lines = lines
        self._clock = clock  # the pollers' clock, for a handle's start
        self._reserve = reserve  # the spend ledger's: may wait for room under a cap (Stopped by a stop)
        self._on_fatal = on_fatal
        self._on_cap_reached = on_cap_reached
        self._uploads = uploads  # the upload stage: local files too big to inline go to OSS first
        self._lost_logged = 0

    async def work(self, capability: str, jobs: MemoryObjectReceiveStream[Job],
                   handles: MemoryObjectSendStream[TaskHandle]) -> None:
        """One submit worker of `capability`: until its job stream ends or the run stops."""
        control = self._control
        async with jobs, handles:
            async for job in items_of(jobs):
                control.stats.caps[capability].queued -= 1
                if not control.taking:
                    continue  # drain the stream so the reader is never stuck on a full one
                await control.acquire_slot(capability)
                handle = await self.submit(job)
                if handle is not None and not control.interrupted:
                    await put(handles, handle)

    async def submit(self, job: Job, resubmits: int = 0) -> TaskHandle | None:
        """Submit `job`; returns the handle to poll for an async task, None otherwise (the item
        was finished here, or the run is stopping and the item stays unsubmitted)."""
        cap = CAPABILITIES[job.capability]
        if self._uploads is not None and self._uploads.wanted(job):
            try:
                job = await self._uploads.prepare(job)
            except FatalError as exc:  # OSS refused the key pair, or is down: every upload would fail alike
                self._control.release_slot(job.capability)
                self._on_fatal(exc)
                return None
            except ServiceError as err:  # the file (FileError), or OSS after every retry
                await self.finish(job, ItemStatus.FAILED, error=err, attempts=err.attempts)
                return None
        try:
            reserved = await self._reserve(job)
        except Stopped:  # the run stopped while it waited for room under the cap
            reserved = None
        if not reserved:
            self._control.release_slot(job.capability)
            if reserved is False:
                self._on_cap_reached(job)
            return None
        submitted_at = time.time()
        self._control.submit_started()
        try:
            body = await request_body(cap, job)
            response = await self._client.submit(cap, job.service_id, body)
        except Stopped:  # its reservation is released when the session ends (a create that may have
            # landed before the stop is counted as a possible double billing, as after a kill -9)
            self._control.release_slot(job.capability)
            return None
        except FatalError as exc:
            self._control.release_slot(job.capability)
            self._on_fatal(exc)
            return None
        except ServiceError as err:
            await self.finish(job, ItemStatus.FAILED, error=err, attempts=err.attempts, submitted_at=submitted_at)
            return None
        finally:
            self._control.submit_ended()
        self._control.stats.caps[job.capability].submits += 1
        if not cap.is_async:
            await self.finish(job, ItemStatus.SUCCESS, response=response, attempts=response.attempts,
                              submitted_at=submitted_at)
            return None
        task_id = response.result.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            await self.finish(job, ItemStatus.FAILED, attempts=response.attempts, submitted_at=submitted_at,
                              error=BadResponse("BadResponse", "create response has no task_id",
                                                http_status=response.http_status))
            return None
        # Durable before the poller sees it: a crash from here on polls, never resubmits.
        submitted_at = self._ckpt.record_submitted(job.key, job.capability, job.service_id, task_id,
                                                   attempts=response.attempts, resubmits=resubmits)
        return self.handle(job, task_id, submitted_at, response.attempts, resubmits)

    def handle(self, job: Job, task_id: str, submitted_at: float | None, attempts: int,
               resubmits: int) -> TaskHandle:
        """A handle whose clock start reflects how long ago the task was submitted."""
        wall_now = time.time()
        age = max(0.0, wall_now - submitted_at) if submitted_at else 0.0
        return TaskHandle(job, task_id, submitted_at or wall_now, self._clock() - age, attempts, resubmits)

    async def on_lost(self, handle: TaskHandle, error: ServiceError) -> TaskHandle | None:
        """The service no longer knows the task (expired, or the service restarted): submit once more."""
        if not self._control.taking:
            return None  # stays recorded as submitted; the next run handles it
        self._lost_logged += 1
        if self._lost_logged <= LOG_FIRST:
            log.info("task %s of %s is unknown to the service; submitting it once more", handle.task_id,
                     handle.job.id)
        elif self._lost_logged == LOG_FIRST + 1:
            log.info("more tasks unknown to the service are being submitted again (counted in the summary)")
        return await self.submit(handle.job, resubmits=handle.resubmits + 1)

    async def task_finished(self, handle: TaskHandle, response: ApiResponse | None,
                            error: ServiceError | None) -> None:
        status = ItemStatus.SUCCESS if response is not None and error is None else ItemStatus.FAILED
        await self.finish(handle.job, status, response=response, error=error, task_id=handle.task_id,
                          attempts=handle.attempts, polls=handle.polls, submitted_at=handle.submitted_at)

    async def finish(self, job: Job, status: ItemStatus, *, response: ApiResponse | None = None,
                     error: ServiceError | None = None, task_id: str | None = None, attempts: int = 1,
                     polls: int = 0, submitted_at: float | None = None, holds_slot: bool = True) -> None:
        """Hand the item's one line to the sink and free its in-flight slot (`holds_slot`
        False: it never took one, e.g. a chained analysis written FAILED without a submission)."""
        cap = CAPABILITIES[job.capability]
        line = ResultLine.finished(
            id=job.id, capability=job.capability, service_id=job.service_id, status=status, task_id=task_id,
            data=cap.parse_result(response.result) if response is not None and status is ItemStatus.SUCCESS
            else None,
            usage=response.usage if response is not None else None,
            error=error.to_dict() if error is not None else None, attempts=attempts, polls=polls,
            submitted_at=submitted_at, finished_at=time.time(), meta=job.meta, source_oss=self._source_oss(job),
            analysis=job.analysis)
        # Shielded: a line the service was paid for must reach the sink even while the run stops.
        with anyio.CancelScope(shield=True):
            await self._lines.send(line)
        if holds_slot:
            self._control.release_slot(job.capability)


    def _source_oss(self, job: Job) -> str | None:
        if job.source_oss is not None or job.source_kind != "path":
            return job.source_oss
        known = self._ckpt.uploaded(job.id)  # a resumed task of an item uploaded in an earlier session
        return f"oss://{known[0]}/{known[1]}" if known else None


class Reader:
    """Streams the manifest into the capabilities' job streams, skipping done items and
    sending items whose task the checkpoint recorded straight to their poller."""

    def __init__(self, manifest: str, state: ResumeState, control: Control, submitter: Submitter,
                 rejects: IO[str], *, chain: Chain, shard: Shard | None = None, uploads: bool = False,
                 analyses: tuple[str, ...] | None = None, outputs: Mapping[str, str] | None = None,
                 adopt: Callable[[Job], None] | None = None) -> None:
        self._manifest = manifest
        self._adopt = adopt  # the spend ledger's: a recorded task's reservation is settled by this session
        self._chain = chain
        self._analyses = analyses  # --analyses: for items that name none
        self._outputs = outputs  # config `outputs:` templates
        self._shard = shard
        self._uploads = uploads  # local files of any size are accepted: they go through OSS
        self._state = state
        self._control = control
        self._submitter = submitter
        self._rejects = rejects
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
        return self._control.stats.units_read

    async def run(self, jobs: dict[str, MemoryObjectSendStream[Job]],
                  handles: dict[str, MemoryObjectSendStream[TaskHandle]]) -> None:
        """Read the manifest, then go on with chained analyses as their parents end."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._release, jobs)
                await self._read(jobs, handles)
                self._chain.reader_done()
        finally:  # closing them is how the submitters and pollers learn the reader is done
            for job_stream in jobs.values():
                job_stream.close()
            for handle_stream in handles.values():
                handle_stream.close()

    async def _release(self, jobs: dict[str, MemoryObjectSendStream[Job]]) -> None:
        """Chained analyses whose parent ended in this session."""
        async with self._chain.ready as ready:
            async for child, parent in ready:
                if self._control.taking:
                    await self._go_on(child, parent, jobs)

    async def _go_on(self, child: Job, parent: ResultLine, jobs: dict[str, MemoryObjectSendStream[Job]]) -> None:
        """Queue `child` now that its parent ended, or write it FAILED (DependencyFailed) unsent."""
        step = follow(child, parent)
        if isinstance(step, Job):
            self._control.stats.caps[step.capability].queued += 1
            await put(jobs[step.capability], step)
            return
        await self._submitter.finish(child, ItemStatus.FAILED, error=step, attempts=0, holds_slot=False)

    async def _read(self, jobs: dict[str, MemoryObjectSendStream[Job]],
                    handles: dict[str, MemoryObjectSendStream[TaskHandle]]) -> None:
        state, stats = self._state, self._control.stats
        items = read_manifest(self._manifest, max_body_bytes=MAX_BODY_BYTES, skip=state.done.__contains__,
                              expected_items=len(state.done) + len(state.pending), uploads=self._uploads,
                              analyses=self._analyses, outputs=self._outputs)
        last_line = -1
        for seen, item in enumerate(items, 1):
            if not self._control.taking:
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
            key = item.key
            if key in state.done:  # one analysis of an item whose others are not all done
                self.known += 1
                self.routed["done already"] += 1
                stats.caps[item.capability].skipped += 1
                continue
            known = state.pending.pop(key, None)
            self.known += known is not None
            if known is not None and route_resumed(known) is ResumeRoute.POLL:
                assert known.task_id is not None
                self.routed["recorded tasks polled"] += 1
                await self._control.acquire_slot(item.capability)
                if self._adopt is not None:
                    self._adopt(item)
                await put(handles[item.capability], self._submitter.handle(
                    item, known.task_id, known.submitted_at, known.attempts, known.resubmits))
                continue
            if item.after is not None:
                self.routed["chained to their parent"] += 1
                parent = self._chain.parent_line(item)
                if parent is not None:  # ended already: in an earlier session, or just now
                    await self._go_on(item, parent, jobs)
                continue  # else it waits: `_release` takes it on when the parent's line is written
            self.routed["queued to submit"] += 1
            stats.caps[item.capability].queued += 1
            await put(jobs[item.capability], item)
        self.complete = stats.read_complete = True
        if self.rejected > LOG_FIRST:
            log.warning("%d manifest lines rejected in all; every one is in %s", self.rejected,
                        self._rejects.name)

    def _mine(self, item: Job | Rejected | Skipped) -> bool:
        """With --shard, whether this shard owns the item (a line without an id: by line number)."""
        if self._shard is None:
            return True
        if isinstance(item, Rejected):
            return self._shard.owns(item.id) if item.id else self._shard.owns_line(item.line)
        return self._shard.owns(item.id)

    def _reject(self, item: Rejected) -> None:
        self.rejected += 1
        self._control.stats.rejected += 1
        self._rejects.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
        if self.rejected <= LOG_FIRST:
            log.warning("manifest line %d rejected: %s", item.line, item.reason)
        elif self.rejected == LOG_FIRST + 1:
            log.warning("more manifest lines rejected; counting them, see the rejects file")
