"""A JSON Lines item's id read from the raw line bytes, without decoding the JSON.

A shard (`--shard K/N`) reads every line of the manifest but keeps one in N: decoding the
other lines only to learn their id made 8 shards pay about twice the CPU of one unsharded read.
`line_id` finds the id when the line opens with it — ``{"id": "…"`` with JSON whitespace
anywhere between, the value free of escapes and control characters — and answers None
(decode it in full) for everything else: an id placed after other keys, escaped, not a
string, blank, not UTF-8, or absent (an id derived from the item's fields).

What it answers is the id the decoded line would give *if the line is valid*: the first key of
an object is a top-level key, and an escape-free JSON string is its bytes. A line that only
looks valid (broken further on, a repeated "id" key, bad UTF-8 past the id) is rejected when
decoded, and a rejected line without an id belongs to a shard by its line number — so the
caller (`manifest.reader`) never skips a line its line number gives to this shard, and every
line decoded today by the shard that reports it still is.
"""

from __future__ import annotations

import re

__all__ = ["line_id"]

#: Only JSON's own whitespace (space, tab, CR, LF), so a match is never wider than JSON allows.
_OPENS_WITH_ID = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"id"[ \t\r\n]*:[ \t\r\n]*"([^"\\\x00-\x1f]*)"')
#: The compact form most writers emit (`json.dumps(..., separators=(",", ":"))`): no regex needed.
_COMPACT = b'{"id":"'


def line_id(raw: bytes) -> str | None:
    """The id of the item on this raw JSON Lines line when the line opens with a plain string
    id, else None (see the module docstring)."""
    if raw.startswith(_COMPACT):
        end = raw.find(b'"', len(_COMPACT))
        found = raw[len(_COMPACT):end] if end >= 0 else b"\\"
        if b"\\" in found:  # an escape (or no closing quote): the decoded value may differ
            return None
    else:
        match = _OPENS_WITH_ID.match(raw)
        if match is None:
            return None
        found = match.group(1)
    try:
        value = found.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return value if value.strip() else None  # a blank id is rejected by validation: decode it
