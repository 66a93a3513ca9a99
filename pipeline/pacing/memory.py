"""Per-service QPS pacing, shared by submits and polls; built per run, run by the run's task group.

Each QPS group gets one `GroupPacer`, whose dispatcher (`run()`) hands out send slots. This
module also holds what the Redis backend shares: the `PacerBackend` protocol, the guard's sizes
and `CapabilityPacers`.

- Slots sit on a grid `1/qps` apart (GCRA, the "virtual scheduling" form of a leaky bucket
  with no burst tolerance). A slot is due at its grid time, not one interval after the
  previous request actually left, so a late timer wake-up is not lost for good. We started
  with `aiolimiter.AsyncLimiter(1, 1/qps)`, which times each wait from the previous grant:
  measured alone it reached 0.89 of the asked rate at 78/s (0.99 at 20/s), because every
  wake-up's lateness is lost. After idling the grid restarts at "now": no start-up burst.
- A grid can catch up after a late wake-up, so a guard keeps the last `limit` requests and
  never lets a grant fall within `window` (plus a small margin) of the latest time the request
  `limit` places before it can have reached the service: the same sliding-window rule the
  service counts by. That time is not the grant: a busy loop wakes a waiter milliseconds
  later, and the request then travels; it is bounded by when the request's answer came back
  (`Permit.answered()`), which a 100 ms (time-scaled) window needs.
- Lanes: submits and polls wait in a `LaneQueue` (lane_queue.py, shared with the Redis pacer):
  FIFO within a lane, weighted fair queuing between them.
- This is a per-request path, so a waiter's event, the dispatcher's sleep and the clock are the
  asyncio fast paths of `core/aio.py` (which holds the measurement); tasks are still owned by
  the run's anyio task group.
- A 429 pauses the whole group (`Pacers.pause(capability, seconds)`, the one code path for
  it): every request of the group would meet the same limit.
- Spare slots (`GroupPacer.spare_at()`): whether any request waits, and when the grid's next
  slot is free. The poller spends a slot nobody waits for on a poll (work-conserving polling);
  that poll still passes `acquire()`, so the guard counts it like any other request.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, Protocol, TypeVar

import anyio

from ..core import aio
from ..core.capabilities import CAPABILITIES
from ..core.lanes import Lane, PermitLike
from .lane_queue import LaneQueue

__all__ = ["CapabilityPacers", "GroupPacer", "PacerBackend", "Pacers", "Permit", "SpareSlots"]

#: The guard's window is longer than the service's by this fraction of it, and at least by
#: GUARD_SLACK seconds: slack for the difference between our clock and the server's.
GUARD_MARGIN = 0.01
GUARD_SLACK = 0.002
#: Tickets the guard keeps at most, whatever the limit: past it, every k-th grant is kept (see
#: `GroupPacer`), so memory does not grow with a `qps` set very high.
GUARD_MAX = 1024
#: A request whose answer has not come back yet is assumed to have reached the service within
#: this fraction of the window after it left (a bound for the guard; answers usually come sooner).
MOST_LATE_FRACTION = 0.25


class _Ticket:
    """One request's times, kept by the guard for the last `limit` requests: small on purpose
    (with limits set very high, the guard keeps many of them)."""

    __slots__ = ("abandoned", "answered", "event", "sent")

    def __init__(self) -> None:
        self.event: aio.Event | None = aio.Event()  # dropped once granted
        self.abandoned = False  # the waiter was cancelled: its turn goes to the next one
        self.sent = -math.inf  # when the request left: the grant, then the waiter's wake-up
        self.answered: float | None = None  # when its answer (or error) came back

    def arrived_by(self, most_late: float) -> float:
        """The latest time the request can have reached the service: not after its answer,
        and (while unanswered) assumed no later than `most_late` after it was sent."""
        bound = self.sent + most_late
        return min(bound, self.answered) if self.answered is not None else bound


class SpareSlots(Protocol):
    """A QPS group's spare-slot signal, for its poller (`GroupPacer` is one)."""

    interval: float  # seconds between two slots of the group's grid

    def spare_at(self) -> float | None:
        """None while a request waits for the group's budget; else when the next slot is free."""


