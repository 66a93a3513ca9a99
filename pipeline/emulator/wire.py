"""Response envelopes and the one error type the emulator's handlers raise.

Success bodies are ``{"request_id", "latency", "result", "usage"?}``; error bodies are
``{"request_id", "code", "message"}``. Every response carries ``x-acs-request-id``, which is
where the official SDK takes the request id of an error from.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from aiohttp import web

INVALID_PARAMETER = "InvalidParameter"
TASK_NOT_EXIST = "BadRequest.TaskNotExist"
INVALID_API_KEY = "InvalidApiKey"
THROTTLING = "Throttling.RateQuota"
INTERNAL_ERROR = "InternalServerError"
NOT_FOUND = "NotFound"

#: The shortest ``Retry-After`` a scaled emulator sends: a millisecond, the precision it uses.
MIN_SCALED_RETRY_AFTER = 0.001


class ApiError(Exception):
    """An error answer: HTTP status, service error code, message and extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def invalid(message: str) -> ApiError:
    """A 400 ``InvalidParameter`` whose message names the offending field."""
    return ApiError(400, INVALID_PARAMETER, message)


def new_request_id() -> str:
    """A request id shaped like the service's (upper-case UUID)."""
    return str(uuid.uuid4()).upper()


def _dumps(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def ok_response(
    request_id: str, latency_ms: int, result: Any, usage: dict[str, Any] | None = None
) -> web.Response:
    """A 200 success envelope."""
    body: dict[str, Any] = {"request_id": request_id, "latency": latency_ms, "result": result}
    if usage is not None:
        body["usage"] = usage
    return web.Response(
        text=_dumps(body),
        content_type="application/json",
        headers={"x-acs-request-id": request_id},
    )


def bad_body_response(request_id: str, kind: str, route_kind: str, result: Any) -> web.Response:
    """A 200 the client cannot use (the ``bad_body`` fault): ``not_json``, an HTML page such as a
    proxy's; ``missing_fields``, the envelope without what the route answers with (a create's
    ``result.task_id``, a status's ``result.status``, a detection's ``result``)."""
    headers = {"x-acs-request-id": request_id}
    if kind == "not_json":
        page = "<html><body><h1>200 OK</h1><p>upstream answered; gateway page</p></body></html>"
        return web.Response(text=page, content_type="text/html", headers=headers)
    body: dict[str, Any] = {"request_id": request_id, "latency": 1}
    if route_kind == "status" and isinstance(result, dict):
        body["result"] = {k: v for k, v in result.items() if k != "status"}
    elif route_kind == "create":
        body["result"] = {}
    return web.Response(text=_dumps(body), content_type="application/json", headers=headers)


def error_response(request_id: str, error: ApiError) -> web.Response:
    """The JSON error body for ``error``, with its status and headers."""
    body = {"request_id": request_id, "code": error.code, "message": error.message}
    headers = {"x-acs-request-id": request_id, **error.headers}
    return web.Response(
        status=error.status, text=_dumps(body), content_type="application/json", headers=headers
    )


def format_retry_after(seconds: float, time_scale: float) -> str:
    """``Retry-After`` value: whole seconds (>= 1) at real speed, exact decimals when scaled."""
    if time_scale == 1.0:
        return str(max(1, math.ceil(seconds)))  # the header's integer form, never 0
    return f"{max(seconds, MIN_SCALED_RETRY_AFTER):.3f}"
