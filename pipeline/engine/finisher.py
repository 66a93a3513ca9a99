"""The finish stage: the one owner of an item's ending.

Every stage that sees a unit of work end hands the finisher an `Ending` on one stream: the
reader (a chained analysis whose parent failed: `DependencyFailed`, never sent), the submitters
(a synchronous answer, a failed create, work a stop dropped before anything was accepted) and
the pollers (a task's final answer, its failure, its deadline passed). For each, the finisher
builds the item's one result line (none for abandoned work), hands it to the sink, then gives
back the unit's in-flight token: `Finisher.end` is the only place a token is released.

It ends when every sender has closed its end of the stream (the work stages are done, however
they ended), after handing on what they sent; then it closes the line stream, which ends the
sink. It runs beside the sink, outside the work stages' cancel scope: a stop that cancels them
at once does not lose a line the service was already paid for.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..core.capabilities import CAPABILITIES
from ..core.fingerprint import source_of
from ..core.job import Job
from ..core.results import ItemStatus, ResultLine
from ..service.responses import ApiResponse
from ..state.checkpoint import Checkpoint
from .inflight import InFlight
from .streams import items_of, put
from .work import Ending

__all__ = ["Finisher", "line_of"]


def line_of(ending: Ending, *, finished_at: float, source_oss: str | None) -> ResultLine:
    """The result line of an ending that has one (not abandoned): SUCCESS with the service's
    parsed answer and usage, or FAILED with the error."""
    job, outcome = ending.job, ending.outcome
    if outcome is None:
        raise ValueError(f"an abandoned ending has no line: {job.key!r}")
    ok = isinstance(outcome, ApiResponse)
    return ResultLine.finished(
        id=job.id, capability=job.capability, service_id=job.service_id,
        status=ItemStatus.SUCCESS if ok else ItemStatus.FAILED, task_id=ending.task_id,
        data=CAPABILITIES[job.capability].parse_result(outcome.result) if isinstance(outcome, ApiResponse) else None,
        usage=outcome.usage if isinstance(outcome, ApiResponse) else None,
        error=None if isinstance(outcome, ApiResponse) else outcome.to_dict(),
        attempts=ending.attempts, polls=ending.polls, submitted_at=ending.submitted_at, finished_at=finished_at,
        meta=job.meta, source_oss=source_oss, analysis=job.analysis, source=source_of(job),
        fingerprint=job.fingerprint)


class Finisher:
    """Endings in, result lines out (see the module docstring)."""

    def __init__(self, *, inflight: InFlight, checkpoint: Checkpoint,
                 clock: Callable[[], float] = time.time) -> None:
        self._inflight = inflight
        self._ckpt = checkpoint  # where an item uploaded in an earlier session went
        self._clock = clock  # wall clock: a line's finished_at

    async def run(self, endings: MemoryObjectReceiveStream[Ending], lines: MemoryObjectSendStream[ResultLine]) -> None:
        """Finish every ending sent until all senders close, then close `lines`."""
        async with endings, lines:
            async for ending in items_of(endings):
                await self.end(ending, lines)

    async def end(self, ending: Ending, lines: MemoryObjectSendStream[ResultLine]) -> None:
        """Hand `ending`'s line to the sink, then give back its token: the one place tokens are released."""
        if not ending.abandoned:
            await put(lines, line_of(ending, finished_at=self._clock(), source_oss=self._source_oss(ending.job)))
        if ending.token is not None:
            self._inflight.release(ending.token)

    def _source_oss(self, job: Job) -> str | None:
        if job.source_oss is not None or job.source_kind != "path":
            return job.source_oss
        known = self._ckpt.uploaded(job.id)  # a resumed task of an item uploaded in an earlier session
        return f"oss://{known[0]}/{known[1]}" if known else None
