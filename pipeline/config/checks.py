"""Pure parsers and checks for single configuration values: durations, URLs, loopback hosts,
OSS output templates.

Each `*_problem` check returns None when the value is fine, or a sentence saying what is
expected; the caller (`load.py`) turns it into a `ConfigError` naming the key. `coerce` and
`parse_env` type one layer's raw value and raise `ConfigError` naming the key and where the
value came from. Nothing here does I/O except `metrics_file_problem`, which looks at the
file system.
URLs are echoed without their password, since a Pushgateway or Redis URL may carry one.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..core.echo import safe_url, shown
from ..core.errors import ConfigError

__all__ = [
    "coerce",
    "extra_problem",
    "finite_number",
    "is_loopback_host",
    "limiter_problem",
    "metrics_file_problem",
    "parse_duration",
    "parse_env",
    "ping_url_problem",
    "pushgateway_problem",
    "safe_url",
]

_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_NUMBER = r"\d+(?:\.\d+)?"
# Units in falling order, each at most once: "1h30m" reads one way only; "30m1h" is a typo.
_DURATION = re.compile("".join(rf"(?:(?P<{u}>{_NUMBER}){u})?" for u in "dhms"))
_DURATION_FORMS = "seconds ('90'), or numbers with units d, h, m, s in that order ('90s', '15m', '6h', '1d', '1h30m')"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "90", "90s", "15m", "6h", "1d" or "1h30m".

    A bare number is seconds. Raises ValueError, saying what is accepted, for anything else:
    an empty string, a sign ("-5m"), an unknown unit ("6x"), or units out of order.
    """
    raw = text.strip() if isinstance(text, str) else ""
    if re.fullmatch(_NUMBER, raw):
        return float(raw)
    match = _DURATION.fullmatch(raw)
    if not raw or match is None:
        raise ValueError(f"{shown(text)} is not a duration; expected {_DURATION_FORMS}")
    return sum(float(value) * _UNIT_SECONDS[unit] for unit, value in match.groupdict().items() if value)


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (also as an IPv4-mapped IPv6 address)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # a DNS name: it may resolve anywhere, so it is not loopback
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


#: Each URL option's own example, so a refused value is answered with the form its option takes.
PING_URL_EXAMPLE = "https://hc-ping.com/<uuid>"
PUSHGATEWAY_EXAMPLE = "http://pushgateway:9091"
LIMITER_EXAMPLE = "redis://127.0.0.1:6379/0"
#: Redis' SELECT takes a C int: no server has a database numbered past this.
MAX_REDIS_DB = 2**31 - 1


def _url_problem(url: str, schemes: tuple[str, ...], example: str, hint: str = "") -> str | None:
    expected = f"expected a URL such as {example!r}{hint}"
    if not url or any(c.isspace() for c in url):
        return f"{shown(safe_url(url))} is not a URL; {expected}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{shown(safe_url(url))} is not a valid URL (a port is a number from 1 to 65535); {expected}"
    if parts.scheme.lower() not in schemes or not parts.hostname or "://" not in url:
        starts = " or ".join(s + "://" for s in schemes)
        return f"{shown(safe_url(url))} must be a URL with a host, starting {starts}; {expected}"
    if port == 0:
        return f"{shown(safe_url(url))} has port 0, which nothing listens on; {expected}"
    return None


def ping_url_problem(url: str) -> str | None:
    """None for an http(s) ping URL with a host (a query is kept); otherwise what is wrong."""
    return _url_problem(url, ("http", "https"), PING_URL_EXAMPLE)


def pushgateway_problem(url: str) -> str | None:
    """None for an http(s) Pushgateway address with a host; otherwise what is wrong. A query or a
    fragment is refused: the push API appends its path to the address, so it would land in them."""
    problem = _url_problem(url, ("http", "https"), PUSHGATEWAY_EXAMPLE)
    if problem is None and (urlsplit(url).query or urlsplit(url).fragment):
        return (f"{shown(safe_url(url))} has a query or fragment, which the Pushgateway's API has no place for: "
                f"give its address only, such as {PUSHGATEWAY_EXAMPLE!r}")
    return problem


def limiter_problem(value: str) -> str | None:
    """None for `memory` or a Redis URL redis-py connects to as written: redis:// or rediss://
    with a host, or unix:// with a socket path; a database number (path `/N` or `?db=N`) from 0
    up; in the query only `db` (and `ssl_*` for rediss://). Otherwise what is wrong."""
    if value == "memory":
        return None
    problem = _redis_url_problem(value)
    return None if problem is None else f"must be 'memory' or a Redis URL: {problem}"


