"""The seam between the OSS SDK's exceptions and the pipeline's error tree. Pure; the one module that knows
the SDK's exception classes.

The SDK wraps what went wrong (``UploadError`` -> ``OperationError`` -> the cause); the cause
decides::

    SDK ServiceError 401/403 ............ OssAuthError       (FatalError via AuthError: stop the run, exit 4)
    SDK ServiceError NoSuchBucket ....... OssBucketMissing   (FatalError: every item would fail)
    SDK ServiceError 429 ................ RateLimited        (retried)
    SDK ServiceError 5xx ................ ServerError        (retried)
    SDK ServiceError other 4xx .......... InvalidParameter   (this item fails; 404 is read by HEAD)
    RequestError / ResponseError ........ TransportError     (no answer, dropped connection: retried)
    DeserializationError, InconsistentError  UnreadableResponse (a 2xx that is not OSS's answer,
                                                             a CRC that does not match: retried)
    FileNotExist / FileNotReadable ...... FileError          (this item fails)
    missing credentials ................. OssAuthError

What outlasts the retries becomes :class:`OssUnavailable` (``pipeline.upload``): a run stops
resumably (exit 3) rather than failing items for an OSS that is down or failing.
"""

from __future__ import annotations

import asyncio

import alibabacloud_oss_v2 as oss
import requests

from ..core.errors import (
    InvalidParameter,
    PipelineError,
    RateLimited,
    ServerError,
    ServiceError,
    TransportError,
    UnreadableResponse,
)
from .errors import OssAuthError, OssBucketMissing
from .files import FileError

__all__ = ["translate"]

MAX_UNWRAP = 8  # wrappers followed at most: a cycle must not hang error handling
# The SDK's "no usable answer" errors (refused, reset, timed out): retried as TransportError.
_NO_ANSWER: tuple[type[BaseException], ...] = (oss.exceptions.RequestError, oss.exceptions.ResponseError)
# What the SDK's two transports (requests, aiohttp) raise inside those when a timeout ran out.
_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError, requests.exceptions.Timeout)
# A 2xx whose body is not OSS's answer (a proxy's page), or whose CRC does not match what was sent.
_UNUSABLE: tuple[type[BaseException], ...] = (oss.exceptions.DeserializationError, oss.exceptions.InconsistentError)


def _cause(exc: BaseException) -> BaseException:
    # Request/ResponseError wrap the HTTP library's exception (an OSError): they are the cause.
    for _ in range(MAX_UNWRAP):
        if isinstance(exc, _NO_ANSWER):
            return exc
        unwrap = getattr(exc, "unwrap", None)
        inner = unwrap() if callable(unwrap) else None
        if not isinstance(inner, BaseException):
            return exc
        exc = inner
    return exc


def _from_service(err: oss.exceptions.ServiceError, context: str) -> ServiceError:
    status = int(err.status_code or 0)
    code = str(err.code or "") or None
    message = f"{context}: {err.message or code or 'OSS error'}"
    kind: type[ServiceError]
    if status in (401, 403):
        kind = OssAuthError
        message += " (check OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET and the bucket's permissions)"
    elif code == "NoSuchBucket":
        kind, message = OssBucketMissing, message + " (create it, or fix upload.bucket)"
    elif status == 429:
        kind = RateLimited
    elif status >= 500:
        kind = ServerError
    else:
        kind = InvalidParameter
    return kind(code, message, http_status=status, request_id=str(err.request_id or "") or None)


def translate(exc: BaseException, context: str) -> BaseException:
    """The pipeline's error for an exception out of the SDK (``context`` says what was being done).

    Errors already the pipeline's own (a :class:`FileError` from a worker thread, a cancel)
    come back unchanged, unwrapped from the SDK's wrappers.
    """
    cause = _cause(exc)
    if isinstance(cause, (PipelineError, ServiceError)):
        return cause
    if isinstance(cause, oss.exceptions.ServiceError):
        return _from_service(cause, context)
    if isinstance(cause, _NO_ANSWER):
        inner = getattr(cause, "unwrap", lambda: None)()
        code = "Timeout" if isinstance(inner, _TIMEOUTS) else "ConnectionError"
        return TransportError(code, f"{context}: {cause}")
    if isinstance(cause, _UNUSABLE):
        return UnreadableResponse(None, f"{context}: {cause}")
    if isinstance(cause, (oss.exceptions.FileNotExist, oss.exceptions.FileNotReadable)):
        return FileError(None, f"{context}: {cause}")
    if isinstance(cause, oss.exceptions.CredentialsBaseError):
        hint = "set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET"
        return OssAuthError("MissingCredentials", f"{context}: {cause} ({hint})")
    if isinstance(cause, OSError):  # the SDK reading the file or its checkpoint dir
        return FileError(None, f"{context}: {cause}")
    return InvalidParameter("UploadFailed", f"{context}: {type(cause).__name__}: {cause}")
