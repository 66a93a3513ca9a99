"""The booking rule of the shared (Redis) pacer: the Lua text Redis runs, and the same rule in
Python for the in-process fallback when Redis is gone.

One booking of one QPS group, atomically (GCRA "virtual scheduling" grid with no burst
tolerance, plus the sliding-window guard of the memory pacer, memory.py):

1. `now` is Redis `TIME`: one clock for every host that shares the budget.
2. The slot is the grid's next time unless the grid is more than one interval behind `now`
   (idle): then it restarts at `now`, so there is no start-up burst.
3. Not before the shared pause (a 429 seen by any process).
4. The guard: `sent` holds, per booking, the latest time its request can have reached the
   service (first `slot + hold`, lowered to the answer's time when it comes back). The new slot
   is never within `guard` (window + margin) of the `limit`-th latest of those: then no window
   of the service can count more than `limit` requests. Entries older than `now - guard` can no
   longer matter and are trimmed, so the set stays about `limit` long.
5. Books the slot (moves the grid on, records the entry) and answers the wait as text: a Lua
   number would reach the client truncated to an integer, and whole seconds are far too coarse.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["BOOK_SCRIPT", "PAUSE_SCRIPT", "ClockBounds", "LocalBook", "earliest_slot"]

#: KEYS: grid hash (fields `next`, `pause`), sent sorted set (member -> arrival bound).
#: ARGV: interval, guard, limit (0: no guard), hold, member, members to drop (space-separated,
#: given-up bookings), ttl ms.
#: Returns {wait, slot, pause} as "%.6f" text (seconds; slot and pause on the Redis clock).
BOOK_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local guard = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local hold = tonumber(ARGV[4])
local ttl = tonumber(ARGV[7])
for gone in string.gmatch(ARGV[6], '%S+') do redis.call('ZREM', KEYS[2], gone) end
local raw = redis.call('HGET', KEYS[1], 'next')
local slot = now
if raw then
  local nxt = tonumber(raw)
  if now - nxt < interval then slot = nxt end
end
raw = redis.call('HGET', KEYS[1], 'pause')
local pause = 0
if raw then pause = tonumber(raw) end
if pause > slot then slot = pause end
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%.6f', now - guard))
  local kth = redis.call('ZREVRANGE', KEYS[2], limit - 1, limit - 1, 'WITHSCORES')
  if kth[2] then
    local bound = tonumber(kth[2]) + guard
    if bound > slot then slot = bound end
  end
  redis.call('ZADD', KEYS[2], string.format('%.6f', slot + hold), ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('HSET', KEYS[1], 'next', string.format('%.6f', slot + interval))
redis.call('PEXPIRE', KEYS[1], ttl)
return {string.format('%.6f', slot - now), string.format('%.6f', slot), string.format('%.6f', pause)}
"""

#: KEYS: grid hash. ARGV: seconds, ttl ms. Sets `pause` to Redis now + seconds unless later already.
PAUSE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local raw = redis.call('HGET', KEYS[1], 'pause')
if (not raw) or tonumber(raw) < until_ then
  redis.call('HSET', KEYS[1], 'pause', string.format('%.6f', until_))
end
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""


def earliest_slot(now: float, *, grid_next: float, interval: float, pause: float,
                  bounds: Iterable[float], limit: int, guard: float) -> float:
    """The rule of steps 2-4 above as a pure function (the Lua text is the same rule).

    `bounds` are the arrival bounds of earlier bookings; with `limit` 0 there is no guard.
    """
    slot = grid_next if now - grid_next < interval else now
    slot = max(slot, pause)
    if limit > 0:
        latest = sorted((b for b in bounds if b >= now - guard), reverse=True)
        if len(latest) >= limit:
            slot = max(slot, latest[limit - 1] + guard)
    return slot


@dataclass
class LocalBook:
    """The same booking on this process's clock: the fallback while Redis cannot be reached.

    Only this process books here, so the caller scales the rate and the guard's limit down to
    this process's share of the account.
    """

    interval: float
    limit: int
    guard: float
    hold: float
    grid_next: float = -math.inf
    #: member -> arrival bound, like the `sent` set in Redis
    bounds: dict[str, float] = field(default_factory=dict)

    def book(self, now: float, member: str, pause: float) -> float:
        """Book the next slot for `member`; returns the slot time."""
        self.bounds = {m: b for m, b in self.bounds.items() if b >= now - self.guard}  # trimmed as in Redis
        slot = earliest_slot(now, grid_next=self.grid_next, interval=self.interval, pause=pause,
                             bounds=self.bounds.values(), limit=self.limit, guard=self.guard)
        self.grid_next = slot + self.interval
        if self.limit > 0:
            self.bounds[member] = slot + self.hold
        return slot

    def answered(self, member: str, at: float) -> None:
        """Lower the member's arrival bound to when its answer came back."""
        if member in self.bounds:
            self.bounds[member] = min(self.bounds[member], at)

    def drop(self, member: str) -> None:
        """Forget a booking that was given up (its request never left)."""
        self.bounds.pop(member, None)

    def quiet_at(self) -> float:
        """When no local booking can still count in any window: the switch back to Redis waits
        for it, since Redis does not know what this process sent meanwhile."""
        latest = max(self.bounds.values(), default=-math.inf)
        return max(latest + self.guard, self.grid_next - self.interval + self.guard)


class ClockBounds:
    """Bounds on `Redis TIME - this process's clock`, narrowed by every booking's round trip.

    A reply stamped `now_redis` was stamped between the call's `start` and `end` (local), so the
    offset lies in `[now_redis - end, now_redis - start]`; intersecting those intervals keeps the
    tightest one seen (the NTP idea of trusting the fastest exchange), so a slow round trip does
    not make a booked slot look late. The bounds widen by `drift` per second to allow for clocks
    that run at slightly different rates, and restart from the latest sample when a sample
    contradicts them (the Redis host's wall clock was stepped).
    """

    __slots__ = ("drift", "hi", "lo", "updated")

    def __init__(self, drift: float = 1e-4) -> None:
        self.drift = drift  # widening per local second: 100 ppm, far above real clock drift
        self.lo = -math.inf
        self.hi = math.inf
        self.updated = -math.inf  # local time of the last sample

    def update(self, now_redis: float, start: float, end: float) -> None:
        """Take one sample: Redis said `now_redis` during the call made from `start` to `end`."""
        widen = self.drift * max(0.0, end - self.updated) if math.isfinite(self.updated) else 0.0
        lo, hi = max(self.lo - widen, now_redis - end), min(self.hi + widen, now_redis - start)
        if lo > hi:  # contradicts what we knew: the clock was stepped, believe the new sample
            lo, hi = now_redis - end, now_redis - start
        self.lo, self.hi, self.updated = lo, hi, end

    def local_span(self, redis_time: float) -> tuple[float, float]:
        """The earliest and latest local times that `redis_time` can be."""
        return redis_time - self.hi, redis_time - self.lo
