"""ServiceClient at the wire: paths, headers, status -> exception mapping and retry sequences (aioresponses),
ambiguous creates, and an unreachable endpoint (a real closed port on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
from types import SimpleNamespace

import aiohttp
import anyio
import pytest
from aioresponses import aioresponses
from support import FakeClock
from yarl import URL

from pipeline import __version__
from pipeline.core.backoff import RetryPolicy
from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.endpoint import build_base_url
from pipeline.core.errors import (
    AuthError,
    ConfigError,
    EndpointError,
    FatalError,
    InvalidParameter,
    RateLimited,
    ServerError,
    ServiceUnreachable,
    TaskNotExist,
    TransportError,
)
from pipeline.core.lanes import Lane
from pipeline.service.bodies import RequestBody
from pipeline.service.client import ApiResponse, ServiceClient

KEY = "sk-test-Secret-0123456789"
BASE = "http://127.0.0.1:8080/v3/openapi/workspaces/default"
IMAGE, DETECTION = CAPABILITIES["image_analyze"], CAPABILITIES["object_detection"]
NAME = IMAGE.name  # callbacks report capability names, not path segments
SEG, SID = IMAGE.segment, "ops-image-analyze-ocr-001"
CREATE = f"{BASE}/{SEG}/{SID}/async"
STATUS = f"{BASE}/{SEG}/{SID}/async/task-status?task_id=task-1"
DETECT = f"{BASE}/image-object-detection/ops-object-detect-001"
BODY = {"document": {"url": "https://example.com/a.png", "file_type": "png"}}
OK = {"request_id": "req-ok", "latency": 12, "result": {"task_id": "task-1"}, "usage": {"pv_count": 1}}


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates the `stream_writer` argument aiohttp 3.14 requires
    (pnuckowski/aioresponses#289); supply a finished-upload stand-in until it catches up."""

    _NEEDS_STREAM_WRITER = "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters

    def __init__(self, *args, **kwargs) -> None:
        if self._NEEDS_STREAM_WRITER:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


class MockServer(aioresponses):
    """aioresponses whose canned responses work on aiohttp 3.14 too."""

    def add(self, url, method="GET", **kwargs) -> None:  # type: ignore[override]
        kwargs.setdefault("response_class", _CompatResponse)
        super().add(url, method, **kwargs)


class FakeSleep:
    """Records requested delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def mocked():
    with MockServer() as m:
        yield m


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
async def make_client(sleep):
    clients: list[ServiceClient] = []

    def make(**kwargs) -> ServiceClient:
        kwargs.setdefault("endpoint", "http://127.0.0.1:8080")
        kwargs.setdefault("workspace", "default")
        kwargs.setdefault("api_key", KEY)
        kwargs.setdefault("sleep", sleep)
        kwargs.setdefault("rand", lambda: 0.5)
        client = ServiceClient(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def calls(mocked, method: str, url: str) -> list:
    return mocked.requests.get((method, URL(url)), [])


# -- URL building ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "protocol", "expected"),
    [
        ("http://127.0.0.1:8080", "http", "http://127.0.0.1:8080/v3/openapi/workspaces/default"),
        ("http://127.0.0.1:8080/", "https", "http://127.0.0.1:8080/v3/openapi/workspaces/default"),
        ("https://host.example", "http", "https://host.example/v3/openapi/workspaces/default"),
        ("xxx.opensearch.aliyuncs.com", "http", "http://xxx.opensearch.aliyuncs.com/v3/openapi/workspaces/default"),
        ("xxx.opensearch.aliyuncs.com", "https", "https://xxx.opensearch.aliyuncs.com/v3/openapi/workspaces/default"),
        ("  localhost:9000 ", "HTTP", "http://localhost:9000/v3/openapi/workspaces/default"),
        ("http://[::1]:8080", "http", "http://[::1]:8080/v3/openapi/workspaces/default"),
    ],
)
def test_build_base_url(endpoint, protocol, expected):
    """A full URL keeps its scheme; a bare host takes the protocol, as in the official SDK."""
    assert build_base_url(endpoint, protocol, "default") == expected


@pytest.mark.parametrize(
    ("endpoint", "protocol", "workspace", "key"),
    [
        ("", "http", "default", "endpoint"),
        ("   ", "http", "default", "endpoint"),
        ("ftp://host", "http", "default", "endpoint"),
        ("http://", "http", "default", "endpoint"),
        ("http://host/v3/openapi", "http", "default", "endpoint"),
        ("http://host?x=1", "http", "default", "endpoint"),
        ("http://user:pw@host", "http", "default", "endpoint"),
        ("http://host:notaport", "http", "default", "endpoint"),
        ("my host", "http", "default", "endpoint"),
        ("host.example", "ftp", "default", "protocol"),
        ("host.example", "http", "", "workspace"),
        ("host.example", "http", "a/b", "workspace"),
    ],
)
def test_build_base_url_rejects_bad_input(endpoint, protocol, workspace, key):
    """An empty or ill-formed endpoint, protocol or workspace is a ConfigError naming the key and what is expected."""
    with pytest.raises(ValueError) as info:
        build_base_url(endpoint, protocol, workspace)
    assert isinstance(info.value, ConfigError)
    assert info.value.key == key
    if key == "endpoint":
        assert "expected" in str(info.value)


def test_client_rejects_empty_or_unsendable_key_without_echoing_it():
    """An empty key, or one that cannot go in a header, fails at construction without showing the key."""
    with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY"):
        ServiceClient("http://h", "default", "")
    with pytest.raises(ConfigError) as info:
        ServiceClient("http://h", "default", "sk-bad\nkey")
    assert "sk-bad" not in str(info.value)


# -- paths, headers, bodies ------------------------------------------------------------


async def test_submit_async_capability_path_headers_and_body(mocked, make_client):
    """submit of an async capability POSTs the JSON body to {ws}/{segment}/{sid}/async with bearer auth
    and JSON headers."""
    mocked.post(CREATE, payload=OK)
    response = await make_client().submit(IMAGE, SID, BODY)
    assert response == ApiResponse(
        http_status=200, request_id="req-ok", latency=12, result={"task_id": "task-1"}, usage={"pv_count": 1}
    )
    [call] = calls(mocked, "POST", CREATE)
    headers = call.kwargs["headers"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == f"opensearch-media-pipeline/{__version__}"
    assert json.loads(call.kwargs["data"]) == BODY
    assert call.kwargs["timeout"].total == 30.0
    assert call.kwargs["allow_redirects"] is False


async def test_an_encoded_body_is_sent_as_it_was_encoded(mocked, make_client):
    """A RequestBody's bytes are what goes on the wire, not encoded again: the very object, spacing and all."""
    mocked.post(CREATE, payload=OK)
    body = RequestBody(BODY, json.dumps(BODY, indent=1).encode())  # not the client's compact form
    await make_client().submit(IMAGE, SID, body)
    [call] = calls(mocked, "POST", CREATE)
    assert call.kwargs["data"] is body.data


