"""Per-service QPS pacing shared fairly by submits and polls; built per run, inside the loop.

Each QPS group gets one `aiolimiter.AsyncLimiter(1, 1/qps)`: a leaky bucket of capacity one,
so requests leave at most every 1/qps seconds and there is no start-up burst. (An
`AsyncLimiter(qps, 1)` lets `qps` requests through at once after start or idle, which a
server counting a sliding one-second window answers with 429s; DESIGN.md measured this.)

Fairness: submits and polls wait in separate FIFO lanes, and each lane sends at most one
waiter into the limiter at a time. The limiter serves its waiters in order, so when both
lanes are busy they alternate, and neither starves the other; when one lane is idle the
other gets the whole rate.

A 429 pauses the whole group (`pause(seconds)`), because every request of the group would
meet the same limit; the pause is Retry-After when the server sent one.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from aiolimiter import AsyncLimiter

LANES = ("submit", "poll")


class GroupPacer:
    """Paces one QPS group. `await acquire(lane)` before each request."""

    __slots__ = ("group", "qps", "_limiter", "_lanes", "_paused_until", "_clock", "_sleep", "granted")

    def __init__(self, group: str, qps: float, *, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], "asyncio.Future[None] | object"] = asyncio.sleep) -> None:
        self.group = group
        self.qps = qps
        self._limiter = AsyncLimiter(1, 1.0 / qps)  # leaky bucket, capacity 1 (see module doc)
        self._lanes = {lane: asyncio.Lock() for lane in LANES}  # one waiter per lane in the limiter
        self._paused_until = 0.0  # loop time before which no request of this group may leave
        self._clock = clock or asyncio.get_running_loop().time
        self._sleep = sleep
        self.granted = {lane: 0 for lane in LANES}  # requests let through, per lane

    def __repr__(self) -> str:
        return f"GroupPacer({self.group!r}, qps={self.qps:g}, granted={self.granted})"

    async def acquire(self, lane: str) -> None:
        async with self._lanes[lane]:
            while True:
                await self.wait_pause()
                await self._limiter.acquire()
                if self._paused_until <= self._clock():
                    break
                # A pause began while we waited in the limiter: honour it, then queue again.
        self.granted[lane] += 1

    async def wait_pause(self) -> None:
        while (wait := self._paused_until - self._clock()) > 0:
            await self._sleep(wait)  # type: ignore[misc]

    def pause(self, seconds: float) -> None:
        """Hold every request of this group for `seconds` (after a 429)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)


class Pacers:
    """All groups of a run. `polls_share` decides whether polls go through the limiter."""

    def __init__(self, limits: dict[str, float], *, polls_share: bool) -> None:
        self._groups = {group: GroupPacer(group, qps) for group, qps in limits.items()}
        self.polls_share = polls_share

    def __getitem__(self, group: str) -> GroupPacer:
        return self._groups[group]

    async def acquire(self, group: str, lane: str) -> None:
        pacer = self._groups[group]
        if lane == "poll" and not self.polls_share:
            await pacer.wait_pause()  # unpaced, but a 429 pause holds polls too
            pacer.granted[lane] += 1
            return
        await pacer.acquire(lane)

    def pause(self, group: str, seconds: float) -> None:
        self._groups[group].pause(seconds)
