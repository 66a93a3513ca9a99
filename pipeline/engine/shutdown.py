"""How a run stops early: signal handling and the failure watch.

First SIGINT/SIGTERM/SIGHUP: the run stops taking items, lets submits on the wire finish,
flushes and exits 3. Second signal: exit 3 at once. That is safe at any instant, because every
checkpoint write is a transaction and a result line is flushed before it is marked done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator

from ..core.exit_codes import ExitCode
from ..core.outcome import Stop, StopReason

__all__ = ["SIGNALS", "FailureWatch", "SignalHandlers", "carried_window", "exit_now", "exiting_on_signal",
           "signals_held"]

log = logging.getLogger("pipeline.run")

#: SIGHUP too: a closed terminal or a scheduler's hang-up means "stop", like SIGTERM.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalHandlers:
    """Installs the run's handlers on its loop; `remove()` is safe to call twice.

    The loop's own handlers (asyncio's), not an anyio signal receiver: a receiver lives in a task,
    and these must outlive every task group of the run, so that a second signal during the
    clean-up (the sink writing what was sent) still exits at once."""

    def __init__(self, on_first: Callable[[str], None]) -> None:
        self._on_first = on_first  # called with the signal's name, once
        self._count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._before: dict[int, object] = {}

    def install(self) -> None:
        """On the running loop (a run in another thread than the main one has no handlers)."""
        loop = asyncio.get_running_loop()
        self._before = {sig: signal.getsignal(sig) for sig in SIGNALS}
        for sig in SIGNALS:
            try:
                loop.add_signal_handler(sig, self._handle, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
                return
        self._loop = loop

    def remove(self) -> None:
        """Give the signals back to the handlers they had before `install` (the command line's
        `exit_now`, or whatever a program that embeds a run had). They are blocked while they
        change hands: asyncio's removal restores the default action, which a signal arriving in
        between would meet (exit 143 instead of 3)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        with signals_held():
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
                before = self._before.get(sig)
                if before is not None:  # None: set from C, cannot be put back from Python
                    signal.signal(sig, before)  # type: ignore[arg-type]

    def _handle(self, sig: int) -> None:
        self._count += 1
        name = signal.Signals(sig).name
        if self._count >= 2:
            log.error("second %s: exiting now; run again to resume", name)
            os._exit(ExitCode.INTERRUPTED)
        self._on_first(name)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait (in this thread) until the block ends, then arrive."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextlib.contextmanager
def exiting_on_signal() -> Iterator[None]:
    """While the block runs, a signal outside a run's own handling exits 3 at once (`exit_now`);
    afterwards the handlers from before are back, so a program (or a test) that calls the command
    line in its own process keeps its signals."""
    with signals_held():
        before = {sig: signal.signal(sig, exit_now) for sig in SIGNALS}
    try:
        yield
    finally:
        with signals_held():
            for sig, handler in before.items():
                if handler is not None:
                    signal.signal(sig, handler)


def exit_now(sig: int, _frame: object = None) -> None:
    """The handler outside a run's loop (while it starts, once it ended): exit 3 at once."""
    log.error("%s: exiting now; run the same command again to resume", signal.Signals(sig).name)
    os._exit(ExitCode.INTERRUPTED)


class FailureWatch:
    """Trips when more than `max_ratio` of the last `window` finished items failed for a reason
    that means the run is broken (see `outcome.is_run_fault`), never for bad items.

    The window survives resumes: `state()` is saved in the checkpoint and given back to the
    next session's watch (`carried_window` says which). `window` 0 turns it off. `record()`
    returns the reason when it trips.
    """

    def __init__(self, window: int, max_ratio: float, state: str = "") -> None:
        self.window = window
        self.max_ratio = max_ratio
        kept = state[-window:] if window else ""
        self._last: deque[bool] = deque((c == "1" for c in kept), maxlen=max(window, 1))

    def __repr__(self) -> str:
        return f"FailureWatch(window={self.window}, broken={sum(self._last)} of {len(self._last)})"

    def state(self) -> str:
        return "".join("1" if broken else "0" for broken in self._last)

    def record(self, run_fault: bool) -> str | None:
        if not self.window:
            return None
        self._last.append(run_fault)
        broken = sum(self._last)
        if broken > self.max_ratio * self.window:
            return (f"{broken} of the last {len(self._last)} finished items failed because the service or the "
                    f"network failed (limit: more than {self.max_ratio:.0%} of {self.window}); look at the "
                    "failures, then run the same command again to resume, with --retry-failed to send the items "
                    "it failed again (the resume's window starts empty)")
        return None


def carried_window(saved: str, last_stop: Stop | None) -> str:
    """The failure window a new session starts from. The saved one, so that a window spans
    interruptions (Ctrl-C, a time limit, kill -9: a broken service trips the watch just as in one
    long session); but empty after the threshold itself stopped the run. That window is full of
    the outage: carried over, it would trip again on the resume's first item whatever the service
    does now. Exit 5 is never retried by a scheduler, so the resume comes after someone looked,
    and its window judges only what happens from then on."""
    return "" if last_stop is not None and last_stop.reason is StopReason.THRESHOLD else saved
