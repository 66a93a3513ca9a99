"""The done-id set: membership, growth, memory per id, and 128-bit digests."""

from __future__ import annotations

import tracemalloc

import pytest

from pipeline.core import idset
from pipeline.core.idset import IdSet


def test_add_says_new_once_per_id_and_remembers_across_growth() -> None:
    """add() is True the first time an id is seen, False after, and ids survive table growth."""
    seen = IdSet()
    ids = [f"id-{i}" for i in range(5000)]
    assert all(seen.add(i) for i in ids)
    assert not any(seen.add(i) for i in ids)
    assert len(seen) == 5000 and "id-4999" in seen and "id-5000" not in seen and 7 not in seen


def test_expected_size_is_allocated_up_front() -> None:
    """IdSet(expected=n) starts with room for n ids, so filling it does not rehash."""
    seen = IdSet(expected=10_000)
    slots_before = seen._slots
    for i in range(10_000):
        seen.add(str(i))
    assert seen._slots is slots_before and len(seen) == 10_000


def test_memory_stays_bounded() -> None:
    """200,000 ids fit in under 16 MB of traced memory, growth included (128-bit digests, not
    strings: a set of the strings needs ~28 MB)."""
    seen = IdSet()
    tracemalloc.start()
    try:
        for i in range(200_000):
            seen.add(f"catalog/2024/item-{i:08d}-with-a-long-id-string")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(seen) == 200_000
    assert peak < 16 * 1024 * 1024, peak


def test_both_digest_words_must_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ids whose first 64-bit digest collides are still told apart by the second word."""
    real = idset._digest
    monkeypatch.setattr(idset, "_digest", lambda item_id: (42, real(item_id)[1]))
    seen = IdSet()
    assert seen.add("a") and seen.add("b")
    assert "a" in seen and "b" in seen and "c" not in seen
    assert not seen.add("a")
