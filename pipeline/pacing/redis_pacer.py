"""The shared QPS pacer: every process on one account books its send slots in one Redis, so
together they stay within the account's limits (`limiter: redis://…`).

`RedisPacers` is a `PacerBackend` like the memory pacer's `Pacers`; each QPS group is a
`RedisGroupPacer` (redis_group.py), the booking rule is in redis_script.py and key names,
checks and `live_processes` in redis_keys.py.

`RedisLink` is the one connection of a process: it books (EVALSHA of the booking script,
EVAL when Redis answers NOSCRIPT, e.g. after a restart), sends the small updates that need no
answer (a 429's pause, a request's answer time) in the background, writes the heartbeat that
`status` reads, and counts the live processes. When Redis stops answering it says so once and
every group paces itself at its share (limit ÷ processes last seen alive); the heartbeat
loop tries again every `retry_every` seconds and says once when Redis is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import anyio

from ..core.lanes import Lane
from .memory import CapabilityPacers, SpareSlots
from .redis_group import KEY_TTL_MS, RedisGroupPacer
from .redis_keys import connect, display_url, group_keys, proc_key, scan_processes
from .redis_script import BOOK_SCRIPT, PAUSE_SCRIPT, ClockBounds

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisLink", "RedisPacers", "booking_round_trip"]

log = logging.getLogger(__name__)


class RedisLink:
    """This process's connection to the shared pacer, and whether Redis is reachable now."""

    def __init__(self, url: str, namespace: str, *, timeout: float = 1.0, host: str | None = None,
                 pid: int | None = None, clock: Callable[[], float] | None = None) -> None:
        self.url = url
        self.clock = clock or anyio.current_time  # the groups' clock, which `offset` relates to Redis
        self.namespace = namespace
        self.timeout = timeout
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.lost = False  # Redis did not answer; the groups pace themselves
        self.losses = 0  # how many times it was lost (each loss builds fresh fallbacks)
        self.processes = 1  # processes last seen alive in the namespace, this one included
        self.offset = ClockBounds()  # Redis' clock against ours, learned from every booking
        self._client: Redis | None = None  # built in the running loop, on first use
        self._stale: list[Redis] = []  # clients of a lost connection, closed by the heartbeat loop
        self._sha: str | None = None
        self._updates: list[tuple[str, str, str, float]] = []  # (kind, key, member, value)
        self._pending = anyio.Event()

    def __repr__(self) -> str:
        state = "lost" if self.lost else "up"
        return f"RedisLink({display_url(self.url)!r}, {self.namespace!r}, {state}, processes={self.processes})"

    @property
    def client(self) -> Redis:
        if self._client is None:
            self._client = connect(self.url, timeout=self.timeout)
        return self._client

    async def book(self, keys: tuple[str, str], *, interval: float, guard: float, limit: int, hold: float,
                   member: str, drop: str = "", ttl_ms: int = KEY_TTL_MS) -> tuple[float, float, float]:
        """Run the booking script; returns (wait, slot, pause) in seconds, Redis' clock."""
        from redis.exceptions import NoScriptError

        args = (interval, guard, limit, hold, member, drop, ttl_ms)
        client = self.client
        if self._sha is None:
            self._sha = str(await client.script_load(BOOK_SCRIPT))
        try:
            reply = await client.evalsha(self._sha, 2, *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its scripts: EVAL loads it again
            reply = await client.eval(BOOK_SCRIPT, 2, *keys, *args)
        wait, slot, pause = (float(x) for x in reply)
        return wait, slot, pause

    async def prepare(self, samples: int = 3) -> None:
        """Load the script and learn Redis' clock before the first booking (a first booking
        also pays for the connection, which would make its slot look late)."""
        losses = self.losses
        try:
            self._sha = str(await self.client.script_load(BOOK_SCRIPT))
            for _ in range(samples):
                start = self.clock()
                seconds, micros = await self.client.time()
                self.offset.update(seconds + micros / 1e6, start, self.clock())
        except Exception as exc:  # any failure: Redis is not there; the heartbeat tries again
            self.link_down(exc, losses)

    def send_pause(self, grid_key: str, seconds: float) -> None:
        """Queue a shared pause (sent in the background: `pause()` is called from callbacks)."""
        self._queue(("pause", grid_key, "", seconds))

    def send_answered(self, sent_key: str, member: str, at: float) -> None:
        """Queue lowering a booking's arrival bound to `at` (Redis' clock)."""
        self._queue(("answered", sent_key, member, at))

    def _queue(self, update: tuple[str, str, str, float]) -> None:
        if not self.lost:
            self._updates.append(update)
            self._pending.set()

    def link_down(self, exc: BaseException, losses: int) -> None:
        """Redis did not answer a call made when `self.losses` was `losses`: say so once per
        loss; every group falls back. A late failure of a call from before the last recovery
        is not a new loss (its connection died with the old server)."""
        if self.lost or losses != self.losses:
            return
        self.lost = True
        self.losses += 1
        # Pooled connections to a dead server fail once each when reused: start a new pool.
        if self._client is not None:
            self._stale.append(self._client)
            self._client = None
        self._updates.clear()  # nothing to send them to; the local pause still holds here
        log.warning("the Redis limiter at %s stopped answering (%s); pacing this process alone at 1/%d of each "
                    "limit until it is back", display_url(self.url), type(exc).__name__, max(1, self.processes))

    def _on_back(self) -> None:
        self.lost = False
        log.info("the Redis limiter at %s answers again; booking the shared budget there", display_url(self.url))

    async def flush(self) -> None:
        """Send queued updates until cancelled (one pipeline per batch)."""
        while True:
            await self._pending.wait()
            self._pending = anyio.Event()
            updates, self._updates = self._updates, []
            if not updates or self.lost:
                continue
            losses = self.losses
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for kind, key, member, value in updates:
                        if kind == "pause":
                            pipe.eval(PAUSE_SCRIPT, 1, key, f"{value:.6f}", KEY_TTL_MS)
                        else:  # XX: never re-add a trimmed entry; LT: a bound only comes down
                            pipe.zadd(key, {member: value}, xx=True, lt=True)
                    await pipe.execute()
            except Exception as exc:  # any failure: Redis is not there
                self.link_down(exc, losses)

    async def heartbeat(self, *, every: float, ttl: float, retry_every: float) -> None:
        """Announce this process every `every` s (key TTL `ttl`), count the live ones; while
        Redis is lost, try it again every `retry_every` s. Until cancelled; deletes the key then."""
        record = json.dumps(self.record())
        key = proc_key(self.namespace, self.host, self.pid)
        beats = 0
        try:
            while True:
                beats += 1
                await self._close_stale()
                losses = self.losses
                try:
                    await self.client.set(key, record, px=int(ttl * 1000))
                    self.processes = max(1, len(await scan_processes(self.client, self.namespace)))
                except Exception as exc:  # any failure: Redis is not there
                    self.link_down(exc, losses)
                else:
                    if self.lost:
                        self._on_back()
                # The first beats come quicker: processes starting together must see each other
                # soon, or one that loses Redis early would pace itself to the whole limit.
                await anyio.sleep(retry_every if self.lost else every / WARMUP_BEATS if beats < WARMUP_BEATS else every)
        finally:
            # Best effort, so `status` stops listing us at once; the TTL removes it anyway.
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout), contextlib.suppress(Exception):
                if not self.lost:
                    await self.client.delete(key)

    def record(self) -> dict[str, Any]:
        """What the heartbeat key holds: who shares the budget (never the key or the URL)."""
        return {"host": self.host, "pid": self.pid, "started_at": self.started_at}

    async def _close_stale(self) -> None:
        while self._stale:
            with contextlib.suppress(Exception):
                await self._stale.pop().aclose()

    async def aclose(self) -> None:
        """Close the connection pools (safe to call twice)."""
        if self._client is not None:
            self._stale.append(self._client)
            self._client = None
        await self._close_stale()