async def test_get_task_status_path_and_query(mocked, make_client):
    """get_task_status GETs {ws}/{segment}/{sid}/async/task-status?task_id=… with no body."""
    status = {"request_id": "r", "latency": 1, "result": {"task_id": "task-1", "status": "PENDING"}}
    mocked.get(STATUS, payload=status)
    response = await make_client().get_task_status(IMAGE, SID, "task-1")
    assert response.result["status"] == "PENDING"
    assert response.usage is None
    [call] = calls(mocked, "GET", STATUS)
    assert call.kwargs["params"] == {"task_id": "task-1"}
    assert call.kwargs["data"] is None


async def test_get_task_status_quotes_the_task_id(mocked, make_client):
    """A task id with URL-special characters is sent as one query value."""
    url = f"{BASE}/{SEG}/{SID}/async/task-status?task_id=a%26b%3Dc"
    mocked.get(url, payload={"result": {"task_id": "a&b=c", "status": "SUCCESS"}})
    response = await make_client().get_task_status(IMAGE, SID, "a&b=c")
    assert response.result["task_id"] == "a&b=c"


async def test_submit_sync_capability_has_no_async_suffix(mocked, make_client):
    """submit of a synchronous capability (object detection) POSTs to {ws}/{segment}/{sid} with no /async suffix."""
    result = {"objects": [{"confidence": "0.9", "location": {"X": 1, "Y": 2, "width": 3, "height": 4}}]}
    mocked.post(DETECT, payload={"request_id": "r", "latency": 5, "result": result, "usage": {"image": 1}})
    response = await make_client().submit(DETECTION, "ops-object-detect-001", {"image": {"url": "u"}})
    assert response.result == result
    assert response.usage == {"image": 1}
    assert len(calls(mocked, "POST", DETECT)) == 1


async def test_host_plus_protocol_endpoint(mocked, make_client):
    """A bare host with protocol https reaches https://host/v3/openapi/workspaces/{ws}/…."""
    url = f"https://xxx.opensearch.aliyuncs.com/v3/openapi/workspaces/ws1/{SEG}/{SID}/async"
    mocked.post(url, payload=OK)
    client = make_client(endpoint="xxx.opensearch.aliyuncs.com", protocol="https", workspace="ws1")
    await client.submit(IMAGE, SID, BODY)
    assert len(calls(mocked, "POST", url)) == 1


