"""The service client of a run, wired to the pacers and the stop: every request waits for its
capability's pacer (a create in the submit lane, a status poll in the poll lane), a create's wait
and every backoff sleep end when the run stops (nothing of that request went out yet), a 429
with `Retry-After` pauses the capability's group, and each wait, response and retry is counted.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ..config.load import Config
from ..core import aio
from ..core.capabilities import CAPABILITIES
from ..core.errors import ServiceError
from ..core.lanes import Lane, PermitLike
from ..observe.report import RunStats
from ..pacing.memory import PacerBackend
from ..service.client import THROTTLE_WARN_EVERY, ServiceClient
from .stopping import Stopping

__all__ = ["Throttle", "build_client"]


class Throttle:
    """The client's hooks for one run (see the module docstring)."""

    def __init__(self, pacers: PacerBackend, stops: Stopping, stats: RunStats) -> None:
        self._pacers = pacers
        self._stops = stops
        self._stats = stats

    async def acquire(self, capability: str, lane: Lane) -> PermitLike | None:
        """A send slot of `capability`'s pacer in `lane` (a create's wait ends with `Stopped` on a stop)."""
        clock = aio.loop_clock()
        started = clock()
        if lane is Lane.SUBMIT:
            permit = await self._stops.interruptible(lambda: self._pacers.acquire(capability, lane))
        else:
            permit = await self._pacers.acquire(capability, lane)
        stats = self._stats.caps[capability]
        stats.paced_s[lane.value] += clock() - started
        stats.paced[lane.value] += 1
        return permit

    async def backoff(self, seconds: float) -> None:
        """A retry's backoff sleep, ended (`Stopped`) by a stop."""
        await self._stops.interruptible(lambda: anyio.sleep(seconds))

    def retried(self, capability: str, error: ServiceError, delay: float) -> None:
        """Count a retry; after a 429 with `Retry-After`, the whole group waits that long."""
        self._stats.on_retry(capability)
        if error.http_status == 429 and error.retry_after is not None:
            self._pacers.pause(capability, delay)


def build_client(cfg: Config, api_key: str, throttle: Throttle, stats: RunStats,
                 rand: Callable[[], float]) -> ServiceClient:
    """The run's client: its retry policy, the throttle's hooks, a connection pool for every worker."""
    return ServiceClient(
        cfg.endpoint or "", cfg.workspace, api_key, protocol=cfg.protocol, timeout=cfg.request_timeout,
        retry=cfg.effective_retry(), rand=rand, throttle=throttle.acquire, sleep=throttle.backoff,
        on_retry=throttle.retried, on_response=stats.on_response, on_ambiguous=stats.on_ambiguous,
        connection_limit=max(100, cfg.submit_workers * len(CAPABILITIES) + 64),
        warn_every=THROTTLE_WARN_EVERY / cfg.time_scale)
