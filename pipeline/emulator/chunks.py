"""Chained chunks: a summarization must get back exactly the chunks a segmentation returned.

When a client is first sent the SUCCESS of a video-segmentation task, the emulator remembers a
fingerprint of the chunks it returned, under the video's source (the ``input.oss`` or
``input.url`` value; the service ids of the two capabilities play no part). A
video-summarization create whose ``input.chunks`` is not empty and whose source was segmented
here must carry exactly those chunks (compared as canonical JSON, chunk by chunk), or it is
answered 400 ``InvalidParameter``. Chunks for a source never segmented here, or without a
source, are accepted unchecked: users may bring chunks of their own.

The memory is bounded: at most ``capacity`` sources, the least recently used forgotten first
(a forgotten source is unchecked again), and per source the last ``RESULTS_PER_SOURCE``
distinct chunk lists (one video segmented with two output prefixes gives two lists, both
valid). It outlives the tasks themselves: a client may chain after the segmentation task
expired. The counters keep the outcomes as ``chained_chunks_*`` (see ``counters.py``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .counters import CHAIN_OUTCOMES, Counters, canonical_json
from .wire import invalid

#: How many sources the emulator remembers segmentation chunks for; far more than any test
#: or benchmark run segments, and a few tens of MB at most.
SOURCE_CAPACITY = 100_000
#: Distinct chunk lists remembered per source (the most recent ones).
RESULTS_PER_SOURCE = 4
#: Outcomes of a summarization that carried chunks, as counted.
MATCHED, MISMATCHED, UNCHECKED = CHAIN_OUTCOMES

Fingerprint = tuple[bytes, ...]  # sha256 of each chunk's canonical JSON, in order


def input_source(inp: Any) -> str | None:
    """The source identity of an ``input`` object: its non-blank ``oss``, else ``url``, else None."""
    if not isinstance(inp, Mapping):
        return None
    for key in ("oss", "url"):
        value = inp.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def fingerprint(chunks: list[Any]) -> Fingerprint:
    """One digest per chunk: equal fingerprints mean equal canonical JSON of the whole list."""
    return tuple(hashlib.sha256(canonical_json(c).encode("utf-8")).digest() for c in chunks)


def _difference(expected: Fingerprint, got: Fingerprint) -> str:
    """Where two different fingerprints part: the first chunk that differs, or the missing tail."""
    for i, (want, have) in enumerate(zip(expected, got, strict=False)):
        if want != have:
            return f"first difference at input.chunks[{i}]"
    if len(got) < len(expected):
        return f"the chunks from chunk_index {len(got)} on are missing"
    return f"input.chunks[{len(expected)}] and after are extra"


class SegmentLedger:
    """Fingerprints of the chunks video-segmentation returned, by source, least recently used first."""

    __slots__ = ("_sources", "capacity")

    def __init__(self, capacity: int = SOURCE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._sources: OrderedDict[str, list[Fingerprint]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def remember(self, source: str, chunks: Any) -> None:
        """A client was sent ``chunks`` as the result of segmenting ``source``."""
        if not isinstance(chunks, list):
            return
        returned = fingerprint(chunks)
        known = self._sources.setdefault(source, [])
        if returned in known:
            known.remove(returned)
        known.append(returned)  # the latest last: error messages compare against it
        del known[:-RESULTS_PER_SOURCE]
        self._sources.move_to_end(source)
        while len(self._sources) > self.capacity:
            self._sources.popitem(last=False)

    def check(self, source: str | None, chunks: list[Any]) -> tuple[str, str | None]:
        """``(outcome, problem)``: MATCHED, UNCHECKED (source unknown or absent), or MISMATCHED
        with a message naming the source and the first chunk that differs."""
        if source is None or (known := self._sources.get(source)) is None:
            return UNCHECKED, None
        self._sources.move_to_end(source)
        got = fingerprint(chunks)
        if got in known:
            return MATCHED, None
        expected = known[-1]
        problem = (
            f"input.chunks are not the chunks video-segmentation returned for {source} "
            f"({len(expected)} chunks expected, got {len(got)}; {_difference(expected, got)}): "
            "pass the segmentation result's data unchanged"
        )
        return MISMATCHED, problem


def check_summarization_chunks(ledger: SegmentLedger, counters: Counters, body: Mapping[str, Any]) -> None:
    """Count a validated summarization body that carries chunks; raise InvalidParameter on a mismatch."""
    inp = body.get("input")
    chunks = inp.get("chunks") if isinstance(inp, Mapping) else None
    if not isinstance(chunks, list) or not chunks:
        return
    outcome, problem = ledger.check(input_source(inp), chunks)
    counters.chained_chunks[outcome] += 1
    if problem is not None:
        raise invalid(problem)
