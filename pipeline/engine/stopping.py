"""The run's stop: asked for by any stage, acted on by the supervisor.

`Stopping` is the one object the stages share with the supervisor. A stage that sees a reason
to stop (a 401 or an unreachable service, OSS refusing its key pair, the spend cap, the failure
threshold; a signal or the time limit) calls `request`; the supervisor waits on `changed` and
cancels what the reason says (see `supervisor`). What a stage reads of it:

- `taking`: False from the first stop on; take no new item, start nothing new.
- `interrupted`: the stop does not drain (anything but a spend cap or a time limit): accepted
  tasks are left to the next run, not polled to their end.
- `interruptible(wait)`: a wait before anything of a request went out (a pacer slot, a backoff,
  room under the spend cap) ends with `Stopped` when the run stops.
- `on_the_wire()`: marks a create between its start and its answer; a stop that waits for such
  creates (a signal, the failure threshold, OSS credentials refused) waits for `wire_clear`.

A later, stronger reason takes over (an interrupt after a spend-cap drain, a 401 after a
signal); a weaker one is ignored. `request` changes the state at once, with no await, so a stage
that asked for a stop sees it on its next step.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio

from ..core.errors import AuthError, FatalError, ServiceUnreachable, Stopped
from ..core.outcome import Stop, StopReason
from ..upload.errors import OssAuthError

__all__ = ["Stopping", "fatal_stop", "takes_over"]

log = logging.getLogger("pipeline.run")
T = TypeVar("T")


def takes_over(current: Stop | None, new: Stop) -> bool:
    """Whether `new` replaces the stop already asked for: the first one does; later, only a
    stronger one (one that does not drain after one that drains, an immediate one after one that
    is not)."""
    if current is None:
        return True
    return (current.reason.drains and not new.reason.drains) or (new.reason.immediate
                                                                 and not current.reason.immediate)


def fatal_stop(exc: FatalError) -> Stop:
    """The stop a fatal error of a call means, with what to do about it."""
    reason = (StopReason.OSS_AUTH if isinstance(exc, OssAuthError) else StopReason.AUTH
              if isinstance(exc, AuthError) else StopReason.UNREACHABLE
              if isinstance(exc, ServiceUnreachable) else StopReason.INTERRUPTED)
    advice = (f"fix {exc.credential}, then run the same command again to resume" if isinstance(exc, AuthError)
              else "nothing was marked failed; run the same command again to resume")
    return Stop(reason, f"{exc.code}: {exc.message}; {advice}")


class Stopping:
    """The stop asked for so far, the state the stages read, and the creates on the wire."""

    def __init__(self) -> None:
        self.stop: Stop | None = None
        self.taking = True
        self.interrupted = False
        self._waiting: set[anyio.CancelScope] = set()  # interruptible waits in progress
        self._changed = anyio.Event()
        self.on_wire = 0  # creates between their start and their answer
        self._wire_clear: anyio.Event | None = None  # made only while someone waits for it

    def __repr__(self) -> str:
        return f"Stopping(stop={self.stop!r}, on_wire={self.on_wire})"

    def request(self, stop: Stop) -> None:
        """Ask for `stop`; it takes over only if it is stronger than the one asked for before."""
        if not takes_over(self.stop, stop):
            return
        self.stop = stop
        log.warning("stopping: %s", stop)
        self.taking = False
        self.interrupted = self.interrupted or not stop.reason.drains
        for scope in list(self._waiting):
            scope.cancel()
        self._changed.set()
        self._changed = anyio.Event()

    def fatal(self, exc: FatalError) -> None:
        """A call failed in a way every further call would too: stop for it."""
        self.request(fatal_stop(exc))

    async def changed(self, seen: Stop | None) -> Stop:
        """The stop asked for, once it is another than `seen` (the supervisor's wait)."""
        while self.stop is seen:
            await self._changed.wait()
        assert self.stop is not None
        return self.stop

    async def interruptible(self, wait: Callable[[], Awaitable[T]]) -> T:
        """Await `wait` (a pacer slot, a backoff sleep, room under the cap) unless the run stops
        taking items: then raise `Stopped`. Nothing of this request has reached the service yet."""
        if not self.taking:
            raise Stopped("stopping")
        with anyio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                result = await wait()
            finally:
                self._waiting.discard(scope)
        if scope.cancelled_caught or not self.taking:
            raise Stopped("stopping")
        return result

    @contextmanager
    def on_the_wire(self) -> Iterator[None]:
        """Around a create, from before its body is built to its answer."""
        self.on_wire += 1
        try:
            yield
        finally:
            self.on_wire -= 1
            if self.on_wire == 0 and self._wire_clear is not None:
                self._wire_clear.set()
                self._wire_clear = None

    async def wire_clear(self) -> None:
        """Return once no create is on the wire."""
        while self.on_wire:
            if self._wire_clear is None:
                self._wire_clear = anyio.Event()
            await self._wire_clear.wait()
