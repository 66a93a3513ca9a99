"""The only module that talks to aiohttp's client: one HTTP seam for the OpenSearch services.

Everything above it sees ``ApiResponse`` and the ``core.errors`` tree; aiohttp's own
exceptions are translated here (always ``raise ... from exc``). Retries live here too:
each attempt first waits on the caller's ``throttle`` (its QPS limiter), then sends; after a
retryable failure the request's ``RetryBudget`` (``core.retries``) says how long to wait, via the
injected ``sleep``, or to give up, with a new error that counts the attempts (a caught one is
never changed).

A create (or a synchronous call) is never failed for 429s: another application on the same
account can hold the quota for minutes, so it keeps waiting (the caller's ``sleep`` and
``throttle`` raise ``Stopped`` when the run stops) and a warning says, at most every
``warn_every`` seconds per capability, for how long the service has throttled. A 2xx whose
body cannot be used was accepted: for a create it is ambiguous, like a timeout after sending.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp

from .. import __version__
from ..core.backoff import RetryPolicy
from ..core.capabilities import Capability
from ..core.echo import shown
from ..core.endpoint import PATH_PART, build_base_url
from ..core.errors import (
    ConfigError,
    InvalidParameter,
    RetryableError,
    ServiceError,
    ServiceUnreachable,
    TransportError,
    redact,
)
from ..core.lanes import Lane, PermitLike
from ..core.loggable import WIRE_LOGGER
from ..core.retries import Failure, RetryBudget, failure_of
from .bodies import RequestBody, encode_body
from .responses import ApiResponse, parse_failure, parse_success

__all__ = ["ApiResponse", "ServiceClient", "check_api_key"]

log = logging.getLogger(__name__)
wire = logging.getLogger(WIRE_LOGGER)

USER_AGENT = f"opensearch-media-pipeline/{__version__}"
_MAX_CODE = 60  # characters of a server's error code quoted in a warning
#: Seconds between two "the service has throttled" warnings of one capability, by default.
THROTTLE_WARN_EVERY = 60.0


def check_api_key(api_key: str | None) -> str:
    """The key as it will be sent, or `ConfigError` (exit 2) when it cannot be: empty, or with
    characters an HTTP header cannot carry. A run checks it before anything starts (no ping, no
    state dir), not when its client is built. The key itself is never echoed."""
    key = (api_key or "").strip()
    if not key:
        raise ConfigError("is empty; set the DASHSCOPE_API_KEY environment variable", key="api_key")
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise ConfigError("contains characters not allowed in an HTTP header", key="api_key")
    return key


class ServiceClient:
    """Calls the OpenSearch multimodal services; retries transient failures itself.

    Use as ``async with ServiceClient(...) as client:`` or call ``close()`` (safe twice).
    The aiohttp session is created lazily inside the running loop on the first call; a
    session passed in is used as is and not closed by ``close()``.
    """

    def __init__(
        self,
        endpoint: str,
        workspace: str,
        api_key: str,
        *,
        protocol: str = "https",
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        throttle: Callable[[str, Lane], Awaitable[PermitLike | None]] | None = None,
        on_retry: Callable[[str, ServiceError, float], None] | None = None,
        on_response: Callable[[str, int], None] | None = None,
        on_ambiguous: Callable[[str], None] | None = None,
        connection_limit: int = 100,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
        warn_every: float = THROTTLE_WARN_EVERY,
    ) -> None:
        key = check_api_key(api_key)
        if timeout <= 0:
            raise ConfigError(f"must be > 0 seconds, got {shown(timeout)}", key="timeout")
        if connection_limit < 0:
            raise ConfigError(f"must be >= 0 (0 = unlimited), got {shown(connection_limit)}", key="connection_limit")
        self.base_url = build_base_url(endpoint, protocol, workspace)
        self._where = urlsplit(self.base_url).netloc  # for messages: host and port only
        self._api_key = key  # only for redaction; the header below is what is sent
        self._headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry = retry or RetryPolicy()  # default policy; each call may override it
        self._sleep = sleep  # injected so tests never really wait
        self._rand = rand  # jitter source, [0, 1)
        self._throttle = throttle  # the caller's QPS limiter: (capability, lane), awaited before every attempt
        self._on_retry = on_retry  # (capability, error, delay) before each backoff sleep
        self._on_response = on_response  # (capability, http_status) after every request sent (0: no answer)
        self._on_ambiguous = on_ambiguous  # (capability) before re-sending a create that may have landed
        self._connection_limit = connection_limit
        self._clock = clock  # for how long a capability has been throttled
        self._warn_every = warn_every  # clock seconds between two throttling warnings of a capability
        self._throttled_since: dict[str, float] = {}  # capability -> clock time of its first 429 in a row
        self._warned_at: dict[str, float] = {}  # capability -> clock time of its last throttling warning
        self._session = session  # created lazily in the running loop when None
        self._owns_session = session is None  # only a session we made is ours to close
        self._closed = False

    # -- public calls ------------------------------------------------------------------

    async def submit(
        self, capability: Capability, service_id: str, body: RequestBody | Mapping[str, Any], *,
        retry: RetryPolicy | None = None,
    ) -> ApiResponse:
        """Create an async task (``result`` holds ``task_id``) or, for a synchronous capability,
        make the call (``result`` is the answer). The URL comes from the capability; a
        `RequestBody` is sent as it was encoded, a mapping is encoded here (`encode_body`).

        A create whose outcome is unknown (a timeout or a dropped connection after the body may
        have been sent, or a 2xx whose body cannot be used: no JSON, no result, an async create
        without a task id) may have been accepted and billed: it is retried at most
        ``retry.ambiguous_creates`` times, and ``on_ambiguous`` is told of each such retry.
        429s never end it: it waits for as long as the service throttles (see the module docstring).
        """
        url = self._url(capability.segment, service_id) + ("/async" if capability.is_async else "")
        data = body.data if isinstance(body, RequestBody) else encode_body(body)
        return await self._call("POST", capability.name, url, data=data, params=None, retry=retry,
                                needs="task_id" if capability.is_async else None)

    async def get_task_status(
        self, capability: Capability, service_id: str, task_id: str, *, retry: RetryPolicy | None = None
    ) -> ApiResponse:
        """GET ``{ws}/{segment}/{service_id}/async/task-status?task_id=…``; ``result`` holds ``status``.

        429s draw on ``retry.max_rate_limited`` and then raise ``RateLimited``: the poller
        passes a single-shot policy and reschedules the poll itself, never failing the task."""
        url = f"{self._url(capability.segment, service_id)}/async/task-status"
        return await self._call("GET", capability.name, url, data=None, params={"task_id": task_id}, retry=retry,
                                needs="status")

    async def close(self) -> None:
        """Close the session if this client created it. Safe to call more than once."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._session is not None else "idle")
        return f"<ServiceClient {self.base_url} timeout={self._timeout.total}s {state}>"

    # -- internals ---------------------------------------------------------------------

    def _url(self, segment: str, service_id: str) -> str:
        for name, value in (("segment", segment), ("service_id", service_id)):
            if not isinstance(value, str) or not PATH_PART.fullmatch(value):
                raise InvalidParameter(
                    "InvalidParameter",
                    f"{name} {shown(value)} is not valid: expected letters, digits, '.', '_' or '-'",
                )
        return f"{self.base_url}/{segment}/{service_id}"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("ServiceClient is closed; create a new one")
        if self._session is None:
            # Built here, inside the running loop, never at import or construction time.
            connector = aiohttp.TCPConnector(limit=self._connection_limit)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _call(
        self,
        method: str,
        capability: str,
        url: str,
        *,
        data: bytes | None,
        params: dict[str, str] | None,
        retry: RetryPolicy | None,
        needs: str | None,
    ) -> ApiResponse:
        policy = retry or self._retry
        create = method == "POST"  # a create or a synchronous call: may be billed, never failed by 429s
        budget = RetryBudget(policy, create=create)
        while True:
            permit = None
            if self._throttle is not None:
                # every attempt, retries included, passes the limiter; status checks in the poll lane
                permit = await self._throttle(capability, Lane.POLL if method == "GET" else Lane.SUBMIT)
            try:
                try:
                    response = await self._send(method, capability, url, data, params, needs=needs)
                finally:
                    if permit is not None:
                        permit.answered()
            except RetryableError as err:
                failure = failure_of(err, create=create)
                verdict = budget.after(failure, self._rand, err.retry_after)
                budget = verdict.budget
                if verdict.warn_throttled:
                    self._warn_throttled(capability, budget.rate_limited, err)
                if verdict.delay is None:
                    self._give_up(err, failure, budget)
                log.debug("%s %s: %s; retrying in %.2fs", method, capability, err, verdict.delay)
                if self._on_retry is not None:
                    self._on_retry(capability, err, verdict.delay)
                if failure is Failure.AMBIGUOUS and self._on_ambiguous is not None:
                    self._on_ambiguous(capability)
                await self._sleep(verdict.delay)
            except ServiceError as err:
                raise err.with_attempts(budget.next_attempt) from err.__cause__
            else:
                attempts = budget.next_attempt
                return replace(response, attempts=attempts) if attempts != 1 else response

    def _give_up(self, err: RetryableError, failure: Failure, budget: RetryBudget) -> NoReturn:
        """Raise the error a request ends with once its budget is spent: a new one, with the
        attempts made (and, for a create that may have landed, a word on billing)."""
        if isinstance(err, TransportError) and not err.maybe_sent:
            raise ServiceUnreachable("ServiceUnreachable", f"cannot reach {self._where}: {err.message}",
                                     attempts=budget.attempts) from err
        note = ""
        if failure is Failure.AMBIGUOUS:
            sent = "once" if budget.ambiguous == 1 else f"{budget.ambiguous} times"
            note = (f" (sent {sent} with no usable answer: the service may have accepted, and billed, it; "
                    "`run --retry-failed` sends it again)")
        raise err.with_attempts(budget.attempts, note=note) from err.__cause__

    async def _send(
        self, method: str, capability: str, url: str, data: bytes | None, params: dict[str, str] | None,
        *, needs: str | None = None,
    ) -> ApiResponse:
        """One HTTP exchange, translated: ApiResponse or a ServiceError, never an aiohttp error.
        A 2xx whose result lacks ``needs`` (a non-empty string) is `UnreadableResponse`."""
        session = self._get_session()
        started = time.monotonic() if wire.isEnabledFor(logging.DEBUG) else None
        try:
            async with session.request(
                method,
                url,
                params=params,
                data=data,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,  # a redirect means a wrong endpoint; following it would turn POST into GET
            ) as resp:
                raw = await resp.read()
                status = resp.status
                headers = resp.headers
                reason = resp.reason or ""
        except (asyncio.TimeoutError, TimeoutError) as exc:  # includes aiohttp.ServerTimeoutError
            self._log_exchange(started, method, url, "timeout")
            self._sent_unanswered(capability)
            raise TransportError(
                "Timeout", self._redact(f"no answer within {self._timeout.total}s ({str(exc) or type(exc).__name__})")
            ) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS: nothing was sent
            self._log_exchange(started, method, url, "not connected")
            raise TransportError(
                "ConnectionError", self._redact(f"{type(exc).__name__}: {exc}"), maybe_sent=False
            ) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            self._log_exchange(started, method, url, "connection dropped")
            self._sent_unanswered(capability)
            raise TransportError(
                "ConnectionError", self._redact(f"{type(exc).__name__}: {exc}")
            ) from exc
        except aiohttp.ClientError as exc:  # a malformed HTTP answer and the like: transient at best
            self._sent_unanswered(capability)
            raise TransportError(
                "ConnectionError", self._redact(f"{type(exc).__name__}: {exc}")
            ) from exc

        self._log_exchange(started, method, url, status, headers.get("x-acs-request-id"))
        if self._on_response is not None:
            self._on_response(capability, status)
        if status == 429:
            self._throttled_since.setdefault(capability, self._clock())
        elif self._throttled_since.pop(capability, None) is not None:
            self._warned_at.pop(capability, None)  # the spell is over; the next one warns afresh
        header_request_id = headers.get("x-acs-request-id")
        if 200 <= status <= 299:
            return parse_success(status, raw, header_request_id, self._redact, needs=needs)
        raise parse_failure(status, reason, raw, header_request_id, headers.get("Retry-After"), redact=self._redact)

    def _sent_unanswered(self, capability: str) -> None:
        """A request went out and no answer came (a timeout, a dropped connection): it counts as a
        request all the same (the service may have processed, and billed, it), with status 0."""
        if self._on_response is not None:
            self._on_response(capability, 0)

    def _log_exchange(self, started: float | None, method: str, url: str, answer: int | str,
                      request_id: str | None = None) -> None:
        """-vv: one line per exchange (`started` is None unless the wire logger is on)."""
        if started is not None:
            path = url[len(self.base_url):] if url.startswith(self.base_url) else url
            wire.debug("%s %s -> %s in %.0f ms%s", method, path, answer, (time.monotonic() - started) * 1000,
                       f" (request {request_id[:64]})" if request_id else "")

    def _warn_throttled(self, capability: str, answers: int, err: ServiceError) -> None:
        """Say, at most every `warn_every` seconds per capability, that the service has throttled it."""
        now = self._clock()
        last = self._warned_at.get(capability)
        if last is not None and now - last < self._warn_every:
            return
        self._warned_at[capability] = now
        seconds = now - self._throttled_since.get(capability, now)
        lasted = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} minutes"
        log.warning("the service has throttled %s for %s (%d answers 429 %s in a row to one request); another "
                    "application on this account may be using its quota. The run keeps waiting: it is slow, "
                    "not broken, and fails nothing for it; --max-duration bounds it, Ctrl-C stops it resumably",
                    capability, lasted, answers, err.code[:_MAX_CODE])

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)
