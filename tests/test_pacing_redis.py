"""The shared (Redis) pacer against a real redis-server on 127.0.0.1: the booking rule, several
pacers (and processes) on one account within the limit together, a 429 holding them all, the
namespace hiding the key, the heartbeat showing who shares the budget. Losing Redis is in
test_pacing_redis_failover.py.

Time is scaled as the emulator's is: a 100 ms window with a limit of 5 (or 6) stands for the
service's one-second window, so each test runs for well under two seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
from pacing_redis_support import (
    API_KEY,
    CAP,
    GROUP,
    busiest,
    fresh_ns,
    make_pacers,
    none_live,
    record_acquires,
    running,
    until,
)
from redis_server import RedisServer, own_redis_server, redis_server

from pipeline.core.lanes import Lane
from pipeline.pacing.redis_keys import default_namespace, group_keys, live_processes
from pipeline.pacing.redis_pacer import booking_round_trip
from pipeline.pacing.redis_script import ClockBounds, LocalBook, earliest_slot

__all__ = ["own_redis_server", "redis_server"]  # the fixtures, imported for pytest to find
ROOT = Path(__file__).resolve().parents[1]  # subprocesses import `pipeline` from the checkout

# ---- the booking rule, pure ---------------------------------------------------------------

@pytest.mark.parametrize(("now", "grid_next", "pause", "bounds", "expected"), [
    (10.0, -1e9, 0.0, [], 10.0),                 # idle: the grid restarts at now
    (10.0, 10.05, 0.0, [], 10.05),               # busy: the next grid slot, in the future
    (10.0, 9.99, 0.0, [], 9.99),                 # less than one interval behind: catch up on the grid
    (10.0, 9.8, 0.0, [], 10.0),                  # more than one interval behind: restart, no burst
    (10.0, 10.05, 10.3, [], 10.3),               # a pause pushes the slot past it
    (10.0, 10.0, 0.0, [9.95, 9.96, 9.97, 9.98, 9.99], 9.95 + 0.102),  # limit reached: guard
    (10.0, 10.0, 0.0, [9.96, 9.97, 9.98, 9.99], 10.0),                # below the limit: no guard
    (10.0, 10.0, 0.0, [9.0, 9.1, 9.2, 9.3, 9.4], 10.0),               # old entries no longer count
])
def test_earliest_slot_table(now: float, grid_next: float, pause: float, bounds: list[float],
                             expected: float) -> None:
    """The booking rule places a slot on the grid, after a pause, and clear of the guard window."""
    slot = earliest_slot(now, grid_next=grid_next, interval=0.1, pause=pause, bounds=bounds, limit=5, guard=0.102)
    assert slot == pytest.approx(expected)


def test_local_book_never_puts_more_than_limit_in_a_window() -> None:
    """The in-process fallback books back-to-back requests with at most `limit` per guard window."""
    book = LocalBook(interval=0.01, limit=2, guard=0.102, hold=0.03)
    slots = [book.book(0.0, f"m{i}", pause=0.0) for i in range(8)]
    assert busiest(slots) <= 2
    assert slots == sorted(slots)


def test_clock_bounds_keep_the_fastest_round_trip_and_follow_a_step() -> None:
    """Offset bounds narrow to the fastest exchange, ignore a slow one, and restart after a clock step."""
    bounds = ClockBounds(drift=0.0)
    bounds.update(1000.0, start=10.0, end=10.010)  # a slow first exchange: 10 ms wide
    bounds.update(1000.5, start=10.5, end=10.5002)  # a fast one narrows the bounds to 0.2 ms
    bounds.update(1001.0, start=10.9, end=11.1)  # a slow one changes nothing
    assert (bounds.lo, bounds.hi) == pytest.approx((989.9998, 990.0))
    assert bounds.local_span(1002.0) == pytest.approx((12.0, 12.0002))
    bounds.update(2001.5, start=11.5, end=11.5001)  # Redis' clock stepped 1000 s: start again
    assert (bounds.lo, bounds.hi) == pytest.approx((1989.9999, 1990.0))


def test_the_shared_pacer_offers_no_spare_slots() -> None:
    """With the Redis limiter no poller gets a spare-slot signal (a slot idle in this process may be
    booked by another a moment later), so polls keep their own schedule."""
    pacers = make_pacers("redis://127.0.0.1:1/0", fresh_ns())  # never connects: nothing runs
    assert pacers.spare_slots(CAP) is None


# ---- several pacers on one Redis ------------------------------------------------------------

async def test_three_pacers_share_one_limit(redis_server: RedisServer) -> None:
    """Three pacers on one account never put more than 5 grants in a 100 ms window and reach >= 0.9 of 50/s."""
    ns = fresh_ns()
    pacers = [make_pacers(redis_server.url, ns, pid=i) for i in range(3)]
    times: list[float] = []
    async with running(*pacers):
        async with anyio.create_task_group() as tg:
            for pacer in pacers:
                tg.start_soon(record_acquires, pacer, times, 20)
    assert len(times) == 60
    assert busiest(times) <= 5
    rate = (len(times) - 1) / (max(times) - min(times))
    assert rate >= 0.9 * 50, f"aggregate {rate:.1f}/s"
    assert not any(p.degraded for p in pacers)


def test_separate_processes_share_one_limit(redis_server: RedisServer, tmp_path: Path) -> None:
    """Three OS processes booking in one Redis keep every 100 ms window at 5 grants or fewer."""
    script = tmp_path / "booker.py"
    script.write_text(BOOKER)
    ns = fresh_ns()
    procs = [subprocess.Popen([sys.executable, str(script), redis_server.url, ns, "15"], stdout=subprocess.PIPE,
                              cwd=ROOT) for _ in range(3)]
    times: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        times += json.loads(out)
    assert len(times) == 45
    assert busiest(times) <= 5


#: One "process" of the multi-process test: books N slots, prints their wall-clock times.
BOOKER = """
import json, sys, time
import anyio
from pipeline.core.lanes import Lane
from pipeline.pacing.redis_pacer import RedisPacers