async def test_bad_service_id_is_rejected_before_sending(mocked, make_client):
    """A service id that would escape its path segment is an InvalidParameter and no request is made."""
    with pytest.raises(InvalidParameter):
        await make_client().submit(IMAGE, "../admin", BODY)
    assert mocked.requests == {}


async def test_unserializable_body_is_invalid_parameter(mocked, make_client):
    """A body that is not JSON-serializable fails the item as InvalidParameter without a request."""
    with pytest.raises(InvalidParameter, match="JSON"):
        await make_client().submit(IMAGE, SID, {"when": object()})
    assert mocked.requests == {}


# -- status -> exception, no retry -----------------------------------------------------


async def test_400_invalid_parameter_is_not_retried(mocked, make_client, sleep):
    """400 InvalidParameter raises InvalidParameter after exactly one request."""
    payload = {"request_id": "r4", "code": "InvalidParameter", "message": "bad"}
    mocked.post(CREATE, status=400, payload=payload, repeat=True)
    with pytest.raises(InvalidParameter) as info:
        await make_client().submit(IMAGE, SID, BODY)
    err = info.value
    assert (err.code, err.message, err.http_status, err.request_id) == ("InvalidParameter", "bad", 400, "r4")
    assert err.attempts == 1
    assert len(calls(mocked, "POST", CREATE)) == 1
    assert sleep.delays == []


async def test_400_task_not_exist(mocked, make_client):
    """400 BadRequest.TaskNotExist on a poll raises TaskNotExist after one request."""
    mocked.get(STATUS, status=400, payload={"code": "BadRequest.TaskNotExist", "message": "no such task"}, repeat=True)
    with pytest.raises(TaskNotExist):
        await make_client().get_task_status(IMAGE, SID, "task-1")
    assert len(calls(mocked, "GET", STATUS)) == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_is_fatal_after_one_request(mocked, make_client, status):
    """401 and 403 raise AuthError at once: the run must stop."""
    mocked.post(CREATE, status=status, body="", repeat=True)
    with pytest.raises(AuthError) as info:
        await make_client().submit(IMAGE, SID, BODY)
    assert info.value.http_status == status
    assert len(calls(mocked, "POST", CREATE)) == 1


async def test_redirect_is_an_endpoint_error(mocked, make_client):
    """A redirect is not followed (it would turn a POST into a GET): it raises EndpointError at once."""
    mocked.post(CREATE, status=301, headers={"Location": "https://elsewhere/"}, repeat=True)
    with pytest.raises(EndpointError):
        await make_client().submit(IMAGE, SID, BODY)
    assert len(calls(mocked, "POST", CREATE)) == 1


async def test_capitalised_error_body_fields(mocked, make_client):
    """The RequestId/Code/Message spelling of an error body is read like the lower-case one."""
    mocked.post(CREATE, status=400, payload={"RequestId": "R-1", "Code": "InvalidParameter", "Message": "Bad field"})
    with pytest.raises(InvalidParameter) as info:
        await make_client().submit(IMAGE, SID, BODY)
    assert (info.value.request_id, info.value.code, info.value.message) == ("R-1", "InvalidParameter", "Bad field")


async def test_request_id_from_header(mocked, make_client):
    """When the body has no request id, the x-acs-request-id header supplies it, on errors and successes."""
    error = {"code": "InvalidParameter", "message": "m"}
    mocked.post(CREATE, status=400, payload=error, headers={"x-acs-request-id": "H-1"})
    mocked.post(CREATE, payload={"result": {"task_id": "t"}}, headers={"x-acs-request-id": "H-2"})
    client = make_client()
    with pytest.raises(InvalidParameter) as info:
        await client.submit(IMAGE, SID, BODY)
    assert info.value.request_id == "H-1"
    assert (await client.submit(IMAGE, SID, BODY)).request_id == "H-2"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "cls", "code"),
    [
        ("<html>Bad Request</html>", "text/html", 400, InvalidParameter, "BadRequest"),
        ("", "text/plain", 404, InvalidParameter, "NotFound"),
        ("not json", "text/plain", 401, AuthError, "Unauthorized"),
        ("[1, 2]", "application/json", 400, InvalidParameter, "BadRequest"),
    ],
)
async def test_non_json_error_body_still_classified(mocked, make_client, body, content_type, status, cls, code):
    """An error body that is not a JSON object is classified by status alone, with a readable message."""
    mocked.post(CREATE, status=status, body=body, content_type=content_type)
    with pytest.raises(cls) as info:
        await make_client().submit(IMAGE, SID, BODY)
    assert info.value.code == code
    assert f"HTTP {status}" in info.value.message


# -- retry sequences -------------------------------------------------------------------


