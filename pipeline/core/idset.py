"""`IdSet`: a compact set of item ids, 128-bit digests instead of strings.

The reader uses it to reject repeated ids within a manifest, and a resume uses it for the
ids already done; both hold one entry per manifest item, so its size per id is what matters.
"""

from __future__ import annotations

from array import array

__all__ = ["IdSet"]

_WORD = 0xFFFF_FFFF_FFFF_FFFF


def _digest(item_id: str) -> tuple[int, int]:
    """Two 64-bit words for `item_id`; the first is never 0, which marks an empty slot."""
    return (hash(item_id) & _WORD) or 1, hash("\x00" + item_id) & _WORD


class IdSet:
    """Remembers the ids seen so far in 16 bytes each (32 with the table's slack), not as strings.

    An open-addressing hash set (linear probing, load <= 1/2) of 128-bit digests: two 64-bit
    words per slot in an ``array('Q')``; a first word of 0 marks an empty slot. The words are
    Python's own string hash of the id and of the id behind a NUL (SipHash, computed in C; the
    first is cached on the string, so asking twice is free). They are salted per process,
    which is fine for a set that lives in memory. 128 bits matter: a resume skips the items in
    this set, so a collision would silently skip an unfinished item; at 64 bits that is about
    3e-8 per million ids, at 128 bits it is nil for any catalog.
    """

    __slots__ = ("_count", "_mask", "_slots")

    def __init__(self, expected: int = 0) -> None:
        """An empty set with room for `expected` ids before it has to grow."""
        size = 1024
        while size < 2 * expected:  # sized up front when the count is known: no rehashing
            size *= 2
        self._slots = array("Q", [0]) * (2 * size)  # pairs of words; `size` slots, a power of two
        self._mask = size - 1  # number of slots - 1: turns a digest into a slot index
        self._count = 0  # ids stored

    def add(self, item_id: str) -> bool:
        """Record `item_id`; True if it is new, False if it was seen before."""
        if not self._insert(*_digest(item_id)):
            return False
        self._count += 1
        if 2 * self._count > self._mask + 1:
            old = self._slots
            self._slots = array("Q", [0]) * (2 * len(old))
            self._mask = len(old) - 1
            for i in range(0, len(old), 2):
                if old[i]:
                    self._insert(old[i], old[i + 1])
        return True

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        first, second = _digest(item_id)
        slots, mask = self._slots, self._mask
        j = 2 * (first & mask)
        while current := slots[j]:
            if current == first and slots[j + 1] == second:
                return True
            j = (j + 2) & (2 * mask + 1)
        return False

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"IdSet({self._count} ids, {self._mask + 1} slots)"

    def _insert(self, first: int, second: int) -> bool:
        slots, wrap = self._slots, 2 * self._mask + 1
        j = 2 * (first & self._mask)
        while current := slots[j]:
            if current == first and slots[j + 1] == second:
                return False
            j = (j + 2) & wrap
        slots[j], slots[j + 1] = first, second
        return True
