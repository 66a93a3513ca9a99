"""Everything one running emulator knows: settings, clock, limiters, tasks, faults, counters,
and the chunks its segmentations returned.

It lives on the event loop that serves the app; from another thread, go through
``EmulatorThread`` which hops onto that loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from .chunks import SegmentLedger
from .counters import Counters
from .faults import FaultInjector
from .oss_store import ObjectStore
from .ratelimit import SlidingWindow
from .settings import CAPABILITIES, EmulatorSettings, FaultSettings
from .tasks import TaskStore

Clock = Callable[[], float]


class EmulatorState:
    """The mutable state behind one emulator app."""

    def __init__(self, settings: EmulatorSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or time.monotonic
        window = settings.window_seconds
        self.limiters = {c: SlidingWindow(settings.qps[c], window) for c in CAPABILITIES}
        self.counters = Counters(window)
        ttl = None if settings.task_ttl is None else settings.real_seconds(settings.task_ttl)
        self.tasks = TaskStore(ttl)
        self.injector = FaultInjector(settings.seed, settings.faults)
        #: The OSS emulator's objects, when one runs beside this app: an `oss://` input in a
        #: bucket it holds must exist, and results derive from the object's bytes.
        self.objects: ObjectStore | None = None
        #: Chunks video-segmentation returned, by source: a summarization must send them back
        #: unchanged (chunks.py). Not cleared by a counters reset or by forgetting tasks.
        self.segments = SegmentLedger()

    @property
    def faults(self) -> FaultSettings:
        """The fault settings in force now."""
        return self.injector.settings

    @faults.setter
    def faults(self, value: FaultSettings) -> None:
        self.injector.settings = value  # a 429 burst already running runs its course

    def update_faults(self, changes: Mapping[str, Any] | None = None, **more: Any) -> FaultSettings:
        """Apply fault setting changes (validated; unknown keys raise SettingsError)."""
        self.faults = self.faults.updated({**(changes or {}), **more})
        return self.faults

    def forget_tasks(self, task_ids: list[str] | None = None) -> int:
        """Forget tasks (all when None), as if they had expired; returns how many."""
        count = self.tasks.forget(task_ids)
        self.counters.tasks_forgotten += count
        return count

    def counters_snapshot(self) -> dict[str, Any]:
        """The counters as JSON-ready data (shape in ``counters.py``)."""
        now = self.clock()
        return self.counters.snapshot(self.tasks.status_counts(now), now)

    def __repr__(self) -> str:
        settings = self.settings
        return f"EmulatorState(tasks={len(self.tasks)}, seed={settings.seed}, scale={settings.time_scale})"


#: Where an emulator app keeps its state: ``app[STATE]``.
STATE = web.AppKey("emulator_state", EmulatorState)
