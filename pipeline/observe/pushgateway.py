"""Sending registries to a Pushgateway within one time budget, whatever the gateway does.

prometheus_client's own `push_to_gateway` sends with urllib, whose `timeout` bounds each socket
operation, not the push: a gateway that trickles its answer a byte at a time kept a finished
run from exiting for as long as it trickled. So prometheus_client only builds the requests here
(its documented `handler` hook receives the URL, method, headers and body, and is told not to
send), and aiohttp sends them under one total timeout, cancellable like any coroutine.

Credentials in the gateway URL (`https://user:pass@host`) are sent as basic auth and kept out
of the request URL; nothing here logs (the caller logs the host only).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from ..core.loggable import with_scheme

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["PushRefused", "PushRequest", "push_requests", "send"]


class PushRefused(Exception):
    """The Pushgateway answered with an HTTP error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass(frozen=True)
class PushRequest:
    """One PUT of one group, as prometheus_client builds it."""

    url: str
    method: str
    headers: tuple[tuple[str, str], ...]
    data: bytes


def push_requests(gateway: str, job: str,
                  groups: Sequence[tuple[Mapping[str, str], CollectorRegistry]]) -> list[PushRequest]:
    """The PUTs replacing each (grouping key, registry) group of `job`, credentials left out of the URLs."""
    from prometheus_client import push_to_gateway

    built: list[PushRequest] = []

    def capture(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        built.append(PushRequest(url, method, tuple(headers), data))
        return lambda: None  # built, not sent: `send` does that, under one deadline

    for grouping_key, registry in groups:
        push_to_gateway(_without_credentials(gateway), job=job, registry=registry, grouping_key=dict(grouping_key),
                        handler=capture)
    return built


async def send(requests: Sequence[PushRequest], *, gateway: str, timeout: float) -> None:
    """Send `requests` in order, all within `timeout` seconds; raises on the first failure
    (`PushRefused` for an HTTP error status, `TimeoutError` past the budget)."""
    parts = urlsplit(with_scheme(gateway))
    auth: dict[str, str] = {}
    if parts.username is not None:  # by hand: aiohttp.BasicAuth is deprecated, its successor too new
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    async def all_of_them() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            for request in requests:
                async with session.request(request.method, request.url, data=request.data,
                                           headers={**dict(request.headers), **auth}) as response:
                    if response.status >= 400:
                        raise PushRefused(response.status)

    await asyncio.wait_for(all_of_them(), timeout)  # the session's total is per request: this is the push's


def _without_credentials(url: str) -> str:
    """`url` with a scheme and without `user:password@` (an IPv6 literal keeps its brackets)."""
    parts = urlsplit(with_scheme(url))
    if parts.username is None:
        return urlunsplit(parts)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
