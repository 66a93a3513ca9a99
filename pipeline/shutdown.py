"""How a run stops early: SIGINT/SIGTERM handling and the failure threshold.

First signal: the run stops taking items, lets submits on the wire finish, flushes and exits 3.
Second signal: exit 3 at once. That is safe at any instant, because every checkpoint write is
a transaction and a result line is flushed before it is marked done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Callable

log = logging.getLogger("pipeline.run")

EXIT_ABORTED = 3
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalHandlers:
    """Installs the run's handlers on its loop; `remove()` is safe to call twice."""

    def __init__(self, on_first: Callable[[str], None]) -> None:
        self._on_first = on_first  # called with the reason, once
        self._count = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in SIGNALS:
            try:
                loop.add_signal_handler(sig, self._handle, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
                return
        self._loop = loop

    def remove(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)

    def _handle(self, sig: int) -> None:
        self._count += 1
        name = signal.Signals(sig).name
        if self._count >= 2:
            log.error("second %s: exiting now; run again to resume", name)
            os._exit(EXIT_ABORTED)
        self._on_first(f"interrupted by {name}; run again to resume")


class FailureThreshold:
    """Trips when more than `max_ratio` of the first `window` finished items failed
    (window 0: never). `record()` returns the reason when it trips, else None."""

    def __init__(self, window: int, max_ratio: float) -> None:
        self.window = window
        self.max_ratio = max_ratio
        self.finished = 0
        self.failed = 0

    def record(self, success: bool) -> str | None:
        if not self.window or self.finished >= self.window:
            return None
        self.finished += 1
        self.failed += not success
        if self.failed > self.max_ratio * self.window:
            return (f"failure threshold: {self.failed} of the first {self.finished} finished items "
                    f"failed (limit: more than {self.max_ratio:.0%} of the first {self.window})")
        return None