#: Heartbeats (and process counts) come this many times faster during the first `every`.
WARMUP_BEATS = 6


class RedisPacers(CapabilityPacers[RedisGroupPacer]):
    """All QPS groups of a run, booked in Redis: a `PacerBackend`, like `Pacers`, plus `link`
    and `degraded`. It connects on first use, so it may be built before the loop runs; `run()`
    goes in the run's task group."""

    def __init__(self, limits: Mapping[str, float], *, polls_share: bool, url: str, namespace: str,
                 windows: Mapping[str, tuple[float, int]] | None = None,
                 weights: Mapping[Lane, float] | None = None,
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
                 heartbeat_every: float = 3.0, heartbeat_ttl: float = 10.0, retry_every: float = 1.0,
                 timeout: float = 1.0, host: str | None = None, pid: int | None = None) -> None:
        windows = windows or {}
        clock = clock or anyio.current_time
        self.link = RedisLink(url, namespace, timeout=timeout, host=host, pid=pid, clock=clock)
        super().__init__({
            group: RedisGroupPacer(self.link, group, qps, window=windows.get(group, (1.0, 0))[0],
                                   limit=windows.get(group, (1.0, 0))[1], weights=weights, clock=clock, sleep=sleep)
            for group, qps in limits.items()}, polls_share=polls_share)
        self._beat = (heartbeat_every, heartbeat_ttl, retry_every)

    def __repr__(self) -> str:
        return f"RedisPacers({self.link!r}, groups={sorted(self._groups)})"

    @property
    def degraded(self) -> bool:
        """True while Redis cannot be reached and each group paces this process alone."""
        return self.link.lost

    def spare_slots(self, capability: str) -> SpareSlots | None:
        """None: no spare-slot polling with a shared budget. A slot this process sees unused may be
        booked by another process a moment later, so whether one is spare would take a Redis round
        trip per look, and a poll spent in it would compete with the other processes' submits
        (which the submit/poll shares only weigh within one process). Polls keep their per-task
        schedule, and still book their slots like any request when they share the budget."""
        return None

    async def run(self) -> None:
        """Dispatchers, the update flusher and the heartbeat, until cancelled."""
        every, ttl, retry_every = self._beat
        try:
            await self.link.prepare()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.link.flush, name="redis-pacer-flush")
                tg.start_soon(lambda: self.link.heartbeat(every=every, ttl=ttl, retry_every=retry_every),
                              name="redis-pacer-heartbeat")
                for pacer in self._groups.values():
                    tg.start_soon(pacer.run, name=f"redis-pacer-{pacer.group}")
        finally:
            with anyio.CancelScope(shield=True):
                await self.link.aclose()


async def booking_round_trip(url: str, samples: int = 200) -> float:
    """The median wall time of one booking call to the Redis at `url`, in seconds (a bench
    figure: what each request pays on top of the memory pacer). Leaves no keys behind."""
    link = RedisLink(url, f"bench-{os.getpid()}-{time.monotonic_ns()}")
    keys = group_keys(link.namespace, "bench")
    times: list[float] = []
    try:
        for i in range(samples):
            start = time.perf_counter()
            # A rate so high that no booking waits: only the round trip is measured.
            await link.book(keys, interval=1e-9, guard=1.0, limit=5, hold=0.3, member=f"m{i}")
            times.append(time.perf_counter() - start)
        await link.client.delete(*keys)
    finally:
        await link.aclose()
    return statistics.median(times)