async def test_429_retry_after_is_honoured(mocked, make_client, sleep):
    """429 with Retry-After: 3 then 200 succeeds after sleeping exactly 3 s."""
    mocked.post(CREATE, status=429, payload={"code": "Throttling"}, headers={"Retry-After": "3"})
    mocked.post(CREATE, payload=OK)
    response = await make_client().submit(IMAGE, SID, BODY)
    assert response.attempts == 2
    assert sleep.delays == [3.0]


async def test_429_retry_after_is_capped(mocked, make_client, sleep):
    """A Retry-After of 600 s is cut to the 60 s cap."""
    mocked.post(CREATE, status=429, headers={"Retry-After": "600"})
    mocked.post(CREATE, payload=OK)
    await make_client().submit(IMAGE, SID, BODY)
    assert sleep.delays == [60.0]


async def test_429_without_retry_after_uses_jittered_backoff(mocked, make_client, sleep):
    """429s without Retry-After wait the full-jitter schedule (rand=0.5: 0.5, 1, 2)."""
    mocked.post(CREATE, status=429, repeat=3)
    mocked.post(CREATE, payload=OK)
    response = await make_client().submit(IMAGE, SID, BODY)
    assert response.attempts == 4
    assert sleep.delays == [0.5, 1.0, 2.0]


async def test_429_has_its_own_budget(mocked, make_client, sleep):
    """429s do not use up max_attempts: ten 429s then 200 succeed even with max_attempts=2."""
    mocked.post(CREATE, status=429, repeat=10)
    mocked.post(CREATE, payload=OK)
    response = await make_client(retry=RetryPolicy(max_attempts=2)).submit(IMAGE, SID, BODY)
    assert response.attempts == 11
    assert len(sleep.delays) == 10


async def test_429_budget_is_bounded_for_a_status_poll(mocked, make_client, sleep):
    """Endless 429s on a status poll end in RateLimited after max_rate_limited requests: the
    poller reschedules that poll itself (it never fails the task for it)."""
    mocked.get(STATUS, status=429, repeat=True)
    with pytest.raises(RateLimited) as info:
        await make_client(retry=RetryPolicy(max_rate_limited=4)).get_task_status(IMAGE, SID, "task-1")
    assert info.value.attempts == 4
    assert len(calls(mocked, "GET", STATUS)) == 4
    assert len(sleep.delays) == 3


async def test_a_429_storm_longer_than_the_budget_never_fails_a_create(mocked, make_client, caplog):
    """A create answered 429 far past max_rate_limited keeps waiting (another application may hold
    the account's quota for minutes) and succeeds once the service answers; each max_rate_limited
    429s in a row a warning says for how long the service has throttled, at most once a minute."""
    clock = FakeClock(100.0)

    async def sleep(delay: float) -> None:
        clock.now += 10.0  # every backoff is 10 s of the service's time

    mocked.post(CREATE, status=429, payload={"code": "Throttling.RateQuota"}, headers={"Retry-After": "10"},
                repeat=40)
    mocked.post(CREATE, payload=OK)
    client = make_client(retry=RetryPolicy(max_rate_limited=3), sleep=sleep, clock=clock)
    with caplog.at_level(logging.WARNING, logger="pipeline.client"):
        response = await client.submit(IMAGE, SID, BODY)
    assert response.attempts == 41 and response.result == {"task_id": "task-1"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert 4 <= len(warnings) <= 7, warnings  # 400 s of 429s: about one a minute, not one per 3 answers
    assert "throttled image_analyze for" in warnings[-1] and "6.3 minutes" in warnings[-1], warnings[-1]
    assert "keeps waiting" in warnings[-1] and "--max-duration" in warnings[-1]


async def test_500_four_times_then_success(mocked, make_client, sleep):
    """500 ×4 then 200 succeeds after 4 sleeps whose bounds double 1, 2, 4, 8."""
    mocked.post(CREATE, status=500, payload={"code": "InternalServerError", "message": "oops"}, repeat=4)
    mocked.post(CREATE, payload=OK)
    response = await make_client(rand=lambda: 1.0).submit(IMAGE, SID, BODY)
    assert response.attempts == 5
    assert response.result == {"task_id": "task-1"}
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0]


async def test_500_exhausts_after_max_attempts(mocked, make_client, sleep):
    """500 ×5 raises ServerError after exactly 5 requests (4 sleeps)."""
    mocked.post(CREATE, status=500, payload={"code": "InternalServerError", "message": "oops"}, repeat=True)
    with pytest.raises(ServerError) as info:
        await make_client().submit(IMAGE, SID, BODY)
    assert info.value.attempts == 5
    assert info.value.http_status == 500
    assert len(calls(mocked, "POST", CREATE)) == 5
    assert len(sleep.delays) == 4


