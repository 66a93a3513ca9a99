"""Reading the service's answers: a 2xx body into `ApiResponse`, anything else into the
exception it means. Pure: bytes and headers in, values out; every text that reaches a message
passes the caller's `redact` (which removes the API key).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.backoff import parse_retry_after
from ..core.errors import ServiceError, UnreadableResponse, classify

__all__ = ["ApiResponse", "parse_failure", "parse_success"]

Redact = Callable[[str], str]
_MAX_SNIPPET = 200  # characters of a non-JSON error body kept in the message


@dataclass(frozen=True)
class ApiResponse:
    """A 2xx answer: the body's fields, plus how many requests it took (retries included)."""

    http_status: int
    request_id: str | None
    latency: int | None
    result: dict[str, Any]
    usage: dict[str, Any] | None
    attempts: int = 1


def parse_success(status: int, raw: bytes, header_request_id: str | None, redact: Redact,
                  *, needs: str | None = None) -> ApiResponse:
    """A 2xx body -> ApiResponse; a body the pipeline cannot use is `UnreadableResponse` (a
    proxy's HTML page, JSON without a `result` object, or without `result[needs]` as a
    non-empty string: a create's `task_id`, a status answer's `status`)."""
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise _unreadable(status, "body is not JSON", raw, header_request_id, redact) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("result"), dict):
        raise _unreadable(status, "body has no 'result' object", raw, header_request_id, redact)
    wanted = payload["result"].get(needs) if needs else "-"
    if not isinstance(wanted, str) or not wanted:
        raise _unreadable(status, f"body has no {needs!r} in its result", raw, header_request_id, redact)
    latency = payload.get("latency")
    usage = payload.get("usage")
    return ApiResponse(
        http_status=status,
        request_id=_text(_pick(payload, "request_id", "RequestId")) or header_request_id,
        latency=_int_or_none(latency),
        result=payload["result"],
        usage=usage if isinstance(usage, dict) else None,
    )


def _unreadable(status: int, what: str, raw: bytes, header_request_id: str | None,
                redact: Redact) -> UnreadableResponse:
    return UnreadableResponse(None, redact(f"HTTP {status} {what}: {_snippet(raw)}"), http_status=status,
                              request_id=header_request_id)


def parse_failure(
    status: int,
    reason: str,
    raw: bytes,
    header_request_id: str | None,
    retry_after_header: str | None,
    *,
    redact: Redact,
) -> ServiceError:
    """A non-2xx answer -> the exception of the tree it means (see `errors.classify`)."""
    try:
        payload = json.loads(raw) if raw.strip() else None
    except ValueError:
        payload = None
    code = message = request_id = None
    if isinstance(payload, dict):
        code = _text(_pick(payload, "code", "Code"))
        message = _text(_pick(payload, "message", "Message"))
        request_id = _text(_pick(payload, "request_id", "RequestId"))
    if not message:
        snippet = _snippet(raw)
        message = f"HTTP {status} {reason}".rstrip() + (f": {snippet}" if snippet and payload is None else "")
    return classify(
        status,
        redact(code) if code else None,
        redact(message),
        redact(request_id or header_request_id or "") or None,
        parse_retry_after(retry_after_header),
    )


def _pick(payload: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = payload.get(name)
        if value is not None:
            return value
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if math.isfinite(value) else None


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    text = " ".join(text.split())  # one line, whatever the server sent
    return text if len(text) <= _MAX_SNIPPET else text[:_MAX_SNIPPET] + "…"
