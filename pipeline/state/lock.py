"""One live process per state dir: an exclusive `flock` held for the whole run.

The OS releases the lock when the process dies, however it dies, so `kill -9` never leaves a
stale lock behind. The lock file also names its holder (host, pid, start time) so a second run
can say who has it, and `status` can show that a run is live. `status` itself never locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..core.errors import StateLocked

__all__ = ["LOCK_NAME", "StateDirLock", "live_holder", "lock_holder"]

LOCK_NAME = "run.lock"
#: A probe by `status` takes the lock for an instant; a run starting in that instant retries
#: for this long before it reports the state dir as taken.
ACQUIRE_GRACE_S = 0.5
ACQUIRE_STEP_S = 0.05


class StateDirLock:
    """`acquire()` or raise `StateLocked` naming the holder; `release()` is safe twice."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"StateDirLock({str(self.path)!r}, held={self._fd is not None})"

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + ACQUIRE_GRACE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise StateLocked(self._refusal(holder)) from None
                time.sleep(ACQUIRE_STEP_S)
        info = self._holder_info()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd

    def _refusal(self, holder: dict[str, Any] | None) -> str:
        return (f"another run holds the state dir {self.path.parent} ({describe(holder)}); wait for it to finish, "
                "or give this run its own --out/--state-dir")

    def _holder_info(self) -> dict[str, Any]:
        """What the lock file says of its holder (a subclass may add to it)."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time()}

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def live_holder(state_dir: Path) -> dict[str, Any] | None:
    """The holder of a live run's lock, or None when no process holds it (read-only probe)."""
    return lock_holder(state_dir / LOCK_NAME)


def lock_holder(path: Path) -> dict[str, Any] | None:
    """The holder of the lock file `path` while a live process holds it, else None (read-only
    probe: creates nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {"host": None, "pid": None, "started_at": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "holder unknown"
    started = holder.get("started_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {when}"


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw or b"null")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