async def test_per_call_retry_policy_overrides_default(mocked, make_client):
    """A retry policy passed to one call replaces the client's default for that call."""
    mocked.post(CREATE, status=500, repeat=True)
    with pytest.raises(ServerError):
        await make_client().submit(IMAGE, SID, BODY, retry=RetryPolicy(max_attempts=1))
    assert len(calls(mocked, "POST", CREATE)) == 1


async def test_503_retry_after_is_honoured(mocked, make_client, sleep):
    """A Retry-After on a 5xx also replaces the backoff schedule."""
    mocked.post(CREATE, status=503, headers={"Retry-After": "2"})
    mocked.post(CREATE, payload=OK)
    await make_client().submit(IMAGE, SID, BODY)
    assert sleep.delays == [2.0]


@pytest.mark.parametrize("exc", [asyncio.TimeoutError(), aiohttp.ServerTimeoutError("read timeout")])
async def test_timeout_is_retried(mocked, make_client, sleep, exc):
    """A timeout is a TransportError(Timeout) and is retried."""
    mocked.get(STATUS, exception=exc)
    mocked.get(STATUS, payload={"result": {"task_id": "task-1", "status": "SUCCESS", "data": {}}})
    retried = []
    client = make_client(on_retry=lambda cap, err, delay: retried.append((cap, type(err), err.code, err.http_status)))
    response = await client.get_task_status(IMAGE, SID, "task-1")
    assert response.attempts == 2
    assert retried == [(NAME, TransportError, "Timeout", None)]


async def test_poll_timeouts_exhaust_to_transport_error(mocked, make_client):
    """Endless timeouts on a status poll use the whole max_attempts budget (a GET is never ambiguous)
    and raise TransportError(Timeout) chained to the aiohttp cause."""
    mocked.get(STATUS, exception=asyncio.TimeoutError(), repeat=True)
    ambiguous: list[str] = []
    with pytest.raises(TransportError) as info:
        await make_client(on_ambiguous=ambiguous.append).get_task_status(IMAGE, SID, "task-1")
    assert info.value.code == "Timeout"
    assert info.value.attempts == 5
    assert isinstance(info.value.__cause__, asyncio.TimeoutError)
    assert len(calls(mocked, "GET", STATUS)) == 5
    assert ambiguous == []


# -- ambiguous creates: a POST that may have reached the service ------------------------


@pytest.mark.parametrize("exc", [asyncio.TimeoutError(), aiohttp.ServerDisconnectedError()])
async def test_ambiguous_create_is_resent_once_by_default(mocked, make_client, sleep, exc):
    """A create that timed out or lost its connection may have landed: with the default policy it
    is sent once more, and on_ambiguous hears of that retry before it is made."""
    events: list[tuple[str, str]] = []

    async def throttle(capability: str, lane: Lane) -> None:
        events.append(("send", capability))

    mocked.post(CREATE, exception=exc)
    mocked.post(CREATE, payload=OK)
    client = make_client(throttle=throttle, on_ambiguous=lambda cap: events.append(("ambiguous", cap)))
    response = await client.submit(IMAGE, SID, BODY)
    assert response.attempts == 2
    assert events == [("send", NAME), ("ambiguous", NAME), ("send", NAME)]
    assert len(sleep.delays) == 1


@pytest.mark.parametrize("exc", [asyncio.TimeoutError(), aiohttp.ServerDisconnectedError()])
async def test_ambiguous_creates_stop_after_their_own_budget(mocked, make_client, exc):
    """Endless ambiguous create failures end after 1 + ambiguous_creates requests, well before
    max_attempts, with the TransportError itself (not ServiceUnreachable: it may have been sent)."""
    mocked.post(CREATE, exception=exc, repeat=True)
    ambiguous: list[str] = []
    client = make_client(on_ambiguous=ambiguous.append, retry=RetryPolicy(max_attempts=5, ambiguous_creates=2))
    with pytest.raises(TransportError) as info:
        await client.submit(IMAGE, SID, BODY)
    assert not isinstance(info.value, ServiceUnreachable)
    assert info.value.maybe_sent is True
    assert info.value.attempts == 3
    assert len(calls(mocked, "POST", CREATE)) == 3
    assert ambiguous == [NAME, NAME]


async def test_default_policy_makes_two_requests_for_endless_create_timeouts(mocked, make_client):
    """With the default RetryPolicy (ambiguous_creates=1) endless create timeouts cost exactly two requests."""
    mocked.post(CREATE, exception=asyncio.TimeoutError(), repeat=True)
    with pytest.raises(TransportError) as info:
        await make_client().submit(IMAGE, SID, BODY)
    assert info.value.code == "Timeout"
    assert info.value.attempts == 2
    assert isinstance(info.value.__cause__, asyncio.TimeoutError)
    assert len(calls(mocked, "POST", CREATE)) == 2


