"""Helpers of the shared-pacer tests: pacers on one test group, running them, recording grants,
and the sliding-window count every assertion about the limit uses."""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Sequence

import anyio
import anyio.abc
import redis.asyncio as aioredis

from pipeline.core.lanes import Lane
from pipeline.pacing.redis_keys import group_keys, live_processes
from pipeline.pacing.redis_pacer import RedisPacers

#: The test group (a QPS group of the capability table) and a capability drawing from it.
GROUP, CAP = "image-object-detection", "object_detection"
WINDOW = 0.1
API_KEY = "sk-test-secret-0123456789"
_ns_counter = iter(range(10**6))  # with the clock: unique across a session


def fresh_ns() -> str:
    """A namespace of this test alone, so tests on the shared server never meet."""
    return f"t{next(_ns_counter)}-{time.monotonic_ns()}"


def make_pacers(url: str, ns: str, *, limit: int = 5, pid: int = 1, **kw: float) -> RedisPacers:
    """A pacer for one group paced at `limit` per WINDOW, as one 'process' (pid) of three."""
    return RedisPacers({GROUP: limit / WINDOW}, polls_share=True, url=url, namespace=ns,
                       windows={GROUP: (WINDOW, limit)}, host="test-host", pid=pid,
                       heartbeat_every=kw.pop("heartbeat_every", 0.05), heartbeat_ttl=kw.pop("heartbeat_ttl", 1.0),
                       retry_every=kw.pop("retry_every", 0.05), timeout=kw.pop("timeout", 0.5))


@contextlib.asynccontextmanager
async def running(*pacers: RedisPacers) -> AsyncIterator[anyio.abc.TaskGroup]:
    """Run the pacers' background work for the duration of the block, then cancel it."""
    async with anyio.create_task_group() as tg:
        for pacer in pacers:
            tg.start_soon(pacer.run)
        yield tg
        tg.cancel_scope.cancel()


async def record_acquires(pacer: RedisPacers, times: list[float], count: int, workers: int = 3) -> None:
    """Acquire `count` slots with `workers` concurrent callers, recording each grant's time."""
    left = [count]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            permit = await pacer.acquire(CAP, Lane.SUBMIT)
            times.append(anyio.current_time())
            assert permit is not None
            permit.answered()  # an instant answer: the request "arrived" when it left

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)


def busiest(times: Sequence[float], window: float = WINDOW) -> int:
    """The most grants any window of `window` seconds holds."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


async def until(condition: Callable[[], object], within: float = 5.0) -> None:
    """Poll a plain or async condition every 10 ms until it holds (fail after `within` s)."""
    with anyio.fail_after(within):
        while True:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await anyio.sleep(0.01)


async def none_live(url: str, ns: str) -> bool:
    """True when no heartbeat of `ns` is left."""
    return not await live_processes(url, ns)


async def has_grid(url: str, ns: str) -> bool:
    """True when the group's grid key exists: a booking was made in this server."""
    client = aioredis.Redis.from_url(url)
    try:
        return bool(await client.exists(group_keys(ns, GROUP)[0]))
    finally:
        await client.aclose()
