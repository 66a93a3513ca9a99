"""Bounded echo: how a message quotes a value the user gave, whatever its size.

Every message that repeats a user's value (config errors, manifest rejects, CLI errors) quotes
it with `shown(value)`: its repr, cut to a bounded length with an ellipsis and, when cut, how
long the value was. A 5 MB string or a list of a million entries costs a few dozen characters
of message and no more than a few hundred characters of work: containers are summarised with
`reprlib` (which stops after a few entries) instead of being walked whole.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sized
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ECHO_LIMIT", "clipped", "safe_url", "shown"]

#: The most characters of a value a message quotes (the length note comes on top).
ECHO_LIMIT = 60

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = ECHO_LIMIT + 2  # the ends of a quoted string; `shown` cuts to the limit itself
_REPR.maxother = ECHO_LIMIT
for _name in ("maxdict", "maxlist", "maxtuple", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_REPR, _name, 6)


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """`value` as a message quotes it: its repr when at most `limit` characters, otherwise its
    first `limit` characters, an ellipsis and how long the value was (in characters for a
    string, in entries for a list or mapping)."""
    if isinstance(value, str):
        text = repr(value[: limit + 1])
        if len(value) <= limit and len(text) <= limit + 2:  # the quotes do not count against the limit
            return text
        return f"{value[:limit]!r}… ({len(value):,} characters)"
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an int too long to print, a pathological object
        if isinstance(value, int):
            return f"<an integer of about {int(value.bit_length() * 0.30103):,} digits>"
        return f"<{type(value).__name__}>"
    if len(text) <= limit and "..." not in text:
        return text
    size = ""
    if isinstance(value, Sized):
        unit = "entries" if isinstance(value, (Mapping, list, tuple, set, frozenset)) else "items"
        size = f" ({len(value):,} {unit})"
    return f"{text[:limit]}…{size}"


def clipped(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` unquoted (a key name, a path in a sentence), cut like `shown` when longer than `limit`."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def safe_url(url: str) -> str:
    """`url` fit for a message: a password in it becomes `***` (an endpoint, a limiter, a ping or
    Pushgateway URL typed with ``user:password@``); one that cannot be parsed shows its scheme only
    rather than risk a password."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        return urlunsplit((parts.scheme, f"{parts.username or ''}:***@{host}{port}", parts.path, parts.query,
                           parts.fragment))
    except ValueError:
        return url.split(":", 1)[0] + "://…" if "@" in url else url

