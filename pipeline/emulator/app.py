"""The aiohttp application: API routes and the ``/_emulator`` control routes.

Every API request goes through the same gate, in this order: bearer auth (401), the body
size limit (400, checked from Content-Length before reading when possible), a running 429
burst, the QPS sliding window (429 + Retry-After), the fault draw (dropped connection, 500,
slow answer; a bad 2xx body replaces the answer after processing), then the service id, JSON
parsing and field validation (400; a summarization's ``input.chunks`` are also checked against
what a segmentation of its source returned, see chunks.py), and finally the capability's work.
Control routes need no auth: the emulator is a local test tool.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import web

from .chunks import check_summarization_chunks, input_source
from .control import add_control_routes
from .counters import route_name, submission_key
from .faults import FaultDraw, seeded_random
from .results import build_result, source_name
from .settings import (
    ASYNC_CAPABILITIES,
    OBJECT_DETECTION,
    VIDEO_SEGMENTATION,
    VIDEO_SUMMARIZATION,
    EmulatorSettings,
)
from .state import STATE, Clock, EmulatorState
from .tasks import Task, TaskStatus
from .validation import check_service_id, validate_body
from .wire import (
    INTERNAL_ERROR,
    INVALID_API_KEY,
    NOT_FOUND,
    TASK_NOT_EXIST,
    THROTTLING,
    ApiError,
    bad_body_response,
    error_response,
    format_retry_after,
    invalid,
    new_request_id,
    ok_response,
)

WS = "/v3/openapi/workspaces/{workspace}"
MIB = 1024 * 1024
MS_PER_SECOND = 1000
#: How much of a bogus task id an error message quotes: enough to recognise, never a flood.
ECHOED_ID_CHARS = 64
#: aiohttp's own body limit (it would answer 413) sits this far above ours, so that ours --
#: a 400 InvalidParameter, as the real service answers -- always fires first.
AIOHTTP_LIMIT_FACTOR = 4
AIOHTTP_LIMIT_EXTRA_BYTES = 1024


class _Dropped(Exception):
    """Internal signal: close the connection without answering."""


def api_path(capability: str, service_id: str, kind: str = "create", workspace: str = "default") -> str:
    """The URL path of a route: kind is create, status (add ``?task_id=``) or detect."""
    base = f"/v3/openapi/workspaces/{workspace}/{capability}/{service_id}"
    return {"create": f"{base}/async", "status": f"{base}/async/task-status", "detect": base}[kind]


def create_app(settings: EmulatorSettings | None = None, *, clock: Clock | None = None) -> web.Application:
    """A ready-to-serve emulator app; its state is ``app[STATE]``."""
    settings = settings or EmulatorSettings()
    app = web.Application(
        client_max_size=settings.max_body_bytes * AIOHTTP_LIMIT_FACTOR + AIOHTTP_LIMIT_EXTRA_BYTES
    )
    app[STATE] = EmulatorState(settings, clock)
    for capability in ASYNC_CAPABILITIES:
        base = f"{WS}/{capability}/{{service_id}}/async"
        app.router.add_post(base, _endpoint(capability, "create"))
        app.router.add_get(f"{base}/task-status", _endpoint(capability, "status"))
    app.router.add_post(f"{WS}/{OBJECT_DETECTION}/{{service_id}}", _endpoint(OBJECT_DETECTION, "detect"))
    add_control_routes(app)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


def _endpoint(capability: str, kind: str) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await _serve(request, capability, kind)

    handler.__name__ = f"{capability.replace('-', '_')}_{kind}"
    return handler


async def _serve(request: web.Request, capability: str, kind: str) -> web.StreamResponse:
    state = request.app[STATE]
    started = time.perf_counter()
    request_id = new_request_id()
    route = route_name(request.method, capability, kind)
    draw = FaultDraw()  # no faults until the request is admitted
    try:
        _check_auth(request, state.settings.api_key)
        raw = b"" if kind == "status" else await _read_body(request, state.settings.max_body_bytes)
        identity = request.query.get("task_id", "") if kind == "status" else hashlib.sha256(raw).hexdigest()
        draw = await _admit(state, capability, kind, identity)
        if draw.drop and not state.faults.drop_after_processing:
            raise _Dropped
        service_id = request.match_info["service_id"]
        check_service_id(capability, service_id)
        workspace = request.match_info["workspace"]
        finished: Task | None = None  # a task whose final status this answer carries
        if kind == "status":
            result, usage, finished = _status(state, capability, service_id, workspace, request.query.get("task_id"))
        else:
            result, usage = _submit(state, capability, service_id, workspace, _parse_json(raw))
        if draw.drop:
            raise _Dropped
        if draw.bad_body:  # processed (a create's task exists, billed), but the answer is unusable
            state.counters.record_fault("bad_body")
            state.counters.record_request(route, 200)
            return bad_body_response(request_id, state.faults.bad_body, kind, result)
        if finished is not None:  # only now: a dropped or unusable answer was never seen by the client
            _mark_delivered(state, finished)
    except ApiError as error:
        if draw.drop:  # drop_after_processing: even an error answer is lost
            return _drop(request, state, route)
        state.counters.record_request(route, error.status)
        return error_response(request_id, error)
    except _Dropped:
        return _drop(request, state, route)
    state.counters.record_request(route, 200)
    latency = int((time.perf_counter() - started) * MS_PER_SECOND)
    return ok_response(request_id, latency, result, usage)


def _drop(request: web.Request, state: EmulatorState, route: str) -> web.StreamResponse:
    state.counters.record_request(route, "dropped")
    state.counters.record_fault("dropped")
    if request.transport is not None:
        request.transport.close()  # the client sees the server disconnect, no answer
    return web.Response()  # never written: aiohttp gives up on the closed transport


def _check_auth(request: web.Request, api_key: str) -> None:
    expected = api_key.encode("utf-8")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    candidates = [token.strip()] if scheme.lower() == "bearer" else []
    candidates.append(request.headers.get("x-acs-bearer-token", ""))
    # compare_digest: no timing hint about the key; the key is never echoed anywhere.
    if not any(c and hmac.compare_digest(c.encode("utf-8"), expected) for c in candidates):
        raise ApiError(
            401, INVALID_API_KEY, "missing or invalid API key: send 'Authorization: Bearer <api key>'"
        )


def _too_large(limit: int, size: int | None) -> ApiError:
    got = f"request body is {size} bytes" if size is not None else "request body is too large"
    return invalid(
        f"{got}, over the {limit / MIB:g} MB limit ({limit} bytes): "
        "reference large files by OSS path (oss://bucket/key) or URL instead of inline content"
    )


async def _read_body(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit, length)  # rejected before reading a byte of it
    parts, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, None)
        parts.append(chunk)
    return b"".join(parts)


async def _admit(state: EmulatorState, capability: str, kind: str, identity: str) -> FaultDraw:
    """429 bursts, the QPS window and the fault draw; sleeps for a slow answer."""
    settings, counters, now = state.settings, state.counters, state.clock()
    counted = kind != "status" or settings.polls_count
    if counted:
        counters.record_offered(capability, now)
    remaining = state.injector.burst_remaining(capability, now)
    draw = FaultDraw()
    if not remaining:
        draw = state.injector.draw(capability, kind, identity, now, settings.time_scale)
        if draw.burst_429:
            counters.record_fault("burst_429")
            remaining = state.injector.burst_remaining(capability, now)
    if remaining:
        counters.record_throttled(capability)
        raise _throttled(f"{capability} is throttled for the moment", remaining, settings.time_scale)
    if counted:
        wait = state.limiters[capability].try_acquire(now)
        if wait:
            counters.record_throttled(capability)
            limit = settings.qps[capability]
            raise _throttled(f"request rate over {limit} QPS for {capability}", wait, settings.time_scale)
        counters.record_accepted(capability, now)
    if draw.error_500:
        counters.record_fault("error_500")
        raise ApiError(500, INTERNAL_ERROR, "emulated internal server error; retry with backoff")
    if draw.slow:
        counters.record_fault("slow")
        await asyncio.sleep(settings.real_seconds(state.faults.slow_seconds))
    return draw


def _throttled(reason: str, wait: float, time_scale: float) -> ApiError:
    retry_after = format_retry_after(wait, time_scale)
    return ApiError(429, THROTTLING, f"{reason}; retry after {retry_after} s", {"Retry-After": retry_after})


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None


def _oss_input(state: EmulatorState, body: Any) -> tuple[str | None, Any]:
    """For an `oss://` input in a bucket the OSS emulator holds: (why the task fails, or None;
    the body as results are derived from it, carrying the object's digest). Other bodies pass."""
    store = state.objects
    source = body.get("input") if isinstance(body, dict) else None
    if store is None or not isinstance(source, dict):
        return None, body
    uri = source.get("oss")
    if not isinstance(uri, str) or not uri.startswith("oss://"):
        return None, body
    bucket, _, key = uri[len("oss://"):].partition("/")
    if not store.holds_bucket(bucket):
        return None, body  # a bucket of the real service's world: behave as before
    path = store.get(bucket, key)
    if path is None:
        return f"the object {uri} does not exist", body
    digest = hashlib.sha256(path.read_bytes()).hexdigest()  # small test objects; results follow the bytes
    return None, {**body, "input": {**source, "object_sha256": digest}}


def _submit(
    state: EmulatorState, capability: str, service_id: str, workspace: str, body: Any
) -> tuple[Any, dict[str, Any] | None]:
    body = validate_body(capability, body)
    if capability == VIDEO_SUMMARIZATION:
        check_summarization_chunks(state.segments, state.counters, body)
    key = submission_key(capability, service_id, body)
    occurrence = state.counters.record_submission(key)
    missing, seen_as = _oss_input(state, body)
    data, usage = build_result(capability, service_id, seen_as, state.settings.seed)
    if capability == OBJECT_DETECTION:
        return data, usage
    settings = state.settings
    low, high = settings.durations[capability]
    duration = seeded_random(settings.seed, "duration", capability, key, occurrence).uniform(low, high)
    failed = state.injector.task_fails(capability, key, occurrence) or missing is not None
    if failed and missing is None:
        state.counters.record_fault("task_fail")
    source = source_name(body.get("document") or body.get("input") or {})
    task = state.tasks.add(
        capability=capability,
        service_id=service_id,
        workspace=workspace,
        now=state.clock(),
        duration=settings.real_seconds(duration),
        outcome=TaskStatus.FAILED if failed else TaskStatus.SUCCESS,
        data=None if failed else data,
        usage=None if failed else usage,
        error=(missing or f"emulated processing failure for {source}") if failed else None,
        source=input_source(body.get("input")),
    )
    state.counters.tasks_created[capability] += 1
    state.counters.record_task_end(task.ready_at)
    return {"task_id": task.task_id}, None


def _status(
    state: EmulatorState, capability: str, service_id: str, workspace: str, task_id: str | None
) -> tuple[Any, dict[str, Any] | None, Task | None]:
    """The status answer, and the task when the answer carries its final status."""
    if not task_id:
        raise invalid("task_id is required (query parameter)")
    now = state.clock()
    task = state.tasks.get(
        task_id, capability=capability, service_id=service_id, workspace=workspace, now=now
    )
    if task is None:
        raise ApiError(400, TASK_NOT_EXIST, f"task {task_id[:ECHOED_ID_CHARS]!r} does not exist or has expired")
    status = task.status(now)
    usage = task.usage if status is TaskStatus.SUCCESS else None
    return task.result(now), usage, None if status is TaskStatus.PENDING else task


def _mark_delivered(state: EmulatorState, task: Task) -> None:
    """The client has been sent this task's final status: count it, and its detection lag, once."""
    if task.delivered:
        return
    task.delivered = True
    task.seen_done_at = state.clock()
    state.counters.results_delivered[task.outcome.value] += 1
    state.counters.record_detection(task.ready_at, task.seen_done_at)
    if task.capability == VIDEO_SEGMENTATION and task.outcome is TaskStatus.SUCCESS and task.source:
        state.segments.remember(task.source, task.data)  # a summarization must send these back


async def _not_found(request: web.Request) -> web.Response:
    request_id = new_request_id()
    error = ApiError(404, NOT_FOUND, f"no such API: {request.method} {request.path}")
    return error_response(request_id, error)
