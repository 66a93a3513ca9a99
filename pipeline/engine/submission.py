"""Sending one job to the service: its upload (a local file too big for the body), its spend
reservation, the create request, and for an async task its id made durable before anyone polls
it (invariant 2: a crash from then on polls the task, never submits it again).

`Submission.submit` returns what became of the job: the `TaskHandle` to poll, or its `Ending`
(a synchronous capability's answer, a failure, or abandoned by a stop). The submitters call it
for the jobs they take; a poller calls `again` for a task the service no longer knows, which is
submitted once more under the token it holds. That resubmission is a call, not a trip back up a
stream: the streams then run one way only, so each stage still ends when its inputs close (a
stream from the pollers back to the submitters would keep each waiting for the other to close).

Stop requests go to `Stopping`: a fatal error of the upload or the create (`fatal`), and the
spend cap when no reservation fits and nothing in flight can free room.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..core.capabilities import CAPABILITIES, Capability
from ..core.errors import BadResponse, FatalError, ServiceError, Stopped
from ..core.job import Job
from ..core.outcome import Stop, StopReason
from ..observe.report import RunStats
from ..service.bodies import RequestBody, request_body
from ..service.responses import ApiResponse
from ..state.checkpoint import Accepted, Checkpoint
from .accepted import AcceptedTasks
from .spend import SpendLedger
from .stopping import Stopping
from .work import Ending, TaskHandle, Token

__all__ = ["LOG_FIRST", "Creates", "Prepares", "Submission"]

log = logging.getLogger("pipeline.run")

#: Lost tasks logged one by one before the log only counts them.
LOG_FIRST = 20


class Creates(Protocol):
    """What a submission needs of the service client (`ServiceClient` provides it)."""

    async def submit(self, capability: Capability, service_id: str,
                     body: RequestBody | Mapping[str, Any]) -> ApiResponse: ...


class Prepares(Protocol):
    """What a submission needs of the upload stage (`upload.stage.Uploads` provides it)."""

    def wanted(self, job: Job) -> bool: ...

    async def prepare(self, job: Job) -> Job: ...


class Submission:
    """Submits jobs (see the module docstring); one object shared by every submitter and poller."""

    def __init__(self, *, client: Creates, checkpoint: Checkpoint, ledger: SpendLedger, stops: Stopping,
                 stats: RunStats, clock: Callable[[], float], uploads: Prepares | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._accepted = AcceptedTasks(checkpoint)
        self._ledger = ledger  # may wait for room under a cap (ended by a stop)
        self._stops = stops
        self._stats = stats
        self._clock = clock  # the pollers' clock, for a handle's start
        self._wall = wall_clock
        self._uploads = uploads  # the upload stage: local files too big to inline go to OSS first
        self._lost_logged = 0

    async def submit(self, job: Job, token: Token | None, resubmits: int = 0) -> TaskHandle | Ending:
        """Submit `job` (its unit holds `token`): the handle to poll for an accepted async task,
        else how it ended."""
        cap = CAPABILITIES[job.capability]
        sent = job  # what the body is built from; `job` stays what the line, checkpoint and logs name
        if self._uploads is not None and self._uploads.wanted(job):
            try:
                sent = await self._uploads.prepare(job)
            except FatalError as exc:  # OSS refused the key pair, or is down: every upload would fail alike
                self._stops.fatal(exc)
                return Ending.dropped(job, token)
            except ServiceError as err:  # the file (FileError), or OSS after every retry
                return Ending(job, token, err, attempts=err.attempts)
            # The line names the item's own source (a local path, an oss:// object), never a
            # presigned URL (a credential, and different on every run); the uploaded object is kept.
            job = dataclasses.replace(job, source_oss=sent.source_oss)
        try:
            reserved = await self._ledger.reserve(job, self._stops.interruptible)
        except Stopped:  # the run stopped while it waited for room under the cap
            return Ending.dropped(job, token)
        if not reserved:
            self._stops.request(Stop(StopReason.SPEND_CAP, self._ledger.stop_detail()))
            return Ending.dropped(job, token)
        submitted_at = self._wall()
        with self._stops.on_the_wire():
            try:
                body = await request_body(cap, sent)
                response = await self._client.submit(cap, job.service_id, body)
            except Stopped:  # its reservation is released when the session ends (a create that may have
                # landed before the stop is counted as a possible double billing, as after a kill -9)
                return Ending.dropped(job, token)
            except FatalError as exc:
                self._stops.fatal(exc)
                return Ending.dropped(job, token)
            except ServiceError as err:
                return Ending(job, token, err, attempts=err.attempts, submitted_at=submitted_at)
        self._stats.caps[job.capability].submits += 1
        if not cap.is_async:
            return Ending(job, token, response, attempts=response.attempts, submitted_at=submitted_at)
        task_id = response.result.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            return Ending(job, token, BadResponse("BadResponse", "create response has no task_id",
                                                  http_status=response.http_status),
                          attempts=response.attempts, submitted_at=submitted_at)
        # Durable before the poller sees it: a crash from here on polls, never resubmits. (One
        # transaction for the ids answered in the same turn of the loop: `engine.accepted`.)
        recorded_at = await self._accepted.record(Accepted(job.key, job.capability, job.service_id, task_id,
                                                           response.attempts, resubmits, job.fingerprint))
        return TaskHandle.recorded(job, task_id, recorded_at, token=token, attempts=response.attempts,
                                   resubmits=resubmits, wall_now=self._wall(), clock_now=self._clock())

    async def again(self, handle: TaskHandle) -> TaskHandle | Ending | None:
        """The service no longer knows `handle`'s task (expired, or the service restarted): submit
        it once more, under the token it holds. None while the run stops: the task stays recorded
        as submitted, still in flight for the summary, and the next run handles it."""
        if not self._stops.taking:
            return None
        self._lost_logged += 1
        if self._lost_logged <= LOG_FIRST:
            log.info("task %s of %s is unknown to the service; submitting it once more", handle.task_id,
                     handle.job.id)
        elif self._lost_logged == LOG_FIRST + 1:
            log.info("more tasks unknown to the service are being submitted again (counted in the summary)")
        return await self.submit(handle.job, handle.token, resubmits=handle.resubmits + 1)
