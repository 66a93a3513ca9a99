"""The pipeline's one exception tree, and the pure map from a service response to it.

::

    PipelineError
     ├── ConfigError            bad configuration; names the key and the file (also a ValueError)
     ├── UsageError             the command cannot run as given (another run's state dir, ...)
     │    ├── StateError        a state dir or results file that is corrupt or not this run's
     │    └── StateLocked       another live process holds the state dir (exit 7)
     ├── ManifestError          a manifest that cannot be read at all
     ├── Stopped                a stop was requested while this request waited for its turn
     └── ServiceError           anything that came out of a call to the service
          ├── RetryableError    try again later (the client retries these itself)
          │    ├── RateLimited        429                        code from server, or TooManyRequests
          │    ├── ServerError        5xx
          │    │    └── UnreadableResponse  a 2xx whose body cannot be used (not JSON, no
          │    │                          result, a create without task id): it was accepted,
          │    │                          so a create answered so is ambiguous (maybe billed)
          │    └── TransportError     no HTTP answer: code Timeout | ConnectionError
          ├── PermanentError    this item will fail the same way every time: record it, go on
          │    ├── InvalidParameter   400 InvalidParameter, every other 4xx; a local file that
          │    │                      cannot be read (code FileError) or is too big
          │    ├── TaskNotExist       4xx BadRequest.TaskNotExist (unknown or expired task id)
          │    ├── TaskFailed         the task ended FAILED (the message is the service's)
          │    ├── PollTimeout        still PENDING at the poll deadline (task id kept)
          │    ├── BadResponse        a create answer without a task id
          │    └── DependencyFailed   not submitted: the analysis it comes `after` failed
          └── FatalError        every further call would fail the same way: stop the run
               ├── AuthError          401, 403                              (exit 4)
               ├── EndpointError      1xx/3xx: the endpoint is not the service (e.g. a redirect)
               └── ServiceUnreachable no connection could be made after every retry (exit 3)

Every ``ServiceError`` carries ``code``, ``message``, ``http_status``, ``request_id``,
``retry_after`` and ``attempts`` (how many requests the client made before giving up);
``to_dict()`` gives the ``error`` object of a result line. A caught error is never changed:
``with_attempts`` makes the one to raise instead.
"""

from __future__ import annotations

import copy
from http import HTTPStatus
from typing import Any, ClassVar, TypeVar

from .exit_codes import ExitCode

__all__ = [
    "AuthError",
    "BadResponse",
    "ConfigError",
    "DependencyFailed",
    "EndpointError",
    "FatalError",
    "InvalidParameter",
    "ManifestError",
    "PermanentError",
    "PipelineError",
    "PollTimeout",
    "RateLimited",
    "RetryableError",
    "ServerError",
    "ServiceError",
    "ServiceUnreachable",
    "StateError",
    "StateLocked",
    "Stopped",
    "TaskFailed",
    "TaskNotExist",
    "TransportError",
    "UnreadableResponse",
    "UsageError",
    "classify",
    "redact",
]

TASK_NOT_EXIST = "BadRequest.TaskNotExist"
REDACTED = "***"
_E = TypeVar("_E", bound="ServiceError")


class PipelineError(Exception):
    """Root of every exception the pipeline raises on purpose. `exit_code` is the code the
    command line exits with when the error ends a command (the API's callers read it too)."""

    #: Resumable by default: whatever ended the command left the state dir consistent.
    exit_code: ClassVar[ExitCode] = ExitCode.INTERRUPTED


