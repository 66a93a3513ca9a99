"""Where the service is: the base URL every request path starts with, from the endpoint the
user gave (a full URL or a bare host), the protocol and the workspace. Pure; the config checks
an endpoint with it when it loads, so a run never gets as far as its first request with one
the client would refuse."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from .echo import safe_url, shown
from .errors import ConfigError

__all__ = ["PATH_PART", "build_base_url"]

#: What a workspace, a capability's path segment or a service id may be: one URL path part.
PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def build_base_url(endpoint: str, protocol: str, workspace: str) -> str:
    """``{scheme}://{host[:port]}/v3/openapi/workspaces/{workspace}`` (no trailing slash).

    ``endpoint`` is a full URL (``http://127.0.0.1:8080``) or, as in the official SDK, a bare
    host (``xxx.opensearch.aliyuncs.com``) combined with ``protocol`` ("http" or "https").
    Raises ``ConfigError`` (a ``ValueError``) saying what is expected.
    """
    expected = (
        "expected a host such as 'xxx.opensearch.aliyuncs.com' (with protocol http or https) "
        "or a URL such as 'http://127.0.0.1:8080' with no path"
    )
    text = (endpoint or "").strip()
    if not text:
        raise ConfigError(f"is empty; {expected}", key="endpoint")
    if "://" not in text:
        scheme = (protocol or "").strip().lower()
        if scheme not in ("http", "https"):
            raise ConfigError(f"must be 'http' or 'https', got {shown(protocol)}", key="protocol")
        text = f"{scheme}://{text}"
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{shown(safe_url(endpoint))} is not a valid address; {expected}", key="endpoint") from exc
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in text)
    ):
        raise ConfigError(f"{shown(safe_url(endpoint))} is not a valid address; {expected}", key="endpoint")
    if not PATH_PART.fullmatch(workspace or ""):
        raise ConfigError(
            f"{shown(workspace)} is not a valid workspace name; expected letters, digits, '.', '_' or '-' "
            "(usually 'default')",
            key="workspace",
        )
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}/v3/openapi/workspaces/{workspace}"
