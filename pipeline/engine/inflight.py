"""The in-flight cap: at most `max_in_flight` units of work of a capability between their start
(a submitter takes a job, or the reader finds a task an earlier session recorded) and their
ending. Each such unit carries a `Token`; the finisher gives it back (`InFlight.release`, called
from `Finisher.end` and nowhere else), after the unit's line has gone to the sink.

A unit whose task the service accepted keeps its token when a stop cancels the polling: the
task is still in flight at the service (the summary counts it so) and the next run polls it;
nothing of this run takes a token after a stop, so none waits for it.
"""

from __future__ import annotations

from ..core import aio
from ..core.capabilities import CAPABILITIES
from ..observe.report import RunStats
from .work import Token

__all__ = ["InFlight"]


class InFlight:
    """Per-capability in-flight slots, and the run's in-flight gauge (`RunStats`) beside them."""

    def __init__(self, max_in_flight: int, stats: RunStats) -> None:
        # asyncio's semaphore (`core.aio`): taking a free slot does not yield, once per item.
        self._slots = {name: aio.Semaphore(max_in_flight) for name in CAPABILITIES}
        self._stats = stats

    def __repr__(self) -> str:
        held = {name: self._stats.caps[name].in_flight for name in self._slots if self._stats.caps[name].in_flight}
        return f"InFlight({held})"

    async def take(self, capability: str) -> Token:
        """A token of `capability`, once one is free."""
        await self._slots[capability].acquire()
        self._stats.caps[capability].in_flight += 1
        return Token(capability)

    def release(self, token: Token) -> None:
        """Give `token` back (the finisher, at its unit's ending). Twice is a bug."""
        if not token.held:
            raise RuntimeError(f"{token!r} given back twice")
        token.held = False
        self._slots[token.capability].release()
        self._stats.caps[token.capability].in_flight -= 1