class ConfigError(PipelineError, ValueError):
    """A configuration value is missing or wrong; the message names the key and the file."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key  # dotted config key, e.g. "retry.max_attempts"
        self.source = source  # file (or env var / flag) the value came from

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        what = f"{self.key}: " if self.key else ""
        return f"{where}{what}{self.message}"


class UsageError(PipelineError):
    """The command cannot run as given (exit code 2): e.g. a state dir of another run."""

    exit_code = ExitCode.USAGE


class StateError(UsageError):
    """A state dir or results file that is corrupt, or that belongs to something else (exit 2)."""


class StateLocked(UsageError):
    """Another live process holds the state dir (exit 7); the message names the holder."""

    exit_code = ExitCode.LOCKED


class Stopped(PipelineError):
    """The run is stopping: a request that had not reached the wire yet gives up its turn."""


class Interrupted(PipelineError):
    """A signal stopped the run before it began (while its source was checked): exit 3, resumable."""


class ManifestError(PipelineError):
    """The manifest as a whole cannot be read (bad lines are reported, not raised)."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line

    def __str__(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


class ServiceError(PipelineError):
    """Base of everything a service call can raise; carries what a caller needs to decide."""

    default_code = "ServiceError"

    def __init__(
        self,
        code: str | None,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        code = code or self.default_code
        # args must match the positional signature so the exception pickles
        # (Exception.__reduce__ rebuilds cls(*args) and then restores __dict__).
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.retry_after = retry_after
        self.attempts = attempts

    def with_attempts(self: _E, attempts: int, *, note: str = "") -> _E:
        """This error as it stands after ``attempts`` requests, ``note`` added to its message:
        a new exception of the same class, to raise ``from`` this one's cause. The caught one is
        never changed: it may be held elsewhere too (a shared upload's other waiters, a log)."""
        again = copy.copy(self)  # the class, code, status, request id, retry_after, maybe_sent...
        again.attempts = attempts
        again.message = self.message + note
        again.args = (again.code, again.message)
        return again

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of a result line: ``{"code", "message", "http_status"}``."""
        return {"code": self.code, "message": self.message, "http_status": self.http_status}

    def __str__(self) -> str:
        details = []
        if self.http_status is not None:
            details.append(f"HTTP {self.http_status}")
        if self.request_id:
            details.append(f"request_id={self.request_id}")
        if self.attempts > 1:
            details.append(f"after {self.attempts} attempts")
        suffix = f" ({', '.join(details)})" if details else ""
        return f"{self.code}: {self.message}{suffix}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"http_status={self.http_status!r}, request_id={self.request_id!r})"
        )


class RetryableError(ServiceError):
    """A transient failure: the same request may succeed later."""


class RateLimited(RetryableError):
    """HTTP 429: over the QPS limit. Slow down (honour ``retry_after``); never fail the item for it alone."""

    default_code = "TooManyRequests"


class ServerError(RetryableError):
    """HTTP 5xx, or (``UnreadableResponse``) a 2xx whose body could not be used."""

    default_code = "InternalServerError"


class UnreadableResponse(ServerError):
    """A 2xx whose body the pipeline cannot use (a proxy's HTML page, JSON without `result`, a
    create answer without a task id, a status answer without a status). The service accepted
    the request: a create (or a synchronous call) answered so may have been billed, so it is
    re-sent only within `retry.ambiguous_creates`; a status poll is simply asked again."""

    default_code = "UnreadableResponse"


class TransportError(RetryableError):
    """No HTTP answer at all: code ``Timeout`` or ``ConnectionError``; ``http_status`` is None.

    ``maybe_sent`` is False only when no connection was made (refused, DNS, TLS): then the
    service cannot have seen the request. Otherwise a create may have been accepted.
    """

    default_code = "ConnectionError"

    def __init__(self, code: str | None, message: str, *, maybe_sent: bool = True, **kwargs: Any) -> None:
        super().__init__(code, message, **kwargs)
        self.maybe_sent = maybe_sent


class PermanentError(ServiceError):
    """The request is wrong and will fail the same way every time: do not retry."""


class InvalidParameter(PermanentError):
    """HTTP 400 ``InvalidParameter`` (bad fields, body over 8 MB) and any other unlisted 4xx."""

    default_code = "InvalidParameter"


class TaskNotExist(PermanentError):
    """``BadRequest.TaskNotExist``: the task id is unknown or expired; the item may be resubmitted."""

    default_code = TASK_NOT_EXIST


class TaskFailed(PermanentError):
    """The async task ended FAILED; the message is the service's."""

    default_code = "TaskFailed"


class PollTimeout(PermanentError):
    """The task was still PENDING at the poll deadline; its task id is kept for `--retry-failed`."""

    default_code = "PollTimeout"


class BadResponse(PermanentError):
    """A create answer the pipeline cannot use (no task id)."""

    default_code = "BadResponse"


class DependencyFailed(PermanentError):
    """Never sent (nothing billed): the analysis this one comes `after` failed."""

    default_code = "DependencyFailed"


class FatalError(ServiceError):
    """Every further call would fail the same way: the run must stop (leaving items resumable)."""


class AuthError(FatalError):
    """HTTP 401/403: the API key is missing, wrong or not allowed."""

    default_code = "Unauthorized"
    exit_code = ExitCode.AUTH
    #: What the user must fix (an OSS refusal names the OSS AccessKey variables instead).
    credential = "DASHSCOPE_API_KEY"


class EndpointError(FatalError):
    """A 1xx/3xx answer: the configured endpoint is not the service (a redirect, a proxy page)."""

    default_code = "UnexpectedStatus"


class ServiceUnreachable(FatalError):
    """No connection to the endpoint after every retry (refused, DNS, TLS): stop, resumable."""

    default_code = "ServiceUnreachable"


def _status_code_name(http_status: int) -> str | None:
    """'Too Many Requests' -> 'TooManyRequests': a readable code when the server sent none."""
    try:
        return HTTPStatus(http_status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return None


def classify(
    http_status: int | None,
    code: str | None,
    message: str | None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> ServiceError:
    """Map one non-2xx response (or, with ``http_status=None``, a transport failure) to its error.

    Decides by status first, then by code; the server's code is kept when it sent one.
    """
    cls: type[ServiceError]
    if http_status is None:
        cls = TransportError
    elif http_status in (401, 403):
        cls = AuthError
    elif http_status == 429:
        cls = RateLimited
    elif 500 <= http_status <= 599:
        cls = ServerError
    elif 400 <= http_status <= 499:
        cls = TaskNotExist if code == TASK_NOT_EXIST else InvalidParameter
    else:
        cls = EndpointError
    if not code:
        code = (_status_code_name(http_status) if http_status is not None else None) or cls.default_code
    if not message:
        message = f"HTTP {http_status}" if http_status is not None else "no response from the service"
    return cls(
        code,
        message,
        http_status=http_status,
        request_id=request_id,
        retry_after=retry_after,
    )


def redact(text: str, secret: str | None) -> str:
    """Return ``text`` with every occurrence of ``secret`` replaced by ``***``."""
    if not secret:
        return text
    return text.replace(secret, REDACTED)
