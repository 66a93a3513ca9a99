"""Concurrent status polling of async tasks: a jittered schedule, and spare slots spent.

One `Poller` per capability keeps a heap of tasks ordered by when each is next due. Tasks
arrive through a memory stream (from the submitters and, on resume, the reader); when every
sender has closed its end and the last task is finished, `run()` returns. Its loop waits for
the earliest due time and fires the status request as a child task of its own task group, so
a slow response never holds up the next poll. Each request passes the group's pacer through
the client's throttle (the poll lane). A task's end (SUCCESS, FAILED, its deadline passed) goes
to the finisher as an `Ending`; a task the service no longer knows is submitted once more
through the run's `Submission` (see there why that is a call, not a stream back upstream).

Each task has a schedule: its first poll `first_delay` after its submit, then geometric
growth up to `max_delay` (`backoff.poll_delay`), with jitter. While submits wait for the budget,
that schedule is all there is (and the pacer's poll lane, a quarter of the slots, makes polls
late enough that a task costs about two requests whatever the schedule).

Work-conserving polling (`poll_chooser`): a poll costs a slot only when a submit waits for it.
When the group's pacer reports a spare slot (nothing waits for its budget), a second loop
spends it on the oldest-overdue task, never polling one task more often than `spare_floor`;
while anything waits, only the per-task schedule above polls (today's economy).

The loop's event, timer, sleeps and slot count are asyncio's own (`core.aio`): it turns
thousands of times a second when tasks are short.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..core import aio
from ..core.backoff import PollPolicy, RetryPolicy, poll_delay, retry_delay
from ..core.capabilities import Capability
from ..core.errors import FatalError, RateLimited, ServiceError
from ..service.responses import ApiResponse
from .decisions import PollJudgement, PollVerdict, judge_poll, next_poll_at, poll_timeout
from .poll_chooser import SpareSlots, plan_spare
from .streams import hand_over, items_of
from .work import Ending, TaskHandle

__all__ = ["Poller", "Resubmits", "StatusChecks"]

#: Polls are never retried inside the client: the poller reschedules them instead, so a 429
#: or 5xx on a poll delays that poll and never fails the item (a 429 not even at the poll
#: deadline: the deadline judges the task's own answers, and a 429 is none).
SINGLE_SHOT = RetryPolicy(max_attempts=1, max_rate_limited=1)
#: Status requests of one capability out at once.
MAX_CONCURRENT_POLLS = 64
#: While the budget is busy, the spare-slot loop looks again this many times per floor (or
#: once per slot, if slots are further apart): a spare slot is found within a tenth of the floor.
SPARE_RECHECKS = 10
#: ... but never more often than this (real seconds): a client with millisecond poll delays
#: (a benchmark against an emulator whose tasks finish at once) must not spin the loop.
SPARE_MIN_SLEEP = 0.002
#: The shortest delay between two polls of a task, as a fraction of `PollPolicy.first_delay`.
FLOOR_FRACTION = 0.2


class StatusChecks(Protocol):
    """What a poller needs of the service client (`ServiceClient` provides it)."""

    async def get_task_status(self, capability: Capability, service_id: str, task_id: str, *,
                              retry: RetryPolicy | None = None) -> ApiResponse: ...


class Resubmits(Protocol):
    """Submits a lost task once more (`submission.Submission` provides it): the new task's
    handle, its ending, or None when the run stops (the task is left to the next run)."""

    async def again(self, handle: TaskHandle) -> TaskHandle | Ending | None: ...


@dataclass(order=True)
class _Due:
    when: float
    seq: int
    handle: TaskHandle = field(compare=False)


class Poller:
    """Polls one capability's tasks until each is SUCCESS, FAILED, lost or past its deadline.

    A `FatalError` from any poll ends `run()` with that error (its tasks are left to the next
    run). With `spare` (the group's spare-slot signal), slots nobody waits for are spent on polls
    (see the module docstring).
    """

    def __init__(
        self,
        capability: Capability,
        client: StatusChecks,
        policy: PollPolicy,
        *,
        resubmit: Resubmits,
        pause: Callable[[float], None],
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] = random.random,
        max_concurrent: int = MAX_CONCURRENT_POLLS,
        spare: SpareSlots | None = None,
        spare_floor: float | None = None,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        self.capability = capability
        self._client = client  # its throttle paces polls in the group's poll lane
        self._policy = policy
        self._resubmit = resubmit
        self._pause = pause  # pause the group after a 429
        self._clock = clock or aio.loop_clock()
        self._rand = rand
        self._slots = aio.Semaphore(max_concurrent)
        self._heap: list[_Due] = []  # due times; an entry whose seq is not its handle's `due` is stale
        self._waiting: dict[int, TaskHandle] = {}  # id -> handle: scheduled, not being polled
        self._spare = spare
        self._on_lag = on_lag  # how long a task's end may have gone unnoticed, for the report
        # Seconds between two spare polls of one task, at least: by default a fifth of the first
        # delay (1 s with the default 5 s; the policy arrives time-scaled, so the floor is too).
        self._spare_floor = spare_floor if spare_floor is not None else policy.first_delay * FLOOR_FRACTION
        self._seq = itertools.count()
        self._wake = aio.Event()  # set by add() and by children
        self._active = 0  # status requests out now
        self._intake_open = True  # some sender may still hand over tasks
        self._fatal: FatalError | None = None
        self._endings: MemoryObjectSendStream[Ending] | None = None  # while run() runs
        self.polls = 0
        self.spare_polls = 0  # polls made in spare slots (included in `polls`)

    def __repr__(self) -> str:
        return (f"Poller({self.capability.name!r}, waiting={len(self._waiting)}, "
                f"active={self._active}, polls={self.polls}, spare_polls={self.spare_polls})")

    @property
    def tasks(self) -> int:
        """Tasks being carried: waiting for their next poll or being polled."""
        return len(self._waiting) + self._active

    def add(self, handle: TaskHandle) -> None:
        """Start polling `handle`: its first scheduled poll is `first_delay` after its submit."""
        if handle.deadline == math.inf:
            handle.deadline = handle.started + self._policy.timeout
        self._schedule(handle, handle.started + poll_delay(1, self._policy, self._rand))

    async def run(self, handles: MemoryObjectReceiveStream[TaskHandle],
                  endings: MemoryObjectSendStream[Ending]) -> None:
        """Poll until `handles` is closed by every sender and the last task is finished; each
        task's end goes to `endings`, closed on return."""
        self._endings = endings
        async with endings, anyio.create_task_group() as tg:
            tg.start_soon(self._intake, handles)
            if self._spare is not None:
                tg.start_soon(self._spend_spare, self._spare, tg)
            await self._dispatch(tg)
        if self._fatal is not None:
            raise self._fatal

    async def _intake(self, handles: MemoryObjectReceiveStream[TaskHandle]) -> None:
        async with handles:
            async for handle in items_of(handles):
                self.add(handle)
        self._intake_open = False
        self._wake.set()

    async def _dispatch(self, tg: TaskGroup) -> None:
        while True:
            self._wake.clear()  # before looking: a later add() sets it again
            while self._heap and self._heap[0].seq != self._heap[0].handle.due:
                heapq.heappop(self._heap)  # stale: the task was polled in a spare slot since
            if not self._heap:
                if not self._intake_open and self._active == 0:
                    tg.cancel_scope.cancel()  # the intake is done too
                    return
                await self._wake.wait()
                continue
            wait = self._heap[0].when - self._clock()
            if wait > 0:
                # A timer that sets the event, not a cancel scope per wait: this loop turns
                # thousands of times a second when tasks are short.
                timer = aio.call_later(wait, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
                continue
            await self._slots.acquire()
            due = heapq.heappop(self._heap)
            if due.seq != due.handle.due:  # went stale while waiting for a slot
                self._slots.release()
                continue
            self._start(due.handle, tg)

    async def _spend_spare(self, spare: SpareSlots, tg: TaskGroup) -> None:
        """Spend the group's spare slots on polls until cancelled with the dispatcher's scope."""
        floor = self._spare_floor
        recheck = max(spare.interval, floor / SPARE_RECHECKS, SPARE_MIN_SLEEP)
        while True:
            spare_at = spare.spare_at()
            now = self._clock()  # read after the pacer's: an idle pacer's "now" is not in the future
            step = plan_spare(now, spare_at, self._waiting.values(), floor=floor, recheck=recheck)
            if step.task is None or self._slots.locked():
                await aio.sleep(max(step.wake_at - now, recheck if step.task is not None else 0.0))
                continue
            await self._slots.acquire()  # free (checked above): returns without yielding
            assert isinstance(step.task, TaskHandle)
            self.spare_polls += 1
            self._start(step.task, tg)
            # The poll takes the slot once the pacer grants it; until then the pacer reports no
            # spare slot (a poll waits), so the next look is one slot later.
            await aio.sleep(max(spare.interval, SPARE_MIN_SLEEP))

    def _start(self, handle: TaskHandle, tg: TaskGroup) -> None:
        """Poll `handle` now (a slot of `_slots` is held): it leaves the waiting set meanwhile."""
        self._waiting.pop(id(handle), None)
        handle.due = -1  # its heap entry, if any, is stale from now on
        self._active += 1
        tg.start_soon(self._poll, handle, tg)

    def _schedule(self, handle: TaskHandle, when: float) -> None:
        seq = next(self._seq)
        handle.due = seq
        self._waiting[id(handle)] = handle
        heapq.heappush(self._heap, _Due(when, seq, handle))
        self._wake.set()

    async def _poll(self, handle: TaskHandle, tg: TaskGroup) -> None:
        try:
            await self._poll_once(handle)
        except FatalError as exc:
            self._fatal = exc
            tg.cancel_scope.cancel()
        finally:
            self._active -= 1
            self._slots.release()
            self._wake.set()

    async def _poll_once(self, handle: TaskHandle) -> None:
        handle.polls += 1
        self.polls += 1
        response: ApiResponse | None = None
        error: ServiceError | None = None
        try:
            response = await self._client.get_task_status(
                self.capability, handle.job.service_id, handle.task_id, retry=SINGLE_SHOT)
        except FatalError:
            raise
        except ServiceError as err:
            error = err
        pending_seen = handle.last_look if handle.pending_polls else None
        handle.last_look = self._clock()  # the floor counts from the answer: the request had arrived
        judgement = judge_poll(response, error, resubmits=handle.resubmits)
        if (self._on_lag is not None and pending_seen is not None
                and judgement.verdict in (PollVerdict.SUCCESS, PollVerdict.FAILED)):
            self._on_lag(handle.last_look - pending_seen)  # the end came somewhere in between
        await self._act(handle, judgement, response)

    async def _act(self, handle: TaskHandle, judgement: PollJudgement, response: ApiResponse | None) -> None:
        verdict = judgement.verdict
        if verdict is PollVerdict.RETRY:
            assert judgement.error is not None
            handle.errors += 1
            delay = retry_delay(handle.errors, _poll_retry_policy(self._policy), self._rand,
                                judgement.error.retry_after)
            if judgement.pause_group:
                self._pause(delay)  # the whole group would meet the same limit
            if isinstance(judgement.error, RateLimited):  # says nothing of the task: never a PollTimeout
                self._schedule(handle, self._clock() + delay)
                return
            await self._reschedule(handle, delay)
            return
        handle.errors = 0
        if verdict is PollVerdict.PENDING:
            handle.pending_polls += 1
            await self._reschedule(handle, poll_delay(handle.pending_polls + 1, self._policy, self._rand))
            return
        if verdict is PollVerdict.RESUBMIT:
            step = await self._resubmit.again(handle)
            if isinstance(step, TaskHandle):
                self.add(step)
            elif step is not None:
                await self._end(step)
            return
        if verdict is PollVerdict.SUCCESS:
            assert response is not None
            await self._end(Ending.of_task(handle, response))
            return
        assert judgement.error is not None
        await self._end(Ending.of_task(handle, judgement.error))

    async def _reschedule(self, handle: TaskHandle, delay: float) -> None:
        when = next_poll_at(self._clock(), delay, handle.deadline)
        if when is None:
            await self._end(Ending.of_task(handle, poll_timeout(handle.task_id)))
            return
        self._schedule(handle, when)

    async def _end(self, ending: Ending) -> None:
        assert self._endings is not None
        await hand_over(self._endings, ending)


def _poll_retry_policy(policy: PollPolicy) -> RetryPolicy:
    """Backoff for a failing poll: from the poll interval, doubling, capped by max_delay."""
    base = max(policy.first_delay / 5.0, 1e-3)
    return RetryPolicy(base=base, factor=2.0, max_attempts=1_000_000,
                       max_delay=max(policy.max_delay, base), retry_after_cap=max(policy.max_delay, base))