async def test_the_error_raised_is_a_new_one_and_the_caught_one_is_left_alone(mocked, make_client):
    """Giving up raises a new error (attempts counted, the billing note added, aiohttp's cause kept); the
    one the client caught, seen by on_retry, keeps its own attempts and message."""
    mocked.post(CREATE, exception=asyncio.TimeoutError(), repeat=True)
    seen: list[ServerError] = []
    with pytest.raises(TransportError) as info:
        await make_client(on_retry=lambda cap, err, delay: seen.append(err)).submit(IMAGE, SID, BODY)
    raised, caught = info.value, info.value.__context__
    assert isinstance(caught, TransportError) and caught is not raised and caught not in seen
    assert (raised.attempts, caught.attempts, seen[0].attempts) == (2, 1, 1)
    assert "sent 2 times" in raised.message and "sent" not in caught.message and "sent" not in seen[0].message
    assert isinstance(raised.__cause__, asyncio.TimeoutError) and raised.__cause__ is caught.__cause__


async def test_no_ambiguous_budget_makes_the_first_timeout_final(mocked, make_client, sleep):
    """With ambiguous_creates=0 a create timeout is final at once: one request, no sleep, no on_ambiguous."""
    mocked.post(CREATE, exception=asyncio.TimeoutError(), repeat=True)
    ambiguous: list[str] = []
    retried: list[str] = []
    client = make_client(retry=RetryPolicy(ambiguous_creates=0), on_ambiguous=ambiguous.append,
                         on_retry=lambda cap, err, delay: retried.append(cap))
    with pytest.raises(TransportError) as info:
        await client.submit(IMAGE, SID, BODY)
    assert info.value.code == "Timeout"
    assert info.value.attempts == 1
    assert len(calls(mocked, "POST", CREATE)) == 1
    assert (ambiguous, retried, sleep.delays) == ([], [], [])


async def test_unambiguous_failures_do_not_use_the_ambiguous_budget(mocked, make_client):
    """5xx answers prove the create was not lost in transit: with ambiguous_creates=0 they are still
    retried up to max_attempts and on_ambiguous is never called."""
    mocked.post(CREATE, status=500, repeat=3)
    mocked.post(CREATE, payload=OK)
    ambiguous: list[str] = []
    client = make_client(retry=RetryPolicy(ambiguous_creates=0), on_ambiguous=ambiguous.append)
    assert (await client.submit(IMAGE, SID, BODY)).attempts == 4
    assert ambiguous == []


async def test_poll_timeouts_are_retried_even_without_an_ambiguous_budget(mocked, make_client):
    """A status poll that timed out is retried as usual with ambiguous_creates=0: GETs are never ambiguous."""
    mocked.get(STATUS, exception=asyncio.TimeoutError(), repeat=2)
    mocked.get(STATUS, payload={"result": {"task_id": "task-1", "status": "PENDING"}})
    ambiguous: list[str] = []
    client = make_client(retry=RetryPolicy(ambiguous_creates=0), on_ambiguous=ambiguous.append)
    assert (await client.get_task_status(IMAGE, SID, "task-1")).attempts == 3
    assert ambiguous == []


# -- no connection at all: ServiceUnreachable -----------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound to learn a free number, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("call", ["submit", "poll"])
async def test_refused_connection_is_unreachable_after_every_retry(make_client, call):
    """A refused connection is not ambiguous (maybe_sent False): it is retried up to max_attempts,
    even a create with ambiguous_creates=0, and then raises ServiceUnreachable, a FatalError,
    chained to the TransportError."""
    port = closed_port()
    ambiguous: list[str] = []
    retried: list[tuple[str, bool]] = []
    client = make_client(
        endpoint=f"http://127.0.0.1:{port}",
        sleep=anyio.sleep,  # real, but tiny: base 1 ms
        retry=RetryPolicy(base=0.001, max_delay=0.005, max_attempts=3, ambiguous_creates=0),
        on_ambiguous=ambiguous.append,
        on_retry=lambda cap, err, delay: retried.append((cap, getattr(err, "maybe_sent", None))),
    )
    with anyio.fail_after(10), pytest.raises(ServiceUnreachable) as info:
        if call == "submit":
            await client.submit(IMAGE, SID, BODY)
        else:
            await client.get_task_status(IMAGE, SID, "task-1")
    err = info.value
    assert isinstance(err, FatalError)
    assert err.code == "ServiceUnreachable"
    assert err.attempts == 3
    assert f"127.0.0.1:{port}" in err.message
    cause = err.__cause__
    assert isinstance(cause, TransportError)
    assert (cause.code, cause.maybe_sent) == ("ConnectionError", False)
    assert isinstance(cause.__cause__, aiohttp.ClientConnectorError)
    assert retried == [(NAME, False)] * 2
    assert ambiguous == []


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientConnectionError("refused"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("truncated"),
        aiohttp.ClientOSError(104, "reset"),
    ],
)
async def test_connection_errors_are_retried(mocked, make_client, exc):
    """Connection failures and disconnects are TransportError(ConnectionError) and are retried."""
    mocked.post(CREATE, exception=exc)
    mocked.post(CREATE, payload=OK)
    assert (await make_client().submit(IMAGE, SID, BODY)).attempts == 2

    mocked.post(CREATE, exception=exc, repeat=True)
    with pytest.raises(TransportError) as info:
        await make_client().submit(IMAGE, SID, BODY)
    assert info.value.code == "ConnectionError"
    assert info.value.http_status is None
    assert info.value.__cause__ is exc


