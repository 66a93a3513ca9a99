"""Who gets a QPS group's next slot, in both pacer backends: the group's submit and poll lanes.

- FIFO within a lane.
- Between lanes, weighted fair queuing (WFQ) in its virtual-time form: each lane has a virtual
  finish time that a grant moves on by 1/weight, and a slot goes to the waiting lane whose next
  finish is earliest (the submit lane on a tie). By default 3 submits : 1 poll when both wait:
  starting tasks early is what shortens a run, while polls still get a quarter of the budget
  when busy, and a lone lane gets every slot. A lane that becomes busy again starts from the
  virtual time of the last grant (no credit for idling), so neither lane can starve the other.
- A waiter whose task is cancelled while it waits marks itself `abandoned`; it is dropped when it
  reaches the head of its lane, so its turn goes to the next waiter and costs its lane nothing.

The queue holds the backend's own waiters (the memory pacer's tickets carry the guard's times,
the Redis pacer's a booking) and knows no clock: when and whether a slot exists is the
backend's business; this module only says whose it is.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Generic, Protocol, TypeVar

from ..core import aio
from ..core.lanes import Lane

__all__ = ["DEFAULT_WEIGHTS", "LaneQueue", "Waiter"]

DEFAULT_WEIGHTS: Mapping[Lane, float] = {Lane.SUBMIT: 3.0, Lane.POLL: 1.0}


class Waiter(Protocol):
    """What the queue reads of a waiter."""

    abandoned: bool  # its task was cancelled while it waited: skip it


W = TypeVar("W", bound=Waiter)


class LaneQueue(Generic[W]):
    """The waiters of one QPS group, in a submit and a poll lane; `pop()` hands out the next one."""

    __slots__ = ("_arrived", "_cost", "_lanes", "_vnow", "_vt")

    def __init__(self, weights: Mapping[Lane, float] | None = None) -> None:
        weights = weights or DEFAULT_WEIGHTS
        self._cost = {lane: 1.0 / weights[lane] for lane in Lane}  # virtual time one grant takes
        self._lanes: dict[Lane, deque[W]] = {lane: deque() for lane in Lane}
        self._vt = dict.fromkeys(Lane, 0.0)  # virtual finish time of each lane's last grant
        self._vnow = 0.0  # virtual time of the last grant
        # Set when a waiter arrives, for a dispatcher that found the queue empty. One per group,
        # waited on by its dispatcher only; asyncio's (see core/aio.py) since it turns per request.
        self._arrived = aio.Event()

    def __repr__(self) -> str:
        return f"LaneQueue({', '.join(f'{lane.value}={self.waiting(lane)}' for lane in Lane)})"

    def push(self, lane: Lane, waiter: W) -> None:
        """A new waiter at the back of `lane`; wakes a dispatcher waiting for one."""
        if not self.busy(lane):  # the lane becomes busy: no credit for the time it idled
            self._vt[lane] = max(self._vt[lane], self._vnow)
        self._lanes[lane].append(waiter)
        self._arrived.set()

    def push_front(self, lane: Lane, waiter: W) -> None:
        """A waiter back at the head of `lane` after it gave its slot up (the Redis pacer's waiter
        that woke too late): not a new arrival, so its lane's virtual time is left as it is."""
        self._lanes[lane].appendleft(waiter)
        self._arrived.set()

    def busy(self, lane: Lane) -> bool:
        """True if `lane` has a waiter (abandoned ones at its head are dropped first)."""
        queue = self._lanes[lane]
        while queue and queue[0].abandoned:
            queue.popleft()
        return bool(queue)

    def any_busy(self) -> bool:
        """True if either lane has a waiter."""
        return self.busy(Lane.SUBMIT) or self.busy(Lane.POLL)

    def waiting(self, lane: Lane) -> int:
        """How many waiters of `lane` are still waiting (abandoned ones not counted)."""
        return sum(not waiter.abandoned for waiter in self._lanes[lane])

    def pop(self) -> W | None:
        """The next waiter, taken off the queue (its lane's virtual time moves on), or None when
        nobody waits."""
        best: Lane | None = None
        finish = math.inf
        for lane, queue in self._lanes.items():  # Lane's order: the submit lane wins a tie
            while queue and queue[0].abandoned:
                queue.popleft()
            if queue and (mine := self._vt[lane] + self._cost[lane]) < finish:
                best, finish = lane, mine
        if best is None:
            return None
        self._vt[best] = self._vnow = finish
        return self._lanes[best].popleft()

    async def arrival(self) -> None:
        """Return once a waiter waits (at once if one does): the dispatcher's idle wait."""
        while not self.any_busy():
            self._arrived.clear()
            await self._arrived.wait()
