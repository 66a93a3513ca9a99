"""Sharded runs: `--shard K/N` takes the items whose id hashes to K mod N.

The hash is stable (SHA-256 of the id), so every shard, on every host, agrees on who owns an
item; shards' result files can be concatenated because their ids are disjoint by construction.
Each shard gets its own results file and state dir (and so its own lock), derived from the
names given, so the same command line can be handed to N pods.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

__all__ = ["Shard", "parse_shard"]

#: Kubernetes Indexed Jobs give each pod its index here; `--shard auto/N` reads it.
INDEX_ENV = "JOB_COMPLETION_INDEX"


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, item_id: str) -> bool:
        """Whether this shard runs the item with this id."""
        digest = hashlib.sha256(item_id.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def owns_line(self, line: int) -> bool:
        """Whether this shard reports a manifest line that has no usable id (a rejected line)."""
        return line % self.count == self.index

    def path(self, path: Path) -> Path:
        """`results.jsonl` -> `results.shard-2-of-4.jsonl` (a state dir gets the suffix at its end)."""
        tag = f"shard-{self.index}-of-{self.count}"
        if path.suffix and not path.name.endswith(".state"):
            return path.with_name(f"{path.stem}.{tag}{path.suffix}")
        return path.with_name(f"{path.name}.{tag}")


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> Shard:
    """`K/N` or `auto/N` (K from JOB_COMPLETION_INDEX). Raises `UsageError` naming the flag."""
    env = os.environ if env is None else env
    head, sep, tail = text.partition("/")
    try:
        count = int(tail)
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected K/N or auto/N, e.g. 2/8") from None
    if not sep or count < 1:
        raise UsageError(f"--shard {text!r}: N must be a whole number >= 1")
    if head == "auto":
        raw = env.get(INDEX_ENV)
        if raw is None:
            raise UsageError(f"--shard auto/{count}: {INDEX_ENV} is not set (it is, in a Kubernetes Indexed Job)")
        head = raw
    try:
        index = int(head)
    except ValueError:
        raise UsageError(f"--shard {text!r}: K must be a whole number or 'auto'") from None
    if not 0 <= index < count:
        raise UsageError(f"--shard {text!r}: K must be between 0 and {count - 1}")
    return Shard(index, count)
