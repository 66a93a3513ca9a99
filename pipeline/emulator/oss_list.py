"""ListObjectsV2 as OSS answers it (``GET /bucket?list-type=2``), over the store's sorted keys.

Query parameters: ``prefix``, ``delimiter`` (keys with it after the prefix are rolled up into
``CommonPrefixes``, each counting as one entry against ``max-keys``), ``start-after`` (keys
after it), ``continuation-token`` (the last answer's ``NextContinuationToken``; it wins over
``start-after``), ``max-keys`` (1 to 1000, default 100; anything else is 400 InvalidArgument),
``encoding-type=url`` (``Key``, ``Prefix``, ``Delimiter``, ``StartAfter``, the tokens and each
common prefix are percent-encoded, as the SDK expects: it asks for it on every listing) and
``fetch-owner``. Each ``Contents`` carries ``Key``, ``LastModified`` (ISO 8601, UTC),
``ETag`` (quoted), ``Type``, ``Size`` and ``StorageClass``; the result ``KeyCount`` (keys and
common prefixes in this page), ``IsTruncated`` and, when truncated, ``NextContinuationToken``.

`list_page` is pure (a page is found by bisection in O(log n + page), so the thousandth
page of a million keys costs what the first does); `list_objects_v2` reads the request and
writes the XML. Tokens are opaque to clients: here, the last key or common prefix answered,
base64url-encoded.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote
from xml.sax.saxutils import escape

from .oss_store import StoredObject

__all__ = ["DEFAULT_MAX_KEYS", "MAX_KEYS", "ListingError", "Page", "decode_token", "encode_token",
           "list_objects_v2", "list_page"]

DEFAULT_MAX_KEYS = 100
MAX_KEYS = 1000
OWNER_ID = "emulator-owner"


class ListingError(ValueError):
    """A listing request OSS would refuse (400 InvalidArgument); the message says which parameter."""


@dataclass(frozen=True)
class Page:
    """One answer's worth: its keys and common prefixes (in order), and where the next one starts."""

    keys: list[str]
    prefixes: list[str]
    truncated: bool
    next_marker: str | None  # the last key or common prefix answered, when truncated


def _past(prefix: str) -> str | None:
    """The smallest string after every string that starts with `prefix` (None: no such string)."""
    for cut in range(len(prefix) - 1, -1, -1):
        if ord(prefix[cut]) < 0x10FFFF:
            return prefix[:cut] + chr(ord(prefix[cut]) + 1)
    return None


def list_page(keys: Sequence[str], *, prefix: str = "", delimiter: str = "", start_after: str = "",
              marker: str | None = None, max_keys: int = DEFAULT_MAX_KEYS) -> Page:
    """The page of sorted `keys` a ListObjectsV2 request answers.

    `marker` is a continuation token's decoded value: listing resumes after it, and a common
    prefix equal to it (the last entry of the previous page) is not answered twice."""
    after = marker if marker is not None else start_after
    start = bisect.bisect_left(keys, prefix)
    if after:
        start = max(start, bisect.bisect_right(keys, after))
    found_keys: list[str] = []
    found_prefixes: list[str] = []
    last: str | None = None
    index = start
    while index < len(keys) and keys[index].startswith(prefix):
        key = keys[index]
        rolled = key.find(delimiter, len(prefix)) if delimiter else -1
        if rolled >= 0:
            common = key[: rolled + len(delimiter)]
            if common == marker:  # answered at the end of the previous page
                index = _skip(keys, common, index)
                continue
            if len(found_keys) + len(found_prefixes) == max_keys:
                return Page(found_keys, found_prefixes, True, last)
            found_prefixes.append(common)
            last = common
            index = _skip(keys, common, index)
            continue
        if len(found_keys) + len(found_prefixes) == max_keys:
            return Page(found_keys, found_prefixes, True, last)
        found_keys.append(key)
        last = key
        index += 1
    return Page(found_keys, found_prefixes, False, None)


