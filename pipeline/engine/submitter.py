"""The submit stage: workers per capability take jobs from its stream, each under an in-flight
token, and pass on what became of them: an accepted async task's handle to the capability's
poller, every other ending (a synchronous answer, a failure, abandoned by a stop) to the finisher.

A worker ends when its job stream is closed (the reader is done, or stopped); closing its own
streams then is how the pollers and the finisher learn it is done. After a stop it still drains
its job stream, taking nothing, so the reader is never stuck on a full one.
"""

from __future__ import annotations

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..core.job import Job
from ..observe.report import RunStats
from .inflight import InFlight
from .stopping import Stopping
from .streams import hand_over, items_of, put
from .submission import Submission
from .work import Ending, TaskHandle

__all__ = ["Submitter"]


class Submitter:
    """The submit workers' loop (one object for all of them)."""

    def __init__(self, *, submission: Submission, inflight: InFlight, stops: Stopping, stats: RunStats) -> None:
        self._submission = submission
        self._inflight = inflight
        self._stops = stops
        self._stats = stats

    async def work(self, capability: str, jobs: MemoryObjectReceiveStream[Job],
                   handles: MemoryObjectSendStream[TaskHandle] | None,
                   endings: MemoryObjectSendStream[Ending]) -> None:
        """One submit worker of `capability` (`handles` None: a synchronous one, which has no
        tasks to poll), until its job stream ends."""
        stops, queued = self._stops, self._stats.caps[capability]
        async with jobs, endings:
            try:
                async for job in items_of(jobs):
                    queued.queued -= 1
                    if not stops.taking:
                        continue  # drain the stream so the reader is never stuck on a full one
                    token = await self._inflight.take(capability)
                    step = await self._submission.submit(job, token)
                    if isinstance(step, Ending):
                        await hand_over(endings, step)
                    elif handles is not None and not stops.interrupted:
                        await put(handles, step)
                    # else interrupted: the task is recorded, still in flight, polled by the next run
            finally:
                if handles is not None:
                    handles.close()
