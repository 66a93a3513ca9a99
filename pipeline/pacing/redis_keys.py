"""Where the shared pacer lives in Redis: namespaces, key names, the client, and the checks
`run` and `status` make before and beside a run (reachable? who shares the budget?).

The namespace is per account: by default a truncated SHA-256 of the endpoint and the API key,
so two runs on one account share a budget while the key itself never reaches Redis, a log or
a message. RAM users of one account hold different keys; they set `limiter_namespace` to one
name so they share a budget too.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..core.echo import clipped, safe_url

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["check_redis", "connect", "default_namespace", "display_url", "group_keys", "live_processes",
           "proc_key", "proc_pattern"]

#: Hex digits of the hash kept: 64 bits tell accounts apart and give nothing back of the key.
NAMESPACE_HEX = 16
#: ZADD … LT (lowering a booking's arrival bound) came with Redis 6.2.
MIN_REDIS = (6, 2)
#: Domain separation: this hash is for naming keys, not a fingerprint usable elsewhere.
_NAMESPACE_SALT = b"opensearch-media-pipeline/limiter\0"


def default_namespace(endpoint: str, api_key: str) -> str:
    """The per-account key prefix: `opm-` and a truncated SHA-256 of endpoint and key."""
    normal = endpoint.strip().rstrip("/").lower()
    digest = hashlib.sha256(_NAMESPACE_SALT + normal.encode() + b"\0" + api_key.encode()).hexdigest()
    return f"opm-{digest[:NAMESPACE_HEX]}"


def group_keys(namespace: str, group: str) -> tuple[str, str]:
    """The grid hash (`next`, `pause`) and the sent set of one QPS group."""
    return f"{namespace}:qps:{group}:grid", f"{namespace}:qps:{group}:sent"


def proc_key(namespace: str, host: str, pid: int) -> str:
    """One process's heartbeat key."""
    return f"{namespace}:proc:{host}:{pid}"


def proc_pattern(namespace: str) -> str:
    """A SCAN pattern matching every heartbeat key of the namespace."""
    return f"{namespace}:proc:*"


def display_url(url: str) -> str:
    """`url` fit for a message: a password in it becomes `***` (`core.echo.safe_url`)."""
    return safe_url(url)


def connect(url: str, *, timeout: float) -> Redis:
    """A client for `url` that fails fast: no retries of its own (the pacer falls back to
    in-process pacing instead of stalling) and `timeout` seconds per connect and per reply."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client: Redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                   retry=Retry(NoBackoff(), 0), retry_on_error=[], decode_responses=True)
    return client


def _scrub(text: str, url: str) -> str:
    """Remove a password given in `url` from an error text, in case a library quoted it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


async def check_redis(url: str, *, timeout: float = 2.0) -> str | None:
    """None when the Redis at `url` answers PING; otherwise why not, naming the URL without
    its password (for an exit 2 before anything is written)."""
    try:
        import redis  # noqa: F401 - only to say how to install it
    except ImportError:
        return "the Redis limiter needs the redis package: pip install 'opensearch-media-pipeline[redis]'"
    client = connect(url, timeout=timeout)
    try:
        await client.ping()
        version = str((await client.info("server")).get("redis_version", "0"))
    except Exception as exc:  # any failure to answer is "unusable", whatever layer raised it
        return _unusable(url, exc)
    finally:
        await client.aclose()
    if _version(version) < MIN_REDIS:
        need = ".".join(map(str, MIN_REDIS))
        return f"the Redis limiter at {display_url(url)} runs Redis {version}; the shared pacer needs {need} or later"
    return None


def _unusable(url: str, exc: BaseException) -> str:
    """Why the Redis at `url` cannot be used, from the error its first commands raised."""
    from redis.exceptions import AuthenticationError, InvalidResponse, NoPermissionError, ResponseError

    where = display_url(url)
    reason = clipped(_scrub(f"{type(exc).__name__}: {exc}", url), 200)
    if isinstance(exc, AuthenticationError):
        return (f"the Redis limiter at {where} refused the credentials ({reason}); put the password in the URL: "
                "redis://:PASSWORD@host:6379/0, or redis://USER:PASSWORD@host:6379/0 for an ACL user")
    if isinstance(exc, NoPermissionError):
        return (f"the Redis user of the limiter at {where} may not run what the pacer needs ({reason}); "
                "allow it PING, INFO, SCRIPT, EVALSHA, EVAL, TIME, SET, DEL, SCAN, MGET and ZADD")
    if isinstance(exc, ResponseError) and "DB index is out of range" in str(exc):
        return (f"the Redis at {where} has no such database ({reason}): Redis has 16 by default (0 to 15) unless "
                "its `databases` setting says more; pick one it has, such as /0")
    if isinstance(exc, ResponseError):
        return f"the Redis limiter at {where} answered with an error ({reason}); its log says why: fix it or --limiter"
    if isinstance(exc, InvalidResponse):
        return (f"what answers at {where} does not speak the Redis protocol ({reason}): "
                "is that the Redis port? fix --limiter")
    return f"cannot reach the Redis limiter at {where} ({reason}); start it or fix --limiter"


def _version(text: str) -> tuple[int, ...]:
    """`6.2.14` -> (6, 2, 14); anything unreadable counts as (0,)."""
    try:
        return tuple(int(part) for part in text.split(".")[:3])
    except ValueError:
        return (0,)


async def live_processes(url: str, namespace: str, *, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The processes sharing the namespace's budget now (their heartbeats), oldest first."""
    client = connect(url, timeout=timeout)
    try:
        return await scan_processes(client, namespace)
    finally:
        await client.aclose()


async def scan_processes(client: Redis, namespace: str) -> list[dict[str, Any]]:
    """The heartbeats of `namespace` read with `client`, oldest first; unreadable ones skipped."""
    keys = [key async for key in client.scan_iter(match=proc_pattern(namespace), count=200)]
    values = await client.mget(keys) if keys else []
    found: list[dict[str, Any]] = []
    for value in values:
        try:
            record = json.loads(value) if value else None
        except ValueError:
            record = None
        if isinstance(record, dict):
            found.append(record)
    return sorted(found, key=lambda r: str(r.get("started_at", "")))
