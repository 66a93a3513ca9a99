"""Healthchecks-style pings: paths per outcome, one retry, short budget, never raising, host-only logs."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.observe.pings import BODY_LIMIT, Pinger

SECRET = "0f3a1c9e-secret-check-uuid"


@dataclass
class PingServer:
    """A local ping endpoint: records requests, answers with queued statuses (then 200)."""

    server: TestServer
    received: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # method, path, rid, body
    queries: list[str] = field(default_factory=list)  # each request's raw query string, as sent
    statuses: list[int] = field(default_factory=list)
    hang: asyncio.Event | None = None  # when set to an Event, requests wait for it

    def url(self) -> str:
        """The check's ping URL on this server."""
        return str(self.server.make_url(f"/ping/{SECRET}"))


@pytest.fixture
async def hc() -> AsyncIterator[PingServer]:
    """A running PingServer on a random local port."""

    async def ping(request: web.Request) -> web.Response:
        state.received.append((request.method, request.path, request.query.get("rid", ""), await request.read()))
        state.queries.append(request.query_string)
        if state.hang is not None:
            await state.hang.wait()
        return web.Response(status=state.statuses.pop(0) if state.statuses else 200, text="OK")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ping)
    server = TestServer(app, host="127.0.0.1")
    state = PingServer(server)
    async with server:
        yield state
        if state.hang is not None:
            state.hang.set()  # let a parked handler return so the server can close at once


class Sleeps:
    """A stand-in for asyncio.sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_start_then_success(hc: PingServer) -> None:
    """A run that exits 0 pings URL/start then URL (trailing slash stripped), both with one run id."""
    pinger = Pinger(hc.url() + "/", sleep=Sleeps())
    assert await pinger.start() is True
    assert await pinger.finish(0) is True
    assert [(m, p) for m, p, _, _ in hc.received] == [("GET", f"/ping/{SECRET}/start"), ("GET", f"/ping/{SECRET}")]
    rids = {rid for _, _, rid, _ in hc.received}
    assert len(rids) == 1 and rids != {""}


async def test_start_then_failure_code(hc: PingServer) -> None:
    """A run that exits 5 pings URL/start then URL/5."""
    pinger = Pinger(hc.url(), sleep=Sleeps())
    await pinger.start()
    await pinger.finish(5)
    assert [p for _, p, _, _ in hc.received] == [f"/ping/{SECRET}/start", f"/ping/{SECRET}/5"]


@pytest.mark.parametrize("query", ["token=abc", "token=a%2Bb%26c&x=", "flag", "rid=mine&token=abc"])
async def test_a_query_string_stays_the_query(hc: PingServer, query: str) -> None:
    """A ping URL with a query gets its suffix on the path and keeps its query byte for byte,
    with the run id added (a `rid` of the user's own is replaced, so start and end still pair)."""
    pinger = Pinger(f"{hc.url()}/?{query}#frag", sleep=Sleeps())
    assert await pinger.start() is True
    assert await pinger.finish(3, body="log") is True
    assert [(m, p) for m, p, _, _ in hc.received] == [("GET", f"/ping/{SECRET}/start"), ("POST", f"/ping/{SECRET}/3")]
    kept = "&".join(part for part in query.split("&") if not part.startswith("rid="))
    rid = hc.received[0][2]
    assert hc.queries == [f"{kept}&rid={rid}"] * 2
    assert rid != "mine" and hc.received[1][2] == rid


async def test_finish_posts_the_tail_of_a_body(hc: PingServer) -> None:
    """A body is POSTed, cut to its last BODY_LIMIT bytes so the end of the log survives."""
    body = "x" * BODY_LIMIT + "outcome: completed"
    assert await Pinger(hc.url(), sleep=Sleeps()).finish(1, body=body) is True
    method, path, _, sent = hc.received[0]
    assert (method, path) == ("POST", f"/ping/{SECRET}/1")
    assert len(sent) == BODY_LIMIT and sent.endswith(b"outcome: completed")


async def test_server_error_is_retried_once(hc: PingServer) -> None:
    """A 500 is retried once after the retry delay, and the retry's success counts."""
    hc.statuses[:] = [500]
    sleeps = Sleeps()
    assert await Pinger(hc.url(), retry_delay=1.5, sleep=sleeps).start() is True
    assert len(hc.received) == 2 and sleeps.delays == [1.5]


async def test_at_most_one_retry(hc: PingServer, caplog: pytest.LogCaptureFixture) -> None:
    """Two 503s in a row give up after the single retry, returning False with one warning."""
    hc.statuses[:] = [503, 503, 503]
    with caplog.at_level(logging.DEBUG, logger="pipeline.pings"):
        assert await Pinger(hc.url(), sleep=Sleeps()).finish(0) is False
    assert len(hc.received) == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"health ping (exit 0) to 127.0.0.1:{hc.server.port} failed: PingRefused (HTTP 503)"]