def _redis_url_problem(url: str) -> str | None:
    hint = " (rediss:// for TLS, unix:///path/to/redis.sock for a socket)"
    if not url.lower().startswith("unix://"):
        return _url_problem(url, ("redis", "rediss", "unix"), LIMITER_EXAMPLE, hint) or _redis_db_problem(url)
    parts = urlsplit(url)
    if parts.hostname or parts.path in ("", "/"):
        return (f"{shown(safe_url(url))} must give the socket's path after unix:// (three slashes); "
                f"expected a URL such as 'unix:///run/redis/redis.sock'")
    return _redis_db_problem(url)


def _redis_db_problem(url: str) -> str | None:
    """The database and query of a Redis URL that has a scheme and a host (or a socket path).

    redis-py reads `/abc` as no database at all and `/1/2` as database 12: both are refused here.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    given = [] if scheme == "unix" or parts.path in ("", "/") else [parts.path[1:]]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "db":
            given.append(value)
        elif not (scheme == "rediss" and name.startswith("ssl_")):
            allowed = "db" + (" and ssl_… options" if scheme == "rediss" else "")
            return (f"{shown(safe_url(url))} sets {shown(name)} in its query; a limiter URL takes only {allowed} "
                    "(the pipeline sets its own timeouts and retries so that it notices a lost Redis at once)")
    if parts.fragment:
        return f"{shown(safe_url(url))} has a fragment (#…), which means nothing to Redis: remove it"
    if len(given) > 1:
        return f"{shown(safe_url(url))} gives the database twice: once, as /N or as ?db=N"
    if given and not (re.fullmatch(r"[0-9]{1,10}", given[0]) and int(given[0]) <= MAX_REDIS_DB):
        return (f"the database {shown(given[0])} in {shown(safe_url(url))} is not a Redis database number: "
                f"a whole number from 0 (Redis has 16 by default, 0 to 15), such as {LIMITER_EXAMPLE!r}")
    return None


def extra_problem(key: str) -> str | None:
    """Why `key` (metrics_file, pushgateway) cannot work here: prometheus-client, its optional
    extra, is not installed. Told without importing it (start-up pays nothing)."""
    if importlib.util.find_spec("prometheus_client") is None:
        return (f"{key} needs prometheus-client, which is not installed: pip install "
                "'opensearch-media-pipeline[metrics]'")
    return None


def metrics_file_problem(path: str) -> str | None:
    """Why `path` cannot be a metrics file as given: empty, or a directory. Where it is (a missing
    directory, under a regular file, inside a state dir, the run's own files) is the run's one
    path rule's to say (`state.paths.check_targets`), before anything is created: it knows the
    run's state dir and files, which the config does not."""
    if not path.strip():
        return "must be a file path, got an empty string"
    if os.path.isdir(path):
        if any(os.path.exists(os.path.join(path, marker)) for marker in ("checkpoint.sqlite3", "run.lock")):
            return f"{shown(path)} is a run's state dir; give a file path outside it, such as pipeline.prom"
        return f"{shown(path)} is a directory; give a file path such as {shown(os.path.join(path, 'pipeline.prom'))}"
    return None


def finite_number(value: object) -> bool:
    """True for an int or float (not a bool) that is neither nan nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """`value` for config key `key` as the type of its `default`, or ConfigError naming `source`.

    Ints become floats where a float is expected; `max_duration` also takes a duration string
    (`parse_duration`); `max_cost` and `max_duration` are numbers or None.
    """
    if key in ("max_cost", "max_duration") and value is None:
        return None
    if key == "max_duration" and isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(str(exc), key=key, source=source) from None
    if key in ("max_cost", "max_duration"):
        default = 0.0  # numbers, though their default is None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, got {shown(value)}", key=key, source=source)
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number, got {shown(value)}", key=key, source=source)
        return float(value) + 0.0  # -0.0 + 0.0 is 0.0: `--max-cost -0` is a cap of 0, shown as 0
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"must be an integer, got {shown(value)}", key=key, source=source)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, got {shown(value)}", key=key, source=source)
    elif default is None:  # optional strings: endpoint, metrics_file, URLs, limiter_namespace
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"must be a string or null, got {shown(value)}", key=key, source=source)
    elif isinstance(default, Mapping) and not isinstance(value, Mapping):
        raise ConfigError(f"must be a mapping, got {shown(value)}", key=key, source=source)
    return value


def parse_env(var: str, key: str, raw: str, current: Any) -> Any:
    """The value of environment variable `var` (for config key `key`, now `current`), typed."""
    if isinstance(current, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"must be true or false, got {shown(raw)}", key=key, source=var)
    if isinstance(current, float) or key == "max_cost":
        try:
            value = float(raw) + 0.0  # no -0.0 (see coerce)
        except ValueError:
            raise ConfigError(f"must be a number, got {shown(raw)}", key=key, source=var) from None
        if not math.isfinite(value):
            raise ConfigError(f"must be a finite number, got {shown(raw)}", key=key, source=var)
        return value
    return raw
