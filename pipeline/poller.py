"""Concurrent status polling of async tasks, with adaptive, jittered delays.

One `Poller` per capability keeps a heap of tasks ordered by when each is next due. Its loop
waits for the earliest due time, takes a slot from the group's pacer (the "poll" lane), and
fires the status request as a child task, so a slow response never holds up the next poll.

Adaptive first poll (`FirstPollTuner`): when status polls count against the QPS limit, every
needless PENDING answer costs a slot a submit could have used. The tuner tracks the `target`
quantile of the capability's task duration with a Robbins–Monro stochastic approximation in
log space — after each first poll, `delay *= exp(rate * (pending - (1 - target)))` — which
settles where a fraction `target` of the tasks are already done at their first poll. A task
then costs close to two requests (one submit, one poll) instead of 1 + duration/interval.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from .backoff import PollPolicy, RetryPolicy, poll_delay, retry_delay
from .capabilities import Capability
from .client import ApiResponse, ServiceClient
from .errors import FatalError, PermanentError, RateLimited, RetryableError, ServiceError, TaskNotExist
from .job import Job

#: Polls are never retried inside the client: the poller reschedules them instead, so a 429
#: or 5xx on a poll delays that poll and never fails the item.
SINGLE_SHOT = RetryPolicy(max_attempts=1, max_rate_limited=1)


class FirstPollTuner:
    """Learns where to place a capability's first poll (see the module docstring)."""

    __slots__ = ("delay", "target", "rate", "min_rate", "floor", "ceiling", "observations")

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
        current delay. Without this filter, a batch of tasks whose first polls were placed
        by an older, shorter delay would push the estimate up once per task and overshoot.
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
    started: float  # loop clock, for delays and the deadline
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


FinishFn = Callable[[TaskHandle, "ApiResponse | None", "ServiceError | None"], Awaitable[None]]


class Poller:
    """Polls one capability's tasks until each is SUCCESS, FAILED, lost or past its deadline.

    `on_finished(handle, response, error)` gets the final status response (SUCCESS or FAILED)
    or the error (TaskNotExist, a permanent error, or None with response None for a timeout).
    A `FatalError` is re-raised out of `run()`, which stops the run.
    """

    def __init__(
        self,
        capability: Capability,
        client: ServiceClient,
        pause: Callable[[float], None],
        policy: PollPolicy,
        on_finished: FinishFn,
        *,
        tuner: FirstPollTuner | None = None,
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] = random.random,
        max_concurrent: int = 64,
    ) -> None:
        self.capability = capability
        self._client = client  # its throttle paces polls in the group's "poll" lane
        self._slots = asyncio.Semaphore(max_concurrent)  # status requests out at once
        self._pause = pause  # pause the group after a 429
        self._policy = policy
        self._on_finished = on_finished
        self.tuner = tuner
        self._clock = clock or asyncio.get_running_loop().time
        self._rand = rand
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._active: set[asyncio.Task[None]] = set()
        self._closed = False  # no more tasks will be added
        self._fatal: FatalError | None = None
        self.polls = 0

    def __repr__(self) -> str:
        return (f"Poller({self.capability.name!r}, waiting={len(self._heap)}, "
                f"active={len(self._active)}, polls={self.polls})")

    def add(self, handle: TaskHandle, *, first_poll_in: float | None = None) -> None:
        """Start polling `handle`; the first poll is placed by the tuner unless given."""
        if handle.deadline == math.inf:
            handle.deadline = handle.started + self._policy.timeout
        if first_poll_in is None:
            expected = self.tuner.delay if self.tuner is not None else None
            first_poll_in = poll_delay(1, self._policy, self._rand, expected)
        self._schedule(handle, handle.started + first_poll_in)

    def close(self) -> None:
        """No more tasks will be added: `run()` returns once the last one is finished."""
        self._closed = True
        self._wake.set()

    def _schedule(self, handle: TaskHandle, when: float) -> None:
        heapq.heappush(self._heap, _Due(when, next(self._seq), handle))
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                if self._fatal is not None:
                    raise self._fatal
                if not self._heap:
                    if self._closed and not self._active:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                wait = self._heap[0].when - self._clock()
                if wait > 0:
                    # A timer that sets the event, not wait_for(): on Python 3.11 wait_for can
                    # swallow a cancellation that arrives as the event is set, and the run's
                    # shutdown then waits on this poller for ever.
                    self._wake.clear()
                    timer = asyncio.get_running_loop().call_later(wait, self._wake.set)
                    try:
                        await self._wake.wait()
                    finally:
                        timer.cancel()
                    continue
                await self._slots.acquire()
                due = heapq.heappop(self._heap)
                task = asyncio.get_running_loop().create_task(self._poll(due.handle))
                self._active.add(task)
                task.add_done_callback(self._child_done)
        finally:
            for task in list(self._active):
                task.cancel()
            if self._active:
                await asyncio.gather(*self._active, return_exceptions=True)

    def _child_done(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self._fatal = exc if isinstance(exc, FatalError) else FatalError(
                "InternalError", f"poller crashed: {exc!r}")
        self._wake.set()

    async def _poll(self, handle: TaskHandle) -> None:
        handle.polls += 1
        self.polls += 1
        cap = self.capability
        try:
            response = await self._client.get_task_status(
                cap.segment, handle.job.service_id, handle.task_id, retry=SINGLE_SHOT)
        except RetryableError as err:
            handle.errors += 1
            delay = retry_delay(handle.errors, _poll_retry_policy(self._policy), self._rand, err.retry_after)
            if isinstance(err, RateLimited) and err.retry_after is not None:
                self._pause(delay)  # the whole group would meet the same limit
            await self._reschedule_or_timeout(handle, delay)
            return
        except (TaskNotExist, PermanentError) as err:
            await self._on_finished(handle, None, err)
            return
        handle.errors = 0
        status = str(response.result.get("status", "")).upper()
        if status == "PENDING" or status == "RUNNING":
            handle.pending_polls += 1
            if handle.pending_polls == 1 and handle.polls == 1 and self.tuner is not None:
                self.tuner.observe(pending=True, age=self._clock() - handle.started)
            await self._reschedule_or_timeout(handle, self._next_delay(handle))
            return
        if handle.polls == 1 and self.tuner is not None:
            self.tuner.observe(pending=False, age=self._clock() - handle.started)
        await self._on_finished(handle, response, None)

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

    async def _reschedule_or_timeout(self, handle: TaskHandle, delay: float) -> None:
        when = self._clock() + delay
        if when > handle.deadline:
            if self._clock() >= handle.deadline:
                await self._on_finished(handle, None, None)  # PollTimeout
                return
            when = handle.deadline  # one last poll right at the deadline
        self._schedule(handle, when)


def _poll_retry_policy(policy: PollPolicy) -> RetryPolicy:
    """Backoff for a failing poll: from the poll interval, doubling, capped by max_delay."""
    base = max(policy.first_delay / 5.0, 1e-3)
    return RetryPolicy(base=base, factor=2.0, max_attempts=1_000_000,
                       max_delay=max(policy.max_delay, base), retry_after_cap=max(policy.max_delay, base))