async def test_client_error_is_not_retried(hc: PingServer) -> None:
    """A 404 (unknown check) is not retried: it will not get better."""
    hc.statuses[:] = [404]
    sleeps = Sleeps()
    assert await Pinger(hc.url(), sleep=sleeps).start() is False
    assert len(hc.received) == 1 and sleeps.delays == []


@pytest.mark.parametrize(("status", "hint"), [(401, "the ping URL's credentials were refused: fix them in --ping-url"),
                                              (404, "no check at that URL: fix --ping-url")])
async def test_a_refused_ping_says_what_to_fix(hc: PingServer, caplog: pytest.LogCaptureFixture, status: int,
                                              hint: str) -> None:
    """A 401 or 404 (which no retry mends) names the flag to fix, and still never the URL's path."""
    hc.statuses[:] = [status]
    with caplog.at_level(logging.WARNING, logger="pipeline.pings"):
        assert await Pinger(hc.url(), sleep=Sleeps()).start() is False
    assert [r.getMessage() for r in caplog.records] == [
        f"health ping (start) to 127.0.0.1:{hc.server.port} failed: PingRefused (HTTP {status}); {hint}"]


async def test_a_hanging_server_is_cut_off_by_the_budget(hc: PingServer, caplog: pytest.LogCaptureFixture) -> None:
    """A server that never answers costs the ping its time budget, then False and a 'timed out' warning."""
    hc.hang = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="pipeline.pings"):
        assert await Pinger(hc.url(), timeout=0.05, sleep=Sleeps()).start() is False
    assert "timed out" in caplog.text


async def test_dead_server_does_not_raise_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    """With nothing listening, start and finish return False, and one warning names the host, never the path."""
    url = f"http://127.0.0.1:{closed_port()}/ping/{SECRET}"
    sleeps = Sleeps()
    pinger = Pinger(url, sleep=sleeps)
    with caplog.at_level(logging.WARNING, logger="pipeline.pings"):
        assert await pinger.start() is False
        assert await pinger.finish(3) is False
    assert len(caplog.records) == 1
    assert "127.0.0.1" in caplog.text and SECRET not in caplog.text and "/ping" not in caplog.text
    assert sleeps.delays == [1.0, 1.0]  # each ping retried once
    assert SECRET not in repr(pinger)


@pytest.mark.parametrize(("url", "suffix", "expected"), [
    ("https://hc.example/ok?token=abc", "/start", "https://hc.example/ok/start?token=abc&rid=R"),
    ("https://hc.example/ok/?token=abc", "", "https://hc.example/ok?token=abc&rid=R"),
    ("https://hc.example", "/5", "https://hc.example/5?rid=R"),
    ("https://u:p@[::1]:8443/p/x#top", "/start", "https://u:p@[::1]:8443/p/x/start?rid=R"),
    ("https://hc.example/p?a=1&rid=old&b", "/1", "https://hc.example/p/1?a=1&b&rid=R"),
])
def test_ping_target_puts_the_suffix_on_the_path(url: str, suffix: str, expected: str) -> None:
    """The suffix goes on the path, the query is kept with its own rid replaced, the fragment dropped."""
    from pipeline.observe.pings import ping_target

    assert ping_target(url, suffix, "R") == expected
