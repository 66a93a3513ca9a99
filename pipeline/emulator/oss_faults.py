"""Faults the emulator's OSS app injects on request, so tests can show what an upload does when
OSS misbehaves.

::

    state.faults.inject("PutObject", "503", times=2)          # the next two PutObjects answer 503
    state.faults.inject("ListObjectsV2", "drop", after=1)     # the second listing request drops
    state.faults.inject(UPLOAD_OPERATIONS, "hang", times=None) # every upload hangs, until cleared
    state.faults.clear()                                       # OSS comes back; hung requests end

Kinds, each what a client meets on the wire:

=============  ===============================================================================
``503``/``500``  an OSS XML error with that status, the request not processed
``drop``         the connection closed before the request is processed: no answer
``drop_after``   the request processed (an object stored), then the connection closed unanswered
``hang``         no byte back until the fault is cleared; then the connection closes, unprocessed
``slow``         the request waits ``seconds``, then is processed and answered as usual
``garbage``      a 200 whose body is an HTML page, the request not processed (a proxy's answer)
=============  ===============================================================================

A fault applies to the operations it names (``"*"``: every one), ``times`` requests, or every
request until :meth:`OssFaults.clear` with ``times=None``, starting after ``after`` requests of
them were served as usual (a fault part way through a listing). ``applied`` counts the faults met.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["ANY_OPERATION", "FAULT_KINDS", "UPLOAD_OPERATIONS", "FaultKind", "OssFault", "OssFaults"]

FaultKind = Literal["503", "500", "drop", "drop_after", "hang", "slow", "garbage"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
ANY_OPERATION = "*"
#: The operations that write an object: PutObject, and the multipart sequence.
UPLOAD_OPERATIONS = ("PutObject", "InitiateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
GARBAGE_BODY = b"<html><head><title>Welcome</title></head><body>Please log in to continue.</body></html>"


@dataclass
class OssFault:
    """One injected fault: its kind, how many more requests it applies to (None: until cleared)."""

    kind: FaultKind
    remaining: int | None = 1
    seconds: float = 0.0  # "slow": the wait before the request is served
    after: int = 0  # requests still to serve as usual before this fault applies


class OssFaults:
    """The faults still to apply, per operation, and the count of those applied."""

    def __init__(self) -> None:
        self._pending: dict[str, list[OssFault]] = {}
        self.applied: Counter[str] = Counter()  # fault kind -> requests it was applied to
        self._released = asyncio.Event()  # set by clear(): hung requests end

    def __repr__(self) -> str:
        return f"OssFaults(pending={sorted(self._pending)}, applied={dict(self.applied)})"

    def inject(self, operations: str | Iterable[str], kind: FaultKind = "503", times: int | None = 1,
               seconds: float = 0.0, after: int = 0) -> None:
        """Make the next ``times`` requests of each of ``operations`` (None: every one, until
        cleared) meet ``kind``, once ``after`` more of them were served as usual; ``seconds`` is
        how long a ``slow`` one waits."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown OSS fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, got {times!r}")
        if after < 0:
            raise ValueError(f"after must be >= 0, got {after!r}")
        names = [operations] if isinstance(operations, str) else list(operations)
        for name in names:
            self._pending.setdefault(name, []).append(OssFault(kind, times, seconds, after))

    def clear(self) -> None:
        """No more faults; requests hung by one end now."""
        self._pending.clear()
        self._released.set()
        self._released = asyncio.Event()

    def take(self, operation: str) -> OssFault | None:
        """The fault this request of ``operation`` meets, if any (and one fewer to apply)."""
        for name in (operation, ANY_OPERATION):
            queue = self._pending.get(name)
            if not queue:
                continue
            fault = queue[0]
            if fault.after > 0:  # served as usual: the fault is further along
                fault.after -= 1
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.pop(0)
            self.applied[fault.kind] += 1
            return fault
        return None

    async def released(self) -> None:
        """Return once the faults are cleared (a hung request waits here)."""
        await self._released.wait()
