"""One run per results file, whatever its state dir.

The state-dir lock (`lock`) keeps two runs out of one state dir, but two runs given one `--out`
and different `--state-dir`s would each submit, and pay for, the whole catalog, and write into
one file. So a run also holds an exclusive `flock` on a lock file next to its results file
(`results.jsonl.lock`, never deleted: removing a lock file races with the next run opening it),
taken before its state dir is created; a second run on a live `--out` stops with exit 7 like
one on a live state dir. The lock file names its holder and the holder's state dir, and it
stays after the run, so it also records which state dir the results file belongs to.

A run that would start a new state dir for a `--out` whose run lives in another state dir (the
default `<out>.state`, or the one the lock file names) is refused with exit 2 (`check_owner`):
before the results file has a line, the path rule (`paths`, "a results file is never adopted")
cannot see that run, yet its recorded tasks would be submitted again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.echo import clipped
from ..core.errors import PipelineError, StateLocked, UsageError
from .checkpoint import Checkpoint, MetaKey
from .lock import StateDirLock, describe, lock_holder
from .shards import Shard

__all__ = ["LOCK_SUFFIX", "SETUP_WAIT_S", "ResultsLock", "check_owner", "check_results_free", "results_lock_path",
           "setting_up"]

#: How long a run waits for another run of the same `--out` to finish claiming it (milliseconds
#: of local file work, unless that machine is very busy).
SETUP_WAIT_S = 60.0

#: The results file's lock is the results file's name with this added.
LOCK_SUFFIX = ".lock"
#: The most bytes of a lock file read for the state dir it names.
READ_AT_MOST = 4096


@contextlib.contextmanager
def setting_up(results: Path, shard: Shard | None) -> Iterator[None]:
    """Runs of one `--out` (any sharding, any state dir) check whose it is and claim it one at a
    time: the checks (`check_results_free`, `shards.check_sharding`, `check_owner`) and the claim
    (the state dir's and the results file's locks, the checkpoint) run under an exclusive `flock`
    on the directory of the unsharded results file. Without it two runs started together each
    found no other and both ran, paying for every item twice (an unsharded run and two shardings
    started at once: 180 duplicate submissions for 30 items). Waits at most `SETUP_WAIT_S`."""
    directory = (shard.unpath(results) if shard else results).parent
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        deadline = time.monotonic() + SETUP_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StateLocked(f"another run of --out {clipped(str(results), 240)} has been starting for "
                                      f"{SETUP_WAIT_S:g} s; run this one again once it has started") from None
                time.sleep(0.01)  # before the run's work starts: nothing else waits on this loop
        yield
    finally:
        os.close(fd)  # and with it the flock


def results_lock_path(results: Path) -> Path:
    """`results.jsonl` -> `results.jsonl.lock`, next to it."""
    return results.with_name(results.name + LOCK_SUFFIX)


class ResultsLock(StateDirLock):
    """`acquire()` the results file's lock or raise `StateLocked` naming the holder and its state dir."""

    def __init__(self, results: Path, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.path = results_lock_path(results)
        self._results = results
        self._state_dir = state_dir

    def __repr__(self) -> str:
        return f"ResultsLock({str(self.path)!r}, held={self._fd is not None})"

    def _refusal(self, holder: dict[str, Any] | None) -> str:
        return _refusal(self._results, holder)

    def _holder_info(self) -> dict[str, Any]:
        return {**super()._holder_info(), "state_dir": str(self._state_dir.resolve())}


def _refusal(results: Path, holder: dict[str, Any] | None) -> str:
    theirs = (holder or {}).get("state_dir")
    where = f", state dir {clipped(str(theirs), 240)}" if isinstance(theirs, str) else ""
    return (f"another run is writing --out {clipped(str(results), 240)} ({describe(holder)}{where}); wait for it "
            "to finish, or give this run its own --out")


def check_results_free(results: Path) -> None:
    """Refuse (`StateLocked`, exit 7) a run whose results file a live run holds; creates nothing."""
    holder = lock_holder(results_lock_path(results))
    if holder is not None:
        raise StateLocked(_refusal(results, holder))


def check_owner(results: Path, state_dir: Path, shard: Shard | None) -> None:
    """Refuse (`UsageError`, exit 2) to start a new state dir for `results` while another state dir
    (the default one, or the one its lock file names) holds work of a run writing it."""
    if (state_dir / Checkpoint.DB_NAME).exists():
        return  # not new: `resume.check_identity` checks whose it is
    base = shard.unpath(results) if shard else results
    default = base.with_name(base.name + ".state")
    candidates = [shard.path(default) if shard else default]
    recorded = _recorded_state_dir(results)
    if recorded is not None:
        candidates.append(recorded)
    for other in dict.fromkeys(candidates):
        if other.resolve() == state_dir.resolve():
            continue
        units = _units_of_run(other, results)
        if units:
            raise UsageError(
                f"--out {clipped(str(results), 240)} belongs to the run in state dir {clipped(str(other), 240)} "
                f"({units} (item, analysis) done or in flight), and the state dir {clipped(str(state_dir), 240)} is "
                "new: a second state dir for one results file would submit, and pay for, that work again. To go on "
                f"with that run, give --state-dir {clipped(str(other), 240)} (the default when --state-dir is left "
                "out, for <out>.state); for a separate run, give another --out")


def _recorded_state_dir(results: Path) -> Path | None:
    """The state dir the results file's lock file names (its last holder's), if any."""
    try:
        with open(results_lock_path(results), "rb") as f:
            info = json.loads(f.read(READ_AT_MOST) or b"null")
    except (OSError, ValueError):
        return None
    value = info.get("state_dir") if isinstance(info, dict) else None
    return Path(value) if isinstance(value, str) and value else None


def _units_of_run(state_dir: Path, results: Path) -> int:
    """(item, analysis) keys done or with a task in `state_dir`, if it holds a run writing `results`;
    0 otherwise (no such run, or a checkpoint that cannot be read: nothing known to protect)."""
    if not (state_dir / Checkpoint.DB_NAME).is_file():
        return 0
    try:
        ckpt = Checkpoint.open(state_dir, read_only=True)
    except (PipelineError, OSError, sqlite3.Error):
        return 0
    try:
        if ckpt.get_meta(MetaKey.OUT) != str(results.resolve()):
            return 0
        return sum(n for counts in ckpt.counts().values() for n in counts.values())
    except sqlite3.Error:
        return 0
    finally:
        ckpt.close()