class PacerBackend(Protocol):
    """The pacing of a run: in-process (`Pacers`) or shared through Redis (`RedisPacers`)."""

    async def run(self) -> None:
        """Grant slots until cancelled (in the run's task group)."""

    async def acquire(self, capability: str, lane: Lane) -> PermitLike | None:
        """Wait for a slot for one request of `capability` (None: a poll that is not paced)."""

    def pause(self, capability: str, seconds: float) -> None:
        """After a 429: hold every request of the capability's QPS group for `seconds`."""

    def spare_slots(self, capability: str) -> SpareSlots | None:
        """The capability's group as a spare-slot signal for its poller, or None: no spare polls."""


class Permit:
    """A granted slot. Call `answered()` when the request's answer (or error) arrives: it
    bounds when the service can have counted it, which the sliding-window guard uses."""

    __slots__ = ("_clock", "_ticket")

    def __init__(self, ticket: _Ticket, clock: Callable[[], float]) -> None:
        self._ticket = ticket
        self._clock = clock

    def answered(self) -> None:
        self._ticket.answered = self._clock()


class GroupPacer:
    """Paces one QPS group. `await acquire(lane)` before each request; `run()` must be running."""

    __slots__ = ("_clock", "_guard", "_lanes", "_most_late", "_next", "_paused_until", "_sent", "_since", "_sleep",
                 "_stride", "granted", "group", "interval", "qps")

    def __init__(self, group: str, qps: float, *, window: float = 1.0, limit: int | None = None,
                 weights: Mapping[Lane, float] | None = None, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[object]] = aio.sleep) -> None:
        self.group = group
        self.qps = qps
        self.interval = 1.0 / qps
        self.granted = {lane: 0 for lane in Lane}  # requests let through, per lane
        self._next = -math.inf  # grid time of the next slot
        # The guard keeps every `_stride`-th grant, at most GUARD_MAX of them: the oldest kept is
        # then at most `limit` - 1 grants back, never more, so the rule stays safe (slower by at
        # most 1/GUARD_MAX of the limit) and memory is bounded by a constant, not by the limit.
        self._stride = max(1, math.ceil(limit / GUARD_MAX)) if limit else 1
        kept = (limit - self._stride) // self._stride + 1 if limit else 0
        self._sent: deque[_Ticket] | None = deque(maxlen=kept) if limit else None  # sampled last grants
        self._since = self._stride - 1  # grants since the last one kept (the first grant is kept)
        self._guard = window + max(window * GUARD_MARGIN, GUARD_SLACK)  # span `limit` arrivals must exceed
        self._most_late = window * MOST_LATE_FRACTION
        self._paused_until = -math.inf  # no grant before this (after a 429)
        self._lanes: LaneQueue[_Ticket] = LaneQueue(weights)
        self._clock = clock or aio.loop_clock()
        self._sleep = sleep

    def __repr__(self) -> str:
        granted = {lane.value: n for lane, n in self.granted.items()}
        waiting = {lane.value: self.waiting(lane) for lane in Lane}
        return f"GroupPacer({self.group!r}, qps={self.qps:g}, granted={granted}, waiting={waiting})"

    def waiting(self, lane: Lane) -> int:
        """Acquires waiting in `lane` now."""
        return self._lanes.waiting(lane)

    def spare_at(self) -> float | None:
        """None while a submit or a poll waits (every slot is spoken for); otherwise the time
        from which a request would be granted at once (now or earlier: a slot is unused)."""
        if self._lanes.any_busy():
            return None
        return self._slot_time(self._clock())

    async def acquire(self, lane: Lane) -> Permit:
        """Wait for this lane's next slot (cancel-safe: a cancelled waiter is skipped)."""
        ticket = _Ticket()
        event = ticket.event
        assert event is not None
        self._lanes.push(lane, ticket)
        try:
            await event.wait()
        except BaseException:
            ticket.abandoned = True
            raise
        # The guard counts from when the request really leaves: a busy loop can wake this
        # waiter some milliseconds after its grant, and the service counts arrivals.
        ticket.sent = max(ticket.sent, self._clock())
        self.granted[lane] += 1
        return Permit(ticket, self._clock)

    async def wait_pause(self) -> None:
        """Wait out a pause without taking a slot (for requests that are not paced)."""
        while (wait := self._paused_until - self._clock()) > 0:
            await self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every request of this group for `seconds` (after a 429)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def run(self) -> None:
        """The dispatcher: grants slots until cancelled (by the run's task group)."""
        lanes = self._lanes
        while True:
            await lanes.arrival()
            now = self._clock()
            slot = self._slot_time(now)
            if slot > now:
                await self._sleep(slot - now)
                continue  # the waiter may have gone meanwhile: look again
            ticket = lanes.pop()
            assert ticket is not None and ticket.event is not None  # no await since arrival()
            ticket.sent = now
            ticket.event.set()
            ticket.event = None  # the guard keeps the times, not the event
            self._next = slot + self.interval
            if self._sent is not None:
                self._since += 1
                if self._since == self._stride:
                    self._sent.append(ticket)
                    self._since = 0

    def _slot_time(self, now: float) -> float:
        """The next grant's time: the grid, a pause, the sliding-window guard, whichever is latest."""
        # On the grid unless we are more than one interval behind it (idle): then restart.
        slot = self._next if now - self._next < self.interval else now
        slot = max(slot, self._paused_until)
        if self._sent is not None and len(self._sent) == self._sent.maxlen:
            slot = max(slot, self._sent[0].arrived_by(self._most_late) + self._guard)
        return slot


