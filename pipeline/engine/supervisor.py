"""The supervisor: acts on the stop the stages ask for (`Stopping`), and on the time limit.

A stop is a cancel scope, not a sentinel:

- a spend cap or a time limit drains: the reader is cancelled (no new item is taken), accepted
  tasks are polled to their end, and the work stages then end by themselves; a stronger stop
  may still follow;
- a signal, the failure threshold or OSS refusing its key pair stop taking items, cancel the
  polling (recorded tasks are polled by the next run), and wait, at most the request timeout,
  for creates already on the wire, so that their task ids are recorded; then cancel the rest;
- a refused API key or an unreachable service cancels everything at once: every further call
  would fail the same way.
"""

from __future__ import annotations

import logging

import anyio

from ..core.outcome import Stop, StopReason
from .stopping import Stopping

__all__ = ["Supervisor"]

log = logging.getLogger("pipeline.run")


class Supervisor:
    """Watches `stops` for one run (see the module docstring)."""

    def __init__(self, stops: Stopping, *, request_timeout: float) -> None:
        self._stops = stops
        self._request_timeout = request_timeout

    async def watch(self, *, work: anyio.CancelScope, reader: anyio.CancelScope, pollers: anyio.CancelScope) -> None:
        """Until a stop has been carried out (or this task is cancelled: the work ended first)."""
        stop = await self._stops.changed(None)
        while stop.reason.drains:  # the stages end by themselves; a stronger stop may follow
            reader.cancel()
            stop = await self._stops.changed(stop)
        reader.cancel()
        pollers.cancel()  # recorded tasks are polled by the next run
        stops = self._stops
        if not stop.reason.immediate and stops.on_wire:
            log.warning("waiting up to %.0f s for %d submits already sent, so their task ids are recorded; "
                        "a second Ctrl-C exits now", self._request_timeout, stops.on_wire)
            with anyio.move_on_after(self._request_timeout + 1):
                await stops.wire_clear()
        work.cancel()

    async def time_limit(self, seconds: float, time_scale: float) -> None:
        """Stop (draining) after `seconds` of run time (`time_scale`: the emulator's speed-up)."""
        await anyio.sleep(seconds / time_scale)
        self._stops.request(Stop(StopReason.TIME_LIMIT, f"--max-duration {seconds:g} s reached; accepted tasks "
                                                        "were finished; run the same command again to go on"))
