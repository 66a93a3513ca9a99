"""Per-service QPS pacing, shared by submits and polls; built per run, inside the loop.

Each QPS group gets one `GroupPacer`: a dispatcher that hands out send slots.

- Slots sit on a grid `1/qps` apart (GCRA, the "virtual scheduling" form of a leaky bucket
  with no burst tolerance). A slot is due at its grid time, not one interval after the
  previous request actually left, so a late timer wake-up is not lost for good. We started
  with `aiolimiter.AsyncLimiter(1, 1/qps)`, which times each wait from the previous grant:
  measured alone it reached 0.89 of the asked rate at 78/s (0.99 at 20/s), because every
  wake-up's lateness is lost. After idling the grid restarts at "now": no start-up burst.
- A grid can catch up after a late wake-up, so a guard keeps the times of the last `limit`
  grants and never lets a grant fall within `window` plus a margin of the grant `limit`
  places before it: the same sliding-window rule the service counts by, with slack.
- Lanes: submits and polls queue separately, FIFO within a lane. When both wait, slots are
  shared by weighted fair queuing (default 3 submits : 1 poll): starting tasks early is what
  shortens a run (the bench measured the longest tasks otherwise starting last), while polls
  still get a quarter of the budget when busy, all of it when submits are idle, and the
  in-flight cap stops submits from running far ahead of polls. Neither lane can starve.
- A 429 pauses the whole group (`pause(seconds)`): every request of the group would meet the
  same limit. The pause is Retry-After when the server sent one.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Awaitable, Callable, Mapping

LANES = ("submit", "poll")
DEFAULT_WEIGHTS = {"submit": 3.0, "poll": 1.0}
#: The guard's window is longer than the service's by this fraction of it, and at least by
#: GUARD_SLACK seconds: slack for the jitter between our clock and the server's, which is
#: absolute time (event loop, connection, network), not a fraction of the window.
GUARD_MARGIN = 0.01
GUARD_SLACK = 0.005


class GroupPacer:
    """Paces one QPS group. `await acquire(lane)` before each request."""

    __slots__ = ("group", "qps", "interval", "granted", "_next", "_sent", "_guard", "_paused_until",
                 "_waiters", "_weights", "_vt", "_vnow", "_dispatcher", "_clock", "_sleep")

    def __init__(self, group: str, qps: float, *, window: float = 1.0, limit: int | None = None,
                 weights: Mapping[str, float] | None = None, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.group = group
        self.qps = qps
        self.interval = 1.0 / qps
        self.granted = {lane: 0 for lane in LANES}  # requests let through, per lane
        self._next = -math.inf  # grid time of the next slot
        self._sent: deque[float] | None = deque(maxlen=limit) if limit else None  # last grants
        self._guard = window + max(window * GUARD_MARGIN, GUARD_SLACK)  # span `limit` grants must exceed
        self._paused_until = -math.inf  # no grant before this (after a 429)
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {lane: deque() for lane in LANES}
        self._weights = dict(weights or DEFAULT_WEIGHTS)
        self._vt = {lane: 0.0 for lane in LANES}  # WFQ virtual finish time per lane
        self._vnow = 0.0  # virtual time of the last grant
        self._dispatcher: asyncio.Task[None] | None = None
        self._clock = clock or asyncio.get_running_loop().time
        self._sleep = sleep

    def __repr__(self) -> str:
        waiting = {lane: len(q) for lane, q in self._waiters.items()}
        return f"GroupPacer({self.group!r}, qps={self.qps:g}, granted={self.granted}, waiting={waiting})"

    async def acquire(self, lane: str) -> None:
        """Wait for this lane's next slot (cancel-safe: a cancelled waiter is skipped)."""
        loop = asyncio.get_running_loop()
        queue = self._waiters[lane]
        if not any(not f.done() for f in queue):  # the lane becomes busy: no credit for idling
            self._vt[lane] = max(self._vt[lane], self._vnow)
        future: asyncio.Future[None] = loop.create_future()
        queue.append(future)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = loop.create_task(self._dispatch(), name=f"pacer-{self.group}")
        await future
        self.granted[lane] += 1

    async def wait_pause(self) -> None:
        """Wait out a pause without taking a slot (for requests that are not paced)."""
        while (wait := self._paused_until - self._clock()) > 0:
            await self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every request of this group for `seconds` (after a 429)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def close(self) -> None:
        """Stop the dispatcher (end of run); safe to call twice."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()

    async def _dispatch(self) -> None:
        while True:
            busy = [lane for lane in LANES if self._prune(lane)]
            if not busy:
                return
            now = self._clock()
            # On the grid unless we are more than one interval behind it (idle): then restart.
            slot = self._next if now - self._next < self.interval else now
            slot = max(slot, self._paused_until)
            if self._sent is not None and len(self._sent) == self._sent.maxlen:
                slot = max(slot, self._sent[0] + self._guard)
            if slot > now:
                await self._sleep(slot - now)
                continue
            lane = min(busy, key=lambda name: self._vt[name] + 1.0 / self._weights[name])
            self._vt[lane] += 1.0 / self._weights[lane]
            self._vnow = self._vt[lane]
            self._waiters[lane].popleft().set_result(None)
            self._next = slot + self.interval
            if self._sent is not None:
                self._sent.append(now)

    def _prune(self, lane: str) -> bool:
        """Drop cancelled waiters at the head; True if the lane has one waiting."""
        queue = self._waiters[lane]
        while queue and queue[0].done():
            queue.popleft()
        return bool(queue)


class Pacers:
    """All groups of a run. `polls_share` decides whether polls go through the pacer.

    `limits` maps a group to its paced rate (requests per real second); `windows` optionally
    to the service's `(window seconds, requests per window)` for the sliding-window guard.
    """

    def __init__(self, limits: Mapping[str, float], *, polls_share: bool,
                 windows: Mapping[str, tuple[float, int]] | None = None,
                 weights: Mapping[str, float] | None = None) -> None:
        windows = windows or {}
        self._groups = {
            group: GroupPacer(group, qps, window=windows.get(group, (1.0, 0))[0],
                              limit=windows.get(group, (1.0, 0))[1] or None, weights=weights)
            for group, qps in limits.items()}
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

    def close(self) -> None:
        for pacer in self._groups.values():
            pacer.close()