async def main(url, ns, count):
    pacers = RedisPacers({"image-object-detection": 50.0}, polls_share=True, url=url, namespace=ns,
                         windows={"image-object-detection": (0.1, 5)})
    times = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(pacers.run)
        for _ in range(count):
            permit = await pacers.acquire("object_detection", Lane.SUBMIT)
            times.append(time.time())
            permit.answered()
        tg.cancel_scope.cancel()
    print(json.dumps(times))

anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


async def test_pause_from_one_pacer_holds_the_others(redis_server: RedisServer) -> None:
    """A 429 pause set through one pacer holds the next grant of another for the pause's length."""
    ns = fresh_ns()
    first, second = make_pacers(redis_server.url, ns, pid=1), make_pacers(redis_server.url, ns, pid=2)
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        async with running(first, second):
            await second.acquire(CAP, Lane.SUBMIT)
            start = anyio.current_time()
            first.pause(CAP, 0.3)
            await until(lambda: client.hexists(group_keys(ns, GROUP)[0], "pause"))
            await second.acquire(CAP, Lane.SUBMIT)
            held = anyio.current_time() - start
    finally:
        await client.aclose()
    assert held >= 0.28, f"held only {held:.3f} s"


async def test_late_wake_up_gives_the_slot_up(redis_server: RedisServer) -> None:
    """A dispatcher that wakes well after its slot books again instead of sending late."""
    ns = fresh_ns()
    pacers = make_pacers(redis_server.url, ns)
    group = pacers[GROUP]
    overslept = [False]

    async def late_sleep(seconds: float) -> None:
        extra = 0.0 if overslept[0] else 4 * group.tolerance  # the first sleep oversleeps
        overslept[0] = True
        await anyio.sleep(seconds + extra)

    group._sleep = late_sleep  # the injectable sleep of this one group
    async with running(pacers):
        await pacers.acquire(CAP, Lane.SUBMIT)  # books from idle: slot is now, no sleep
        await pacers.acquire(CAP, Lane.SUBMIT)  # its sleep overshoots: given up, booked again
        await pacers.acquire(CAP, Lane.SUBMIT)  # this booking removes the given-up entry
    assert group.given_up == 1
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        members = await client.zrange(group_keys(ns, GROUP)[1], 0, -1)
    finally:
        await client.aclose()
    assert len(members) == 3  # three sent, the given-up one gone


