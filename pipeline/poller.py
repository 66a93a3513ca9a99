"""Concurrent status polling of async tasks, with adaptive, jittered delays.

One `Poller` per capability keeps a heap of tasks ordered by when each is next due. Tasks
arrive through a memory stream (from the submitters and, on resume, the reader); when every
sender has closed its end and the last task is finished, `run()` returns. Its loop waits for
the earliest due time and fires the status request as a child task of its own task group, so
a slow response never holds up the next poll. Each request passes the group's pacer through
the client's throttle (the poll lane).

Adaptive first poll (`FirstPollTuner`): when status polls count against the QPS limit, every
needless PENDING answer costs a slot a submit could have used. The tuner tracks the `target`
quantile of the capability's task duration with a Robbins–Monro stochastic approximation in
log space — after each first poll, `delay *= exp(rate * (pending - (1 - target)))` — which
settles where a fraction `target` of the tasks are already done at their first poll.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from .backoff import PollPolicy, RetryPolicy, poll_delay, retry_delay
from .capabilities import Capability
from .client import ServiceClient
from .decisions import PollJudgement, PollVerdict, judge_poll, next_poll_at, poll_timeout
from .errors import FatalError, ServiceError
from .job import Job
from .responses import ApiResponse
from .streams import items_of

__all__ = ["FirstPollTuner", "Poller", "TaskHandle"]

#: Polls are never retried inside the client: the poller reschedules them instead, so a 429
#: or 5xx on a poll delays that poll and never fails the item.
SINGLE_SHOT = RetryPolicy(max_attempts=1, max_rate_limited=1)
#: Status requests of one capability out at once.
MAX_CONCURRENT_POLLS = 64


class FirstPollTuner:
    """Learns where to place a capability's first poll (see the module docstring)."""

    __slots__ = ("ceiling", "delay", "floor", "min_rate", "observations", "rate", "target")

    #: How far (as a fraction) a poll's age may sit from the delay and still count.
    TOLERANCE = 0.05

    def __init__(self, initial: float, *, target: float = 0.85, rate: float = 0.3,
                 min_rate: float = 0.02, floor: float = 0.0, ceiling: float = math.inf) -> None:
        self.delay = initial  # seconds from submit to the first poll
        self.target = target  # wanted share of tasks already finished at their first poll
        self.rate = rate  # initial step size in log space
        self.min_rate = min_rate  # the step shrinks to this, not below, so drift is still tracked
        self.floor = floor
        self.ceiling = ceiling
        self.observations = 0

    def observe(self, pending: bool, age: float | None = None) -> None:
        """Feed the answer to one task's first poll, made `age` seconds after its submit.

        Only informative answers move the estimate: "still pending" at an age below the
        current delay, or "done" at an age above it, says nothing about the quantile at the
        current delay.
        """
        if age is not None:
            if pending and age < self.delay * (1.0 - self.TOLERANCE):
                return
            if not pending and age > self.delay * (1.0 + self.TOLERANCE):
                return
        self.observations += 1
        # Robbins-Monro settles only with a shrinking gain: a constant one leaves the delay
        # wandering about +-25% around the quantile. Gain ~ 1/sqrt(n), floored at min_rate.
        gain = max(self.rate / math.sqrt(1.0 + self.observations / 20.0), self.min_rate)
        step = gain * ((1.0 if pending else 0.0) - (1.0 - self.target))
        self.delay = min(self.ceiling, max(self.floor, self.delay * math.exp(step)))


@dataclass
class TaskHandle:
    """An accepted async task being carried to its end."""

    job: Job
    task_id: str
    submitted_at: float  # wall clock, for the result line
    started: float  # the poller's clock, for delays and the deadline
    attempts: int = 1
    resubmits: int = 0
    polls: int = 0
    pending_polls: int = 0  # PENDING answers so far (the first one feeds the tuner)
    errors: int = 0  # retryable poll failures in a row
    deadline: float = math.inf


@dataclass(order=True)
class _Due:
    when: float
    seq: int
    handle: TaskHandle = field(compare=False)


#: `on_finished(handle, response, error)`: the final answer (SUCCESS: response; FAILED or a
#: timeout: error). `on_lost(handle)`: the service no longer knows the task; returns the
#: handle of a new submission to poll instead, or None.
FinishFn = Callable[[TaskHandle, "ApiResponse | None", "ServiceError | None"], Awaitable[None]]
LostFn = Callable[[TaskHandle, ServiceError], Awaitable["TaskHandle | None"]]