def _skip(keys: Sequence[str], common: str, index: int) -> int:
    """The index of the first key after `index` that does not start with `common`."""
    bound = _past(common)
    if bound is None:
        while index < len(keys) and keys[index].startswith(common):
            index += 1
        return index
    return bisect.bisect_left(keys, bound, index)


def encode_token(marker: str) -> str:
    """An opaque continuation token for `marker`."""
    return base64.urlsafe_b64encode(marker.encode("utf-8", "surrogatepass")).decode("ascii")


def decode_token(token: str) -> str:
    """The marker inside a token this emulator issued; raises `ListingError` for any other."""
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8", "surrogatepass")
    except (UnicodeError, binascii.Error, ValueError):
        raise ListingError("The continuation token provided is incorrect.") from None


def _max_keys(query: Mapping[str, str]) -> int:
    text = query.get("max-keys")
    if text is None or text == "":
        return DEFAULT_MAX_KEYS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= MAX_KEYS:
        raise ListingError(f"max-keys must be an integer from 1 to {MAX_KEYS}, got {text[:40]!r}")
    return value


@functools.lru_cache(maxsize=4096)  # objects written in the same instant (a fill) share one
def _iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _element(name: str, value: str) -> str:
    return f"<{name}>{escape(value)}</{name}>"


def list_objects_v2(bucket: str, query: Mapping[str, str], keys: Sequence[str],
                    lookup: Callable[[str], StoredObject | None]) -> bytes:
    """The ``ListBucketResult`` document answering `query` over the bucket's sorted `keys`;
    raises `ListingError` for a parameter OSS would refuse. (Written as text, not through
    ElementTree: a page of 1,000 objects cost 0.3 s that way, the emulator's whole budget.)"""
    encoding = query.get("encoding-type")
    if encoding not in (None, "", "url"):
        raise ListingError(f"encoding-type must be url, got {encoding[:40]!r}")
    encode: Callable[[str], str] = (lambda text: quote(text, safe="/")) if encoding == "url" else str
    max_keys = _max_keys(query)
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    start_after, token = query.get("start-after", ""), query.get("continuation-token")
    marker = decode_token(token) if token else None
    page = list_page(keys, prefix=prefix, delimiter=delimiter, start_after=start_after, marker=marker,
                     max_keys=max_keys)
    fields: list[tuple[str, str | None]] = [
        ("Name", bucket), ("Prefix", encode(prefix)), ("MaxKeys", str(max_keys)),
        ("Delimiter", encode(delimiter) if delimiter else None), ("StartAfter", encode(start_after) or None),
        ("ContinuationToken", encode(token) if token else None), ("EncodingType", encoding or None),
        ("IsTruncated", "true" if page.truncated else "false"),
        ("KeyCount", str(len(page.keys) + len(page.prefixes))),
        ("NextContinuationToken", encode(encode_token(page.next_marker)) if page.next_marker is not None else None),
    ]
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>']
    parts += [_element(name, value) for name, value in fields if value is not None]
    owner = f"<Owner>{_element('ID', OWNER_ID)}{_element('DisplayName', OWNER_ID)}</Owner>" \
        if query.get("fetch-owner") == "true" else ""
    for key in page.keys:
        obj = lookup(key)
        if obj is None:  # the index is rebuilt on every change: a key it holds is stored
            continue
        kind = "Multipart" if "-" in obj.etag else "Normal"
        parts.append(f"<Contents>{_element('Key', encode(key))}<LastModified>{_iso(obj.modified)}</LastModified>"
                     f"{_element('ETag', obj.etag)}<Type>{kind}</Type><Size>{obj.size}</Size>"
                     f"<StorageClass>Standard</StorageClass>{owner}</Contents>")
    parts += [f"<CommonPrefixes>{_element('Prefix', encode(common))}</CommonPrefixes>" for common in page.prefixes]
    parts.append("</ListBucketResult>")
    return "".join(parts).encode("utf-8")
