"""Sharded runs: `--shard K/N` takes the items whose id hashes to K mod N.

The hash is stable (SHA-256 of the id), so every shard, on every host, agrees on who owns an
item; shards' result files can be concatenated because their ids are disjoint by construction.
Each shard gets its own results file and state dir (and so its own lock), derived from the
names given, so the same command line can be handed to N pods.

Every run of one `--out` must use one sharding: items move between shards when N changes, so
`--shard 0/3` after `0/2` and `1/2` (a Kubernetes Indexed Job whose `completions` changed), or
an unsharded run after sharded ones, would submit — and pay for — work another state dir has
done or has a task for. `check_sharding` finds the state dirs and results files of the same
`--out` made with another sharding, before anything is created, and refuses the run (exit 2),
naming them and the way forward. Refused rather than reused: reuse would mean reading other
runs' checkpoints and results files on every resume and writing one (item, analysis) into two
results files, while a refusal costs nothing and the remedy is one flag.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import PipelineError, UsageError
from .checkpoint import Checkpoint
from .lock import live_holder

__all__ = ["Shard", "Sibling", "check_sharding", "other_shardings", "parse_shard"]

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

    @property
    def tag(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def path(self, path: Path) -> Path:
        """`results.jsonl` -> `results.shard-2-of-4.jsonl` (a state dir gets the suffix at its end)."""
        if path.suffix and not path.name.endswith(".state"):
            return path.with_name(f"{path.stem}.{self.tag}{path.suffix}")
        return path.with_name(f"{path.name}.{self.tag}")

    def unpath(self, path: Path) -> Path:
        """The name `path` was made from (`path(unpath(p)) == p` for a shard's own files)."""
        head, sep, tail = path.name.rpartition(f".{self.tag}")
        return path.with_name(head + tail) if sep else path


_TAG = re.compile(r"\.shard-(\d+)-of-(\d+)")
#: How many other state dirs a refusal names before it says "and N more".
NAME_AT_MOST = 8


@dataclass(frozen=True)
class Sibling:
    """A state dir or results file of the same `--out` made with another sharding."""

    path: Path
    shard: Shard | None  # None: a run without --shard
    units: int | None  # (item, analysis) keys done or with a task; None: a results file, or unreadable
    live: bool = False  # a run holds its state dir now (it may not have registered any work yet)

    def describe(self) -> str:
        spec = f"shard {self.shard}" if self.shard else "unsharded"
        if self.live and not self.units:
            return f"{self.path} ({spec}, running now)"
        if self.units is None:
            what = "results file" if self.path.is_file() else "unreadable checkpoint"
            return f"{self.path} ({spec}, {what})"
        return f"{self.path} ({spec}, {self.units} (item, analysis) done or in flight)"


def _spec(name: str, base: str, suffix: str = "") -> tuple[bool, Shard | None]:
    """Whether `name` is `base` or a shard's name made from it, and which shard."""
    if name == base + suffix:
        return True, None
    if not (name.startswith(base) and name.endswith(suffix)):
        return False, None
    middle = name[len(base):len(name) - len(suffix)] if suffix else name[len(base):]
    match = _TAG.fullmatch(middle)
    if not match or not int(match[1]) < int(match[2]):
        return False, None
    return True, Shard(int(match[1]), int(match[2]))


def _named(base: Path, suffix: str = "") -> Iterator[tuple[Path, Shard | None]]:
    """`base` (+ `suffix`) and every shard's name made from it that exists."""
    parent = base.parent
    pattern = glob.escape(base.name) + ".shard-*-of-*" + glob.escape(suffix)
    for path in [parent / (base.name + suffix), *sorted(parent.glob(pattern))]:
        ok, shard = _spec(path.name, base.name, suffix)
        if ok and (path.exists() or path.is_symlink()):
            yield path, shard


def _started(state_dir: Path) -> int | None:
    """How many keys a state dir has done or has a task for (None: its checkpoint is unreadable)."""
    try:
        ckpt = Checkpoint.open(state_dir, read_only=True)
    except (PipelineError, OSError, sqlite3.Error):
        return None
    try:
        return sum(n for counts in ckpt.counts().values() for n in counts.values())
    except sqlite3.Error:
        return None
    finally:
        ckpt.close()


def other_shardings(results: Path, state_dir: Path, shard: Shard | None) -> list[Sibling]:
    """The state dirs and results files of this run's `--out` made with another sharding (another
    N, or sharded vs. not) that hold work: found by name next to the results file, next to the
    state dir given, and next to the default state dir (a run given --state-dir may have a
    sibling that was not, and the other way round)."""
    results_base = shard.unpath(results) if shard else results
    state_base = shard.unpath(state_dir) if shard else state_dir
    default_state = results_base.with_name(results_base.name + ".state")
    mine = shard.count if shard else None
    found: dict[Path, Sibling] = {}
    for base in dict.fromkeys((state_base, default_state)):
        for path, theirs in _named(base):
            if (theirs.count if theirs else None) == mine or not (path / Checkpoint.DB_NAME).exists():
                continue
            units = _started(path)
            live = live_holder(path) is not None  # started a moment ago: no work registered yet
            if units != 0 or live:
                found.setdefault(path.resolve(), Sibling(path, theirs, units, live))
    stem, suffix = (results_base.stem, results_base.suffix) if results_base.suffix else (results_base.name, "")
    for path, theirs in _named(results_base.with_name(stem), suffix):
        if (theirs.count if theirs else None) == mine or not path.is_file() or path.stat().st_size == 0:
            continue
        if any(s.shard == theirs for s in found.values()):  # its state dir is named already
            continue
        found.setdefault(path.resolve(), Sibling(path, theirs, None))
    return list(found.values())


def check_sharding(results: Path, state_dir: Path, shard: Shard | None) -> None:
    """Refuse (exit 2) a run whose `--out` already has work made with another sharding."""
    siblings = other_shardings(results, state_dir, shard)
    if not siblings:
        return
    base = shard.unpath(results) if shard else results
    named = "; ".join(s.describe() for s in siblings[:NAME_AT_MOST])
    if len(siblings) > NAME_AT_MOST:
        named += f"; and {len(siblings) - NAME_AT_MOST} more"
    counts = sorted({s.shard.count for s in siblings if s.shard})
    ways = [f"--shard K/{n} for K in 0..{n - 1} (a Kubernetes Indexed Job: keep completions: {n}, "
            f"--shard auto/{n})" for n in counts]
    if any(s.shard is None for s in siblings):
        ways.append("without --shard")
    me = f"--shard {shard}" if shard else "a run without --shard"
    raise UsageError(
        f"{me}: the results of --out {base} are already made with another sharding: {named}. Items move "
        "between shards when the sharding changes, so this run would submit, and pay for, work those state "
        f"dirs have done or have tasks for. To go on, run with the sharding already there: {' or '.join(ways)}; "
        "or give another --out for a separate run (it pays for every item again)")


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> Shard:
    """`K/N` or `auto/N` (K from JOB_COMPLETION_INDEX). Raises `UsageError` naming the flag (and
    the variable, for auto)."""
    env = os.environ if env is None else env
    where = f"--shard {text[:40]!r}"  # echoed values are bounded
    head, sep, tail = text.partition("/")
    try:
        count = int(tail)
    except ValueError:
        raise UsageError(f"{where}: expected K/N or auto/N, e.g. 2/8") from None
    if not sep or count < 1:
        raise UsageError(f"{where}: N must be a whole number >= 1")
    fix = ""
    if head == "auto":
        raw = env.get(INDEX_ENV)
        if raw is None:
            raise UsageError(f"--shard auto/{count}: {INDEX_ENV} is not set (it is, in a Kubernetes Indexed Job)")
        head = raw
        where = f"--shard auto/{count} with {INDEX_ENV}={raw[:40]!r}"
        fix = f" (give the Job completions: {count}, the N of --shard auto/N)"
    try:
        index = int(head)
    except ValueError:
        raise UsageError(f"{where}: K must be a whole number or 'auto'") from None
    if not 0 <= index < count:
        raise UsageError(f"{where}: K must be between 0 and {count - 1}{fix}")
    return Shard(index, count)
