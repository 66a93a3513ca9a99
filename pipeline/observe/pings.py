"""Dead-man's-switch pings for scheduled runs, in the Healthchecks convention.

`URL/start` when the run starts, `URL` when it ends with exit code 0, `URL/<exit code>`
otherwise (Healthchecks marks a non-zero code as a failure). Every ping of one run carries
the same `rid` query parameter, so Healthchecks pairs start and end (run duration) even when
two runs overlap. A run that never pings its end is reported by Healthchecks itself, which
is the point: the ping must be cheap and must never be the reason a run fails.

A ping URL may carry a query (`https://host/ok?token=abc`): the suffix goes on the path and the
query is kept as written, `rid` added (`/ok/start?token=abc&rid=…`); a fragment is never sent.

So a ping has a short total time budget, one attempt plus at most one retry (only for
connection errors, timeouts, 429 and 5xx), and a failure is logged once per `Pinger` with
the host only: the path of a ping URL is its secret.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from ..core.loggable import host_of, safe_reason

log = logging.getLogger("pipeline.pings")

#: Healthchecks keeps at most this much of a ping body (its default PING_BODY_LIMIT).
BODY_LIMIT = 10_000


class PingRefused(Exception):
    """The ping endpoint answered with an HTTP error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def ping_target(url: str, suffix: str, run_id: str) -> str:
    """`url` with `suffix` ("/start", "/3" or "") on its path and `rid=run_id` ending its query.

    The user's query is kept byte for byte (only a `rid` of its own is dropped, so every ping
    of the run carries one run id); a trailing slash does not double ("URL/" -> "URL/start").
    """
    parts = urlsplit(url)
    kept = [part for part in parts.query.split("&") if part and part.split("=", 1)[0] != "rid"]
    query = "&".join([*kept, "rid=" + quote(run_id, safe="")])
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix, query=query, fragment=""))


class Pinger:
    """Start and end pings of one run. Never raises; returns whether the ping got through."""

    __slots__ = ("_host", "_retry_delay", "_run_id", "_sleep", "_timeout", "_url", "_warned")

    def __init__(self, url: str, *, timeout: float = 5.0, retry_delay: float = 1.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, run_id: str | None = None) -> None:
        self._url = url
        self._host = host_of(url)  # the only part of the URL that is ever logged
        self._timeout = timeout  # seconds for a whole ping, retry included
        self._retry_delay = retry_delay  # pause before the one retry
        self._sleep = sleep  # injected so tests do not wait
        self._run_id = run_id or str(uuid.uuid4())  # Healthchecks `rid`: pairs start and end
        self._warned = False  # one warning per run is enough; later failures go to debug

    async def start(self) -> bool:
        """Ping `URL/start`: the run has begun."""
        return await self._ping("/start", None, "start")

    async def finish(self, exit_code: int, *, body: str | None = None) -> bool:
        """Ping `URL` (exit 0) or `URL/<exit code>`; `body`, when given, is POSTed as the run's log."""
        suffix = "" if exit_code == 0 else f"/{exit_code}"
        return await self._ping(suffix, body, f"exit {exit_code}")

    async def _ping(self, suffix: str, body: str | None, what: str) -> bool:
        try:
            target = ping_target(self._url, suffix, self._run_id)
            await asyncio.wait_for(self._attempts(target, body), self._timeout)
        except Exception as exc:  # a ping must never change the run
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else safe_reason(exc)
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "health ping (%s) to %s failed: %s%s", what, self._host, reason, _hint(exc))
            return False
        return True

    async def _attempts(self, url: str, body: str | None) -> None:
        """One attempt, and one retry after a transient failure; raises the last error."""
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                await self._send(session, url, body)
            except (aiohttp.ClientError, asyncio.TimeoutError, PingRefused) as exc:
                if isinstance(exc, PingRefused) and exc.status != 429 and exc.status < 500:
                    raise  # 4xx (unknown check, bad URL) will not improve on a retry
                await self._sleep(self._retry_delay)
                await self._send(session, url, body)

    async def _send(self, session: aiohttp.ClientSession, url: str, body: str | None) -> None:
        if body is None:
            request = session.get(url)
        else:
            # The end of a log says most about how the run ended; "ignore" drops a split character.
            data = body.encode("utf-8")[-BODY_LIMIT:].decode("utf-8", "ignore").encode("utf-8")
            request = session.post(url, data=data,
                                   headers={"Content-Type": "text/plain; charset=utf-8"})
        async with request as response:
            if response.status >= 400:
                raise PingRefused(response.status)

    def __repr__(self) -> str:
        return f"Pinger(host={self._host}, rid={self._run_id})"


def _hint(exc: BaseException) -> str:
    """What to fix when the endpoint refused the ping itself; nothing for what may pass by itself."""
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return "; the ping URL's credentials were refused: fix them in --ping-url"
    if status == 404:
        return "; no check at that URL: fix --ping-url"
    return ""
