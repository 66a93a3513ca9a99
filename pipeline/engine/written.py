"""What follows a durable line: the sink sends every line it has written and marked done on a
stream, and this stage takes each in turn to

- the counts (`RunStats.on_line`: progress and the summary agree with the file),
- the chain (`Chain.parent_written`: analyses waiting for this one go on),
- the failure watch (its window saved every `WATCH_SAVE_EVERY` lines; a trip stops the run),
- the spend cap (a settlement above its reservation took settled + reserved past it: stop),
- then `on_line`, if given (`pipeline.stream` hands the line to its consumer).

It never waits on another stage, so the sink is never held up by it. Stops go to `Stopping`.
"""

from __future__ import annotations

from collections.abc import Callable

from anyio.streams.memory import MemoryObjectReceiveStream

from ..core.outcome import Stop, StopReason, is_run_fault
from ..core.results import ItemStatus, ResultLine
from ..observe.report import RunStats
from ..state.checkpoint import Checkpoint
from .chaining import Chain
from .shutdown import FailureWatch
from .spend import SpendLedger
from .stopping import Stopping
from .streams import items_of

__all__ = ["WATCH_SAVE_EVERY", "WrittenLines"]

#: The failure watch's window is saved in the checkpoint every this many lines (and at the end).
WATCH_SAVE_EVERY = 50


class WrittenLines:
    """The stage after the sink (see the module docstring)."""

    def __init__(self, *, stats: RunStats, chain: Chain, watch: FailureWatch, ledger: SpendLedger,
                 stops: Stopping, checkpoint: Checkpoint,
                 on_line: Callable[[ResultLine], None] | None = None) -> None:
        self._stats = stats
        self._chain = chain
        self._watch = watch
        self._ledger = ledger
        self._stops = stops
        self._ckpt = checkpoint
        self._on_line = on_line  # must not wait either
        self.seen = 0

    def __repr__(self) -> str:
        return f"WrittenLines(seen={self.seen})"

    async def run(self, written: MemoryObjectReceiveStream[ResultLine]) -> None:
        """Take every written line until the sink closes the stream."""
        async with written:
            async for line in items_of(written):
                self.take(line)

    def take(self, line: ResultLine) -> None:
        """One durable line."""
        self.seen += 1
        self._stats.on_line(line)
        self._chain.parent_written(line)
        error = line.error or {}
        tripped = self._watch.record(line.status is ItemStatus.FAILED and is_run_fault(
            error.get("code"), error.get("http_status")))
        if self.seen % WATCH_SAVE_EVERY == 0:
            self._ckpt.set_meta("failure_window", self._watch.state())
        if tripped:
            self._stops.request(Stop(StopReason.THRESHOLD, tripped))
        if self._ledger.over_cap():  # a settlement above its reservation: send nothing more
            self._stops.request(Stop(StopReason.SPEND_CAP, self._ledger.stop_detail()))
        if self._on_line is not None:
            self._on_line(line)