async def test_unreadable_2xx_to_a_status_poll_is_retried(mocked, make_client):
    """A 2xx to a status poll whose body is not JSON, has no result object or no status is
    ServerError(UnreadableResponse), retried with the whole max_attempts budget (a GET bills nothing)."""
    mocked.get(STATUS, body="<html>maintenance</html>", content_type="text/html")
    mocked.get(STATUS, payload={"request_id": "r"})
    mocked.get(STATUS, payload={"result": {"task_id": "task-1"}})
    mocked.get(STATUS, payload={"result": {"task_id": "task-1", "status": "PENDING"}})
    ambiguous: list[str] = []
    assert (await make_client(on_ambiguous=ambiguous.append).get_task_status(IMAGE, SID, "task-1")).attempts == 4
    assert ambiguous == []

    mocked.get(STATUS, body="oops", repeat=True)
    with pytest.raises(ServerError) as info:
        await make_client().get_task_status(IMAGE, SID, "task-1")
    assert info.value.code == "UnreadableResponse" and info.value.attempts == 5


UNREADABLE_CREATES = [
    pytest.param(CREATE, IMAGE, {"body": "<html>gateway</html>", "content_type": "text/html"}, id="create-not-json"),
    pytest.param(CREATE, IMAGE, {"payload": {"request_id": "r"}}, id="create-no-result"),
    pytest.param(CREATE, IMAGE, {"payload": {"request_id": "r", "result": {}}}, id="create-no-task-id"),
    pytest.param(CREATE, IMAGE, {"payload": {"result": {"task_id": 17}}}, id="create-task-id-not-text"),
    pytest.param(DETECT, DETECTION, {"body": "<html>gateway</html>", "content_type": "text/html"},
                 id="detect-not-json"),
    pytest.param(DETECT, DETECTION, {"payload": {"request_id": "r"}}, id="detect-no-result"),
]


@pytest.mark.parametrize(("url", "cap", "answer"), UNREADABLE_CREATES)
async def test_an_unreadable_2xx_to_a_create_is_ambiguous(mocked, make_client, url, cap, answer):
    """A 2xx to a create (or a synchronous detection) whose body cannot be used means the service
    accepted, and billed, it: it is sent again at most ambiguous_creates times (on_ambiguous hears
    of each re-send) and then fails with UnreadableResponse, not max_attempts times."""
    mocked.post(url, status=200, repeat=True, **answer)
    ambiguous: list[str] = []
    client = make_client(on_ambiguous=ambiguous.append, retry=RetryPolicy(max_attempts=5, ambiguous_creates=1))
    with pytest.raises(ServerError) as info:
        await client.submit(cap, "ops-object-detect-001" if cap is DETECTION else SID, BODY)
    assert (info.value.code, info.value.http_status, info.value.attempts) == ("UnreadableResponse", 200, 2)
    assert len(calls(mocked, "POST", url)) == 2
    assert ambiguous == [cap.name]
    assert len(info.value.message) < 400


async def test_an_unreadable_2xx_to_a_create_is_final_without_an_ambiguous_budget(mocked, make_client, sleep):
    """With ambiguous_creates=0 an unreadable 2xx to a create is final at once: one request, no sleep."""
    mocked.post(CREATE, payload={"result": {}}, repeat=True)
    client = make_client(retry=RetryPolicy(ambiguous_creates=0))
    with pytest.raises(ServerError) as info:
        await client.submit(IMAGE, SID, BODY)
    assert info.value.code == "UnreadableResponse" and "task_id" in info.value.message
    assert len(calls(mocked, "POST", CREATE)) == 1 and sleep.delays == []


async def test_an_unreadable_2xx_then_an_answer_succeeds(mocked, make_client):
    """An unreadable 2xx followed by a proper answer to the re-send gives that answer."""
    mocked.post(CREATE, body="<html>gateway</html>", content_type="text/html")
    mocked.post(CREATE, payload=OK)
    ambiguous: list[str] = []
    response = await make_client(on_ambiguous=ambiguous.append).submit(IMAGE, SID, BODY)
    assert response.attempts == 2 and response.result == {"task_id": "task-1"} and ambiguous == [NAME]