async def test_booking_survives_a_script_flush(redis_server: RedisServer) -> None:
    """When Redis forgot the script (NOSCRIPT), the booking falls back to EVAL and goes on in Redis."""
    pacers = make_pacers(redis_server.url, fresh_ns())
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        async with running(pacers):
            await pacers.acquire(CAP, Lane.SUBMIT)
            await client.script_flush()
            await pacers.acquire(CAP, Lane.SUBMIT)
    finally:
        await client.aclose()
    assert not pacers.degraded


# ---- keys, heartbeat, checks ----------------------------------------------------------------

def test_namespace_hides_the_key_and_tells_accounts_apart() -> None:
    """The default namespace never contains the API key and differs per endpoint and per key."""
    ns = default_namespace("https://a.example.com", API_KEY)
    assert API_KEY not in ns and "0123456789" not in ns
    assert ns == default_namespace("https://a.example.com/", API_KEY)  # the same endpoint, written twice
    assert ns != default_namespace("https://b.example.com", API_KEY)
    assert ns != default_namespace("https://a.example.com", API_KEY + "x")


async def test_keys_written_in_redis_never_hold_the_api_key(redis_server: RedisServer) -> None:
    """Every key and value a run leaves in Redis is free of the API key."""
    ns = default_namespace(f"http://127.0.0.1:{redis_server.port}", API_KEY)
    pacers = make_pacers(redis_server.url, ns)
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        async with running(pacers):
            permit = await pacers.acquire(CAP, Lane.SUBMIT)
            assert permit is not None
            permit.answered()
            pacers.pause(CAP, 0.01)
            await until(lambda: client.exists(f"{ns}:proc:test-host:1"))
            keys = [k async for k in client.scan_iter(match=f"{ns}:*")]
            dump = json.dumps({k: str(await client.dump(k)) for k in keys})
    finally:
        await client.aclose()
    assert len(keys) >= 3  # grid, sent set, heartbeat
    assert API_KEY not in dump and "0123456789" not in dump


async def test_heartbeat_is_listed_and_expires(redis_server: RedisServer) -> None:
    """live_processes lists a running pacer's heartbeat; the key has a TTL and is gone once stopped."""
    ns = fresh_ns()
    pacers = make_pacers(redis_server.url, ns, pid=4242, heartbeat_ttl=0.3)
    async with running(pacers):
        await until(lambda: live_processes(redis_server.url, ns))
        found = await live_processes(redis_server.url, ns)
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            ttl_ms = await client.pttl(f"{ns}:proc:test-host:4242")
        finally:
            await client.aclose()
    assert [(p["host"], p["pid"]) for p in found] == [("test-host", 4242)]
    assert "started_at" in found[0]
    assert 0 < ttl_ms <= 300
    await until(lambda: none_live(redis_server.url, ns), within=1.0)


async def test_heartbeat_of_a_killed_process_expires(redis_server: RedisServer, tmp_path: Path) -> None:
    """A process killed with SIGKILL leaves no clean-up, yet its heartbeat disappears after its TTL."""
    script = tmp_path / "beater.py"
    script.write_text(BEATER)
    ns = fresh_ns()
    async with await anyio.open_process([sys.executable, str(script), redis_server.url, ns], cwd=ROOT) as proc:
        await until(lambda: live_processes(redis_server.url, ns), within=20)
        proc.kill()
        await proc.wait()
        killed_at = anyio.current_time()
        await until(lambda: none_live(redis_server.url, ns), within=2.0)
    assert anyio.current_time() - killed_at <= 0.5


BEATER = """
import sys
import anyio
from pipeline.pacing.redis_pacer import RedisPacers

pacers = RedisPacers({"image-object-detection": 50.0}, polls_share=True, url=sys.argv[1], namespace=sys.argv[2],
                     heartbeat_every=0.05, heartbeat_ttl=0.3)
anyio.run(pacers.run)
"""


async def test_booking_round_trip_is_measured(redis_server: RedisServer) -> None:
    """The bench helper reports a median booking round trip in (0, 50 ms) against a local Redis."""
    median = await booking_round_trip(redis_server.url, samples=50)
    assert 0 < median < 0.05
