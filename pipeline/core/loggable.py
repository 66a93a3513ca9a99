"""What of a URL or a request failure may be logged: the host, never the rest.

Ping URLs carry their secret in the path (Healthchecks: `https://hc-ping.com/<uuid>`) and
Pushgateway URLs may carry `user:password@`; aiohttp's and urllib's exception messages can
quote the full URL. So logs get `host_of(url)` and `safe_reason(exc)`, nothing else.
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: The logger of one DEBUG record per HTTP exchange with the service (method, path, status,
#: milliseconds, request id; never a header or a body): shown only with -vv.
WIRE_LOGGER = "pipeline.wire"


def with_scheme(url: str) -> str:
    """`url`, with `http://` in front when it has no scheme (prometheus_client's convention)."""
    return url if "://" in url else f"http://{url}"


def host_of(url: str) -> str:
    """The host (and port) of a URL: all of it that may be logged."""
    try:
        parts = urlsplit(with_scheme(url))
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # an invalid port
        return "?"


def safe_reason(exc: BaseException) -> str:
    """A loggable reason for a failed request: exception type plus HTTP status or OS error text."""
    code = getattr(exc, "code", None) or getattr(exc, "status", None)
    if isinstance(code, int):  # urllib HTTPError.code, aiohttp ClientResponseError.status
        return f"{type(exc).__name__} (HTTP {code})"
    inner = getattr(exc, "reason", None) or getattr(exc, "os_error", None)  # URLError / aiohttp connector
    if isinstance(inner, OSError) and inner.strerror:
        return f"{type(exc).__name__} ({inner.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__} ({exc.strerror})"
    return type(exc).__name__
