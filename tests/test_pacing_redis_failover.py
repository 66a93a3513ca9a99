"""The shared pacer when Redis is not there: a clear reason before a run (check_redis), and a
run that keeps pacing, degraded, while Redis is down and books there again when it is back."""

from __future__ import annotations

import logging
import socket

import anyio
import pytest
from pacing_redis_support import CAP, busiest, fresh_ns, has_grid, make_pacers, running, until
from redis_server import RedisServer, own_redis_server, redis_server

from pipeline.core.lanes import Lane
from pipeline.pacing.redis_keys import check_redis

__all__ = ["own_redis_server", "redis_server"]  # the fixtures, imported for pytest to find


async def test_check_redis_reports_a_closed_port_without_the_password() -> None:
    """check_redis names the URL of a Redis that cannot be reached and hides the password in it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    reason = await check_redis(f"redis://user:hunter2pass@127.0.0.1:{port}/0", timeout=0.5)
    assert reason is not None
    assert f"127.0.0.1:{port}" in reason and "user:***@" in reason
    assert "hunter2pass" not in reason


async def test_check_redis_accepts_a_running_server(redis_server: RedisServer) -> None:
    """check_redis has nothing to say about a Redis that answers."""
    assert await check_redis(redis_server.url) is None


async def test_redis_lost_mid_run_degrades_then_recovers(own_redis_server: RedisServer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Killing Redis mid-run keeps every pacer granting at its share (limit / 3) with one warning
    each; restarting it on the same port brings booking back with one info line each."""
    server, ns = own_redis_server, fresh_ns()
    pacers = [make_pacers(server.url, ns, limit=6, pid=i) for i in range(3)]
    grants: list[tuple[float, int, bool]] = []  # (time, pacer, degraded at grant)
    stop = anyio.Event()

    async def worker(index: int) -> None:
        while not stop.is_set():
            permit = await pacers[index].acquire(CAP, Lane.SUBMIT)
            grants.append((anyio.current_time(), index, pacers[index].degraded))
            assert permit is not None
            permit.answered()

    with caplog.at_level(logging.INFO, logger="pipeline"):
        async with running(*pacers) as tg:
            await until(lambda: all(p.link.processes == 3 for p in pacers))
            for i in range(3):
                for _ in range(2):
                    tg.start_soon(worker, i)
            await until(lambda: {i for _, i, _ in grants} == {0, 1, 2})  # every pacer books through Redis
            server.kill()
            await until(lambda: all(p.degraded for p in pacers))
            lost_at = anyio.current_time()

            def granted_in_outage(i: int) -> int:
                return sum(1 for t, j, degraded in grants if j == i and degraded and t > lost_at + 0.15)

            await until(lambda: all(granted_in_outage(i) >= 6 for i in range(3)), within=30)  # a state, not a time
            server.start()
            await until(lambda: not any(p.degraded for p in pacers))
            back_at = anyio.current_time()
            await until(lambda: has_grid(server.url, ns))  # booking resumed in the new server
            stop.set()
            await until(lambda: len(grants) > 0)
            tg.cancel_scope.cancel()

    outage = [(t, i) for t, i, degraded in grants if degraded and lost_at + 0.15 < t < back_at]
    for i in range(3):
        mine = [t for t, j in outage if j == i]
        assert len(mine) >= 5, f"pacer {i} granted only {len(mine)} while Redis was down"
        assert busiest(mine) <= 2  # its share: limit 6 / 3 processes
    assert busiest([t for t, _ in outage]) <= 6
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "answers again" in r.getMessage()]
    assert len(warnings) == 3 and all(server.url in r.getMessage() for r in warnings)
    assert len(infos) == 3


@pytest.mark.parametrize(("text", "expected"), [("6.2.14", (6, 2, 14)), ("7.0", (7, 0)), ("x.y", (0,))])
def test_redis_version_parsing(text: str, expected: tuple[int, ...]) -> None:
    """The version check reads Redis' dotted version and treats garbage as too old."""
    from pipeline.pacing.redis_keys import _version

    assert _version(text) == expected