class Poller:
    """Polls one capability's tasks until each is SUCCESS, FAILED, lost or past its deadline.

    A `FatalError` from any poll ends `run()` with that error.
    """

    def __init__(
        self,
        capability: Capability,
        client: ServiceClient,
        policy: PollPolicy,
        *,
        on_finished: FinishFn,
        on_lost: LostFn,
        pause: Callable[[float], None],
        tuner: FirstPollTuner | None = None,
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] = random.random,
        max_concurrent: int = MAX_CONCURRENT_POLLS,
    ) -> None:
        self.capability = capability
        self._client = client  # its throttle paces polls in the group's poll lane
        self._policy = policy
        self._on_finished = on_finished
        self._on_lost = on_lost
        self._pause = pause  # pause the group after a 429
        self.tuner = tuner
        self._clock = clock or asyncio.get_running_loop().time
        self._rand = rand
        self._slots = asyncio.Semaphore(max_concurrent)
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()  # asyncio's own (see limits.py): set by add() and by children
        self._active = 0  # status requests out now
        self._intake_open = True  # some sender may still hand over tasks
        self._fatal: FatalError | None = None
        self.polls = 0

    def __repr__(self) -> str:
        return (f"Poller({self.capability.name!r}, waiting={len(self._heap)}, "
                f"active={self._active}, polls={self.polls})")

    @property
    def tasks(self) -> int:
        """Tasks being carried: waiting for their next poll or being polled."""
        return len(self._heap) + self._active

    def add(self, handle: TaskHandle) -> None:
        """Start polling `handle`; the first poll is placed by the tuner."""
        if handle.deadline == math.inf:
            handle.deadline = handle.started + self._policy.timeout
        expected = self.tuner.delay if self.tuner is not None else None
        self._schedule(handle, handle.started + poll_delay(1, self._policy, self._rand, expected))

    async def run(self, handles: MemoryObjectReceiveStream[TaskHandle]) -> None:
        """Poll until `handles` is closed by every sender and the last task is finished."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._intake, handles)
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
                timer = asyncio.get_running_loop().call_later(wait, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
                continue
            await self._slots.acquire()
            due = heapq.heappop(self._heap)
            self._active += 1
            tg.start_soon(self._poll, due.handle, tg)

    def _schedule(self, handle: TaskHandle, when: float) -> None:
        heapq.heappush(self._heap, _Due(when, next(self._seq), handle))
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
        judgement = judge_poll(response, error, resubmits=handle.resubmits)
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
            await self._reschedule(handle, delay)
            return
        handle.errors = 0
        first = handle.polls == 1
        if verdict is PollVerdict.PENDING:
            handle.pending_polls += 1
            if first and self.tuner is not None:
                self.tuner.observe(pending=True, age=self._clock() - handle.started)
            await self._reschedule(handle, self._next_delay(handle))
            return
        if first and self.tuner is not None and judgement.finished:
            self.tuner.observe(pending=False, age=self._clock() - handle.started)
        if verdict is PollVerdict.RESUBMIT:
            assert judgement.error is not None
            replacement = await self._on_lost(handle, judgement.error)
            if replacement is not None:
                self.add(replacement)
            return
        await self._on_finished(handle, response if verdict is PollVerdict.SUCCESS else None, judgement.error)

    def _next_delay(self, handle: TaskHandle) -> float:
        """Delay after a PENDING answer. With a tuner: wait until the learned quantile if the
        task is younger than it, else grow geometrically with the task's age (a long tail
        costs O(log age) polls); without one, the plain policy schedule."""
        policy = self._policy
        if self.tuner is None:
            return poll_delay(handle.pending_polls + 1, policy, self._rand)
        age = self._clock() - handle.started
        floor = policy.first_delay * 0.2
        until_quantile = self.tuner.delay - age
        if until_quantile > floor:
            nominal = until_quantile
        else:
            nominal = min(policy.max_delay, max(floor, age * (policy.growth - 1.0)))
        return nominal * (1.0 + policy.jitter * (2.0 * self._rand() - 1.0))

    async def _reschedule(self, handle: TaskHandle, delay: float) -> None:
        when = next_poll_at(self._clock(), delay, handle.deadline)
        if when is None:
            await self._on_finished(handle, None, poll_timeout(handle.task_id))
            return
        self._schedule(handle, when)


def _poll_retry_policy(policy: PollPolicy) -> RetryPolicy:
    """Backoff for a failing poll: from the poll interval, doubling, capped by max_delay."""
    base = max(policy.first_delay / 5.0, 1e-3)
    return RetryPolicy(base=base, factor=2.0, max_attempts=1_000_000,
                       max_delay=max(policy.max_delay, base), retry_after_cap=max(policy.max_delay, base))
