"""The id set: membership, memory that does not grow with the ids, and 128-bit digests."""

from __future__ import annotations

from pathlib import Path

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


def _rss_kib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the RSS from /proc")
def test_memory_does_not_grow_with_the_ids() -> None:
    """Past the page cache, 250,000 more ids add almost nothing to the process's memory: they
    go to the set's temporary file (the in-memory set it replaces grew 16 B × 2 per id)."""
    seen = IdSet()
    for i in range(250_000):
        seen.add(f"catalog/2024/item-{i:08d}-with-a-long-id-string")
    before = _rss_kib()
    for i in range(250_000, 500_000):
        seen.add(f"catalog/2024/item-{i:08d}-with-a-long-id-string")
    assert len(seen) == 500_000
    assert _rss_kib() - before < 4096, (before, _rss_kib())


def test_ids_are_told_apart_by_128_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ids are the same entry only when their whole 128-bit digests are."""
    assert len(idset._digest("a")) == 16
    real = idset._digest
    monkeypatch.setattr(idset, "_digest", lambda item_id: real("a" if item_id in ("a", "alias") else item_id))
    seen = IdSet()
    assert seen.add("a") and seen.add("b")
    assert "a" in seen and "b" in seen and "c" not in seen
    assert not seen.add("alias")
