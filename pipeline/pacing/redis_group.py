"""One QPS group of the shared pacer: this process's submit/poll lanes in front of a booking.

The dispatcher (`run()`) takes one booking at a time while a waiter waits, sleeps until the
booked slot, and hands it to the waiter the group's `LaneQueue` picks (lane_queue.py: the same
lanes and weighted fair queuing as the memory pacer). A booking comes from Redis (`BOOK_SCRIPT`:
one atomic call, Redis' clock) or, while Redis cannot be reached, from `LocalBook` at this
process's share of the limit.

A slot is good only near its time: a dispatcher or waiter that wakes more than `tolerance`
after it gives the slot up (it is dropped at the next booking) and books again. The guard in
Redis assumed the request arrives by `slot + hold`; a late send could crowd a window.

Unlike the memory pacer, this one uses anyio's clock, sleep and events, not the asyncio fast
paths of core/aio.py: every grant here waits for a booking's round trip to Redis (0.28 ms median
in BENCHMARKS.md's shared-account scenario), and anyio's wrappers add about 1.5 µs per clock
read and 5 µs per event on the bench machine: some 15 µs a grant, a few percent of that round
trip. (anyio's clock, looked up per call, also lets `RedisPacers` be built before its loop runs.)
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from ..core.lanes import Lane
from .lane_queue import LaneQueue
from .memory import GUARD_MARGIN, GUARD_SLACK, MOST_LATE_FRACTION
from .redis_keys import group_keys
from .redis_script import LocalBook

if TYPE_CHECKING:
    from .redis_pacer import RedisLink

__all__ = ["Booking", "RedisGroupPacer", "RedisPermit"]

#: A slot may be used this fraction of the window after its time (and at least TOLERANCE_MIN s).
#: The guard, not the grid, keeps the service's window: what the tolerance must bound is how far
#: an unanswered request can be from its booked slot (it is part of `hold`). A tenth of the
#: window lets a busy event loop's late wake-ups through without giving slots up.
TOLERANCE_FRACTION = 0.1
TOLERANCE_MIN = 0.002
#: Idle group keys expire after this long: a stale grid restarts anyway, old entries are trimmed.
KEY_TTL_MS = 600_000
_tokens = itertools.count()


@dataclass
class Booking:
    """A booked slot. `slot` is on the clock of whoever booked it (Redis or this process);
    `early` and `due` are this process's clock: `early` <= the slot's local time <= `due`
    (the uncertainty of `ClockBounds`, about the fastest round trip to Redis)."""

    member: str
    slot: float
    early: float
    due: float
    shared: bool  # booked in Redis (else in the local fallback)


class RedisPermit:
    """A granted slot (a `core.lanes.PermitLike`): call `answered()` when the request's answer
    (or error) arrives, so the guard counts from then, not from `slot + hold`."""

    __slots__ = ("_booking", "_pacer")

    def __init__(self, pacer: RedisGroupPacer, booking: Booking) -> None:
        self._pacer = pacer
        self._booking = booking

    def answered(self) -> None:
        self._pacer.answered(self._booking)


class _Ticket:
    """One waiting acquire, granted a booking by the dispatcher."""

    __slots__ = ("abandoned", "booking", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.abandoned = False
        self.booking: Booking | None = None


class RedisGroupPacer:
    """Paces one QPS group against the budget every process shares; `run()` must be running."""

    def __init__(self, link: RedisLink, group: str, qps: float, *, window: float, limit: int,
                 weights: Mapping[Lane, float] | None, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[object]] = anyio.sleep) -> None:
        self.group = group
        self.qps = qps
        self.interval = 1.0 / qps
        self.limit = limit
        self.guard = window + max(window * GUARD_MARGIN, GUARD_SLACK)
        self.tolerance = max(window * TOLERANCE_FRACTION, TOLERANCE_MIN)
        # Until its answer, a request is assumed to arrive by its slot, plus the lateness a
        # send may have, plus the travel the memory pacer allows for.
        self.hold = self.tolerance + window * MOST_LATE_FRACTION
        self.granted = {lane: 0 for lane in Lane}
        self.given_up = 0  # bookings not used: a late wake-up, a pause, a cancelled waiter or nobody left
        self._link = link
        self._keys = group_keys(link.namespace, group)
        self._clock = clock
        self._sleep = sleep
        self._prefix = f"{secrets.token_hex(4)}-"  # members of this pacer, unique across processes
        self._lanes: LaneQueue[_Ticket] = LaneQueue(weights)
        self._paused_until = -math.inf  # local view of the pause: our own 429s and Redis' answers
        self._to_drop: list[str] = []  # given-up Redis bookings, removed by the next booking call
        self._local: LocalBook | None = None  # the fallback while Redis is lost
        self._local_epoch = -1  # the link's loss count the fallback was built for

    def __repr__(self) -> str:
        mode = "redis" if self._local is None else "local"
        granted = {lane.value: n for lane, n in self.granted.items()}
        return f"RedisGroupPacer({self.group!r}, qps={self.qps:g}, {mode}, granted={granted})"

    async def acquire(self, lane: Lane) -> RedisPermit:
        """Wait for this lane's next slot (cancel-safe); a slot reached too late is given up
        and this waiter goes back to the head of its lane."""
        ticket = _Ticket()
        self._lanes.push(lane, ticket)
        while True:
            try:
                await ticket.event.wait()
            except BaseException:
                ticket.abandoned = True
                if ticket.booking is not None:
                    self._give_up(ticket.booking)
                raise
            booking = ticket.booking
            assert booking is not None
            if self._clock() - booking.early <= self.tolerance:
                self.granted[lane] += 1
                return RedisPermit(self, booking)
            self._give_up(booking)  # this task woke too late after the grant: book again
            ticket = _Ticket()
            self._lanes.push_front(lane, ticket)

    async def wait_pause(self) -> None:
        """Wait out the pause this process knows of, without taking a slot (unpaced polls)."""
        while (wait := self._paused_until - self._clock()) > 0:
            await self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold the group for `seconds` here at once, and in Redis for every process."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._link.send_pause(self._keys[0], seconds)

    def answered(self, booking: Booking) -> None:
        """Lower the booking's arrival bound to now (its answer is back)."""
        now = self._clock()
        if not booking.shared:
            if self._local is not None:
                self._local.answered(booking.member, now)
        elif not self._link.lost:
            # On the booker's clock: `early` is not after the slot, so this is not too early.
            self._link.send_answered(self._keys[1], booking.member, booking.slot + (now - booking.early))

    async def run(self) -> None:
        """The dispatcher: books and grants slots until cancelled."""
        lanes = self._lanes
        while True:
            await lanes.arrival()
            if (wait := self._paused_until - self._clock()) > 0:
                await self._sleep(wait)  # our own 429: not even a booking until it is over
                continue
            booking = await self._book()
            if (wait := booking.due - self._clock()) > 0:
                await self._sleep(wait)
            if self._clock() - booking.early > self.tolerance or self._paused_until > self._clock():
                self._give_up(booking)
                continue
            ticket = lanes.pop()
            if ticket is None:  # every waiter was cancelled meanwhile
                self._give_up(booking)
                continue
            ticket.booking = booking
            ticket.event.set()

    async def _book(self) -> Booking:
        """One booking: in Redis while it answers, else in the local fallback."""
        member = f"{self._prefix}{next(_tokens)}"
        if not self._link.lost:
            if self._local is not None:
                # Redis is back. It does not know what we sent meanwhile: let those sends
                # leave every window first, then book there again.
                if (wait := self._local.quiet_at() - self._clock()) > 0:
                    await self._sleep(wait)
                self._local = None
            start, losses = self._clock(), self._link.losses
            try:
                drop, self._to_drop = self._to_drop, []
                reply = await self._link.book(self._keys, interval=self.interval, guard=self.guard, limit=self.limit,
                                              hold=self.hold, member=member, drop=" ".join(drop))
            except Exception as exc:  # every failure means "Redis is not there": fall back
                self._link.link_down(exc, losses)
            else:
                end = self._clock()
                wait, slot, pause = reply
                offset = self._link.offset
                offset.update(slot - wait, start, end)
                early, due = offset.local_span(slot)
                self._paused_until = max(self._paused_until, offset.local_span(pause)[1])
                return Booking(member, slot, early=early, due=due, shared=True)
        local = self._fallback()
        now = self._clock()
        slot = local.book(now, member, self._paused_until)
        return Booking(member, slot, early=slot, due=slot, shared=False)

    def _fallback(self) -> LocalBook:
        """The local booking for this loss of Redis, at this process's share of the limit."""
        if self._local is None or self._local_epoch != self._link.losses:
            share = max(1, self._link.processes)
            self._local = LocalBook(interval=self.interval * share, limit=max(1, self.limit // share)
                                    if self.limit else 0, guard=self.guard, hold=self.hold)
            self._local_epoch = self._link.losses
        return self._local

    def _give_up(self, booking: Booking) -> None:
        """Release a slot that will not be used: a late wake-up, a pause, or nobody waiting."""
        self.given_up += 1
        if booking.shared:
            self._to_drop.append(booking.member)
        elif self._local is not None:
            self._local.drop(booking.member)