class _GroupLike(Protocol):
    """What `CapabilityPacers` uses of a group's pacer, whichever backend's."""

    granted: dict[Lane, int]

    async def acquire(self, lane: Lane) -> PermitLike: ...

    async def wait_pause(self) -> None: ...

    def pause(self, seconds: float) -> None: ...


G = TypeVar("G", bound=_GroupLike)


class CapabilityPacers(Generic[G]):
    """What every pacer backend does the same way: reach a QPS group through a capability
    name, let unshared polls through (only a 429 pause holds them), and pause after a 429."""

    def __init__(self, groups: dict[str, G], *, polls_share: bool) -> None:
        self._groups = groups
        self.polls_share = polls_share

    def __getitem__(self, group: str) -> G:
        return self._groups[group]

    def for_capability(self, capability: str) -> G:
        return self._groups[CAPABILITIES[capability].qps_group]

    async def acquire(self, capability: str, lane: Lane) -> PermitLike | None:
        """A slot for one request of `capability` (None: polls that are not paced)."""
        pacer = self.for_capability(capability)
        if lane is Lane.POLL and not self.polls_share:
            await pacer.wait_pause()  # unpaced, but a 429 pause holds polls too
            pacer.granted[lane] += 1
            return None
        return await pacer.acquire(lane)

    def pause(self, capability: str, seconds: float) -> None:
        """After a 429: hold every request of the capability's group (the one place this is done)."""
        self.for_capability(capability).pause(seconds)


class Pacers(CapabilityPacers[GroupPacer]):
    """All groups of a run, reached through capability names (the group comes from the
    capability table). `polls_share` decides whether polls go through the pacer.

    `limits` maps a group to its paced rate (requests per real second); `windows` optionally
    to the service's `(window seconds, requests per window)` for the sliding-window guard.
    """

    def __init__(self, limits: Mapping[str, float], *, polls_share: bool,
                 windows: Mapping[str, tuple[float, int]] | None = None,
                 weights: Mapping[Lane, float] | None = None,
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[object]] = aio.sleep) -> None:
        windows = windows or {}
        super().__init__({
            group: GroupPacer(group, qps, window=windows.get(group, (1.0, 0))[0],
                              limit=windows.get(group, (1.0, 0))[1] or None, weights=weights,
                              clock=clock, sleep=sleep)
            for group, qps in limits.items()}, polls_share=polls_share)

    async def run(self) -> None:
        """Every group's dispatcher, until cancelled."""
        async with anyio.create_task_group() as tg:
            for pacer in self._groups.values():
                tg.start_soon(pacer.run, name=f"pacer-{pacer.group}")

    def spare_slots(self, capability: str) -> GroupPacer | None:
        """The capability's group as a spare-slot signal for its poller; None when polls are not
        paced (they draw on no budget, so there is no slot to spare: the poll schedule alone)."""
        return self.for_capability(capability) if self.polls_share else None