async def test_throttle_awaited_once_per_attempt(mocked, make_client):
    """The caller's limiter is awaited before every attempt, retries included, with the capability
    name and the lane: creates in Lane.SUBMIT, status checks in Lane.POLL."""
    mocked.post(CREATE, status=500, repeat=2)
    mocked.post(CREATE, status=429)
    mocked.post(CREATE, payload=OK)
    seen: list[tuple[str, Lane]] = []

    async def throttle(capability: str, lane: Lane) -> None:
        seen.append((capability, lane))

    client = make_client(throttle=throttle)
    response = await client.submit(IMAGE, SID, BODY)
    assert response.attempts == 4
    assert seen == [(NAME, Lane.SUBMIT)] * 4
    assert all(type(lane) is Lane for _, lane in seen)
    seen.clear()
    mocked.get(STATUS, payload={"result": {"task_id": "task-1", "status": "PENDING"}})
    await client.get_task_status(IMAGE, SID, "task-1")
    assert seen == [(NAME, Lane.POLL)]


async def test_callbacks_see_every_response_and_retry(mocked, make_client, sleep):
    """on_response sees each HTTP status; on_retry sees each error and its delay before the sleep."""
    mocked.post(CREATE, status=429, headers={"Retry-After": "1"})
    mocked.post(CREATE, status=500)
    mocked.post(CREATE, payload=OK)
    statuses: list[tuple[str, int]] = []
    retries: list[tuple[str, str, float]] = []
    client = make_client(
        on_response=lambda cap, status: statuses.append((cap, status)),
        on_retry=lambda cap, err, delay: retries.append((cap, type(err).__name__, delay)),
    )
    await client.submit(IMAGE, SID, BODY)
    assert statuses == [(NAME, 429), (NAME, 500), (NAME, 200)]
    assert retries == [(NAME, "RateLimited", 1.0), (NAME, "ServerError", 0.5)]
    assert sleep.delays == [1.0, 0.5]


# -- the API key never leaks -----------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 500])
async def test_key_echoed_by_server_is_redacted(mocked, make_client, caplog, status):
    """Even when the server echoes the key, it appears in no exception text, repr, or log record."""
    caplog.set_level(logging.DEBUG)
    echo = {"request_id": "r", "code": f"Bad-{KEY}", "message": f"Invalid key: Bearer {KEY}"}
    mocked.post(CREATE, status=status, payload=echo, repeat=True)
    client = make_client()
    with pytest.raises(Exception) as info:
        await client.submit(IMAGE, SID, BODY)
    err = info.value
    for text in (str(err), repr(err), err.message, err.code, json.dumps(err.to_dict()), repr(client), caplog.text):
        assert KEY not in text
    assert "***" in err.message


async def test_key_in_transport_error_is_redacted(mocked, make_client):
    """An aiohttp error message containing the key is redacted in the TransportError."""
    mocked.post(CREATE, exception=aiohttp.ClientConnectionError(f"proxy said {KEY}"), repeat=True)
    with pytest.raises(TransportError) as info:
        await make_client().submit(IMAGE, SID, BODY)
    assert KEY not in str(info.value)


def test_repr_hides_key():
    """repr(client) shows the base URL and state, never the key."""
    client = ServiceClient("http://127.0.0.1:8080", "default", KEY)
    text = repr(client)
    assert KEY not in text
    assert BASE in text


# -- life cycle ------------------------------------------------------------------------


async def test_session_is_lazy_and_close_is_idempotent(mocked):
    """No session exists before the first call; close() may be called twice; a closed client refuses calls."""
    mocked.post(CREATE, payload=OK)
    client = ServiceClient("http://127.0.0.1:8080", "default", KEY)
    assert client._session is None
    await client.submit(IMAGE, SID, BODY)
    session = client._session
    assert session is not None and not session.closed
    await client.close()
    await client.close()
    assert session.closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.submit(IMAGE, SID, BODY)


async def test_async_context_manager_closes(mocked):
    """`async with ServiceClient(...)` closes the session it created on exit."""
    mocked.post(CREATE, payload=OK)
    async with ServiceClient("http://127.0.0.1:8080", "default", KEY) as client:
        await client.submit(IMAGE, SID, BODY)
        session = client._session
    assert session is not None and session.closed


async def test_injected_session_is_not_closed(mocked):
    """A session passed in belongs to the caller: close() leaves it open."""
    mocked.post(CREATE, payload=OK)
    async with aiohttp.ClientSession() as session:
        client = ServiceClient("http://127.0.0.1:8080", "default", KEY, session=session)
        await client.submit(IMAGE, SID, BODY)
        await client.close()
        assert not session.closed
