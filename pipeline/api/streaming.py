"""`pipeline.stream`: items from Python in, each result line out once it is durable.

The run is `pipeline.arun`'s (the same checkpoint, files, lock, resume and exit codes), fed by an
item source over the caller's iterable (`engine.item_source`, kind "stream") and run in a task
of its own; the consumer's handle, `ResultStream`, takes the lines the run hands over after the
sink wrote and marked them (`Run(on_line=...)`). Three things make it safe to embed:

- Back-pressure: the item source takes the next item only while fewer than `STREAM_BUFFER` lines
  wait for the consumer, so a slow consumer holds the read, and what waits is bounded by that
  plus the work already in flight (queues and in-flight caps), never by the number of items.
- Leaving early: `aclose()` (or leaving `async with`, or dropping the handle after `break` or an
  exception) asks the run for the stop a signal asks for (submits on the wire finish and are
  recorded; exit code 3 in `result`) and `aclose` waits for it; cancelling a task waiting for a
  line cancels the run at once and waits until it let go of the state dir. Either way what was
  durable stays, and the same call again resumes.
- Leaving an `async for` before its end (`break`, an exception in its body) drops the loop's
  iterator (`_Lines`), and a handle dropped without `aclose` is dropped too: either stops its run
  in the background, even while the handle is still held, and a new stream on the same state dir
  in this process waits for that run to end instead of finding the lock taken. A stream of this
  process still running on it (its consumer still in its loop) is refused with `StateLocked`
  saying so.

asyncio only (as `arun`); nothing here installs a signal handler unless `handle_signals=True`.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..core.echo import clipped
from ..core.errors import ConfigError, StateLocked, UsageError
from ..core.outcome import Stop, StopReason
from ..core.results import ResultLine
from ..engine.closing import RunResult
from ..engine.item_source import STREAM_SOURCE, ItemSource, Records
from ..engine.runner import RunRequest, single_error
from ..engine.stopping import Stopping
from ..engine.watched import watched_run
from .options import RunOptions, RunSettings
from .running import ConfigSource, prepare, with_report

if sys.version_info < (3, 11):  # anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup
if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["STREAM_BUFFER", "ResultStream", "stream"]

#: Durable lines waiting for the consumer from which the stream takes no more items.
STREAM_BUFFER = 1024
#: Why a stream's run stops when its consumer leaves (the run's `reason`).
CONSUMER_LEFT = "the consumer of pipeline.stream() stopped reading; call it again with the same out to resume"


def stream(items: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]], *,
           out: str | os.PathLike[str], endpoint: str | None = None, api_key: str | None = None,
           config: ConfigSource = None, **options: Unpack[RunOptions]) -> ResultStream:
    """Run (or resume) the item dicts `items` (a manifest line's keys each), writing `out` as
    `pipeline.run` does, and iterate over each `ResultLine` once it is durable:

        async with pipeline.stream(items, out="results.jsonl", endpoint=url) as lines:
            async for line in lines:
                ...

    Everything is checked here, before anything starts (`ConfigError` / `UsageError`, exit code
    2), as for `pipeline.run`. A refused run (`StateLocked`, 7) raises from the first iteration;
    a run that ran ends the iteration and leaves its `RunResult` in `.result`. Invalid items are
    rejected with their index (the rejects file, the `pipeline` logger), never yielded."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, (Iterable, AsyncIterable)):
        raise ConfigError(f"must be an iterable or async iterable of item dicts, got {type(items).__name__}",
                          key="items", source="pipeline.stream()")
    request, settings = prepare(None, out=out, endpoint=endpoint, api_key=api_key, config=config, options=options,
                                caller="pipeline.stream()")
    return ResultStream(_Feed(request, settings, items))


class ResultStream:
    """The durable result lines of one `pipeline.stream` run, as they come (see the module
    docstring): an async iterator and an async context manager (leaving it closes the stream)."""

    def __init__(self, feed: _Feed) -> None:
        self._feed = feed

    @property
    def result(self) -> RunResult | None:
        """How the run ended (`exit_code`, `outcome`, `summary`), once it has; None before."""
        return self._feed.result

    @property
    def buffered(self) -> int:
        """Durable lines waiting for the consumer."""
        return len(self._feed.lines)

    @property
    def held(self) -> bool:
        """Whether the run waits for the consumer before it takes the next item (back-pressure)."""
        return self._feed.held

    def __aiter__(self) -> AsyncIterator[ResultLine]:
        return _Lines(self)

    async def __anext__(self) -> ResultLine:
        feed = self._feed
        if feed.closed:  # as a closed async generator: nothing more, and no run starts
            raise StopAsyncIteration
        feed.start()
        try:
            return await feed.next_line()
        except asyncio.CancelledError:  # the caller's task: the run stops at once
            await feed.stop(hard=True)
            raise

    async def aclose(self) -> None:
        """Stop the run (as a signal would) and wait until it has; nothing if it ended. The stream
        is closed: iterating it yields nothing more, and one never iterated never starts its run."""
        self._feed.closed = True
        await self._feed.stop(hard=False)

    async def __aenter__(self) -> Self:
        if not self._feed.closed:
            self._feed.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        # The consumer's own exception is the one that goes on; the run's error only when there is none.
        self._feed.closed = True
        await self._feed.stop(hard=isinstance(exc, asyncio.CancelledError), quiet=exc is not None)

    def __del__(self) -> None:
        self._feed.abandon()  # after a `break` without aclose: the run stops in the background


class _Lines:
    """One `async for` over a stream. Python drops the iterator as the loop is left, at once; if
    that was before the end (`break`, an exception in the loop's body), the run stops, as it does
    for a dropped `ResultStream`, even while the caller still holds that one."""

    def __init__(self, stream: ResultStream) -> None:
        self._stream = stream
        self._ended = False

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> ResultLine:
        try:
            return await self._stream.__anext__()
        except BaseException:  # the end, the run's error, a cancellation: nothing left to stop
            self._ended = True
            raise

    def __del__(self) -> None:
        if not self._ended:
            self._stream._feed.abandon()


#: Runs of streams in this process, by state dir, while their task runs.
_RUNNING: dict[Path, _Feed] = {}


class _Feed:
    """The run's side: its task, the lines waiting for the consumer, the window the item
    source waits on. It holds no reference to the `ResultStream`, so dropping that one is seen."""

    def __init__(self, request: RunRequest, settings: RunSettings, items: Records) -> None:
        self._request, self._settings, self._items = request, settings, items
        self.lines: collections.deque[ResultLine] = collections.deque()
        self._key = request.files.state_dir.resolve()
        self._task: asyncio.Task[RunResult] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()  # a line came, or the run ended
        self._room = asyncio.Event()  # the consumer took lines: fewer than STREAM_BUFFER wait
        self._stops: Stopping | None = None
        self._stop_asked: Stop | None = None  # before the run made its Stopping
        self._raised = False
        self.abandoned = False
        self.closed = False  # the consumer closed the stream: it yields nothing more
        self.held = False
        self.result: RunResult | None = None

    def start(self) -> None:
        if self._task is not None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise UsageError("pipeline.stream() runs in an asyncio event loop: iterate it with `async for`") from None
        self._task = self._loop.create_task(self._run(), name=f"pipeline.stream {self._request.files.results}")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[RunResult]) -> None:
        self._arrived.set()
        if not task.cancelled():
            task.exception()  # retrieved: a consumer that left never sees it, asyncio need not log it

    async def _run(self) -> RunResult:
        earlier = _RUNNING.get(self._key)
        if earlier is not None and earlier.abandoned:  # stopping in the background: let it finish first
            await earlier.finished()
        elif earlier is not None:
            raise StateLocked(f"an earlier pipeline.stream() in this process is still running on this out "
                              f"(state dir {clipped(str(self._key))}): leave its `async with`, `await "
                              "aclose()` it, or break out of its `async for` first; then this call resumes it")
        if self._key not in _RUNNING:
            _RUNNING[self._key] = self
        try:
            self._stops = Stopping()
            if self._stop_asked is not None:
                self._stops.request(self._stop_asked)
            source = ItemSource(STREAM_SOURCE, self._request.config, analyses=self._request.analyses,
                                records=self._items, ready=self._ready, stops=self._stops)
            try:
                result = await watched_run(self._request, progress=self._settings.progress,
                                           handle_signals=self._settings.handle_signals, source=source,
                                           on_line=self._take, stops=self._stops)
                self.result = await with_report(result, self._request, self._settings)
            except BaseExceptionGroup as group:
                raise single_error(group) from None
            return self.result
        finally:
            if _RUNNING.get(self._key) is self:
                del _RUNNING[self._key]

    def _take(self, line: ResultLine) -> None:
        """A durable line (called by the run, never waits)."""
        if not self.abandoned:
            self.lines.append(line)
            self._arrived.set()

    async def _ready(self) -> None:
        """The item source's wait before its next item: until the consumer has room."""
        while len(self.lines) >= STREAM_BUFFER and not self.abandoned:
            self._room.clear()
            self.held = True
            try:
                await self._room.wait()
            finally:
                self.held = False

    async def next_line(self) -> ResultLine:
        assert self._task is not None
        while not self.lines:
            if self._task.done():
                if self._raised or self._task.cancelled() or self._task.exception() is None:
                    raise StopAsyncIteration
                self._raised = True  # the run's error once, then the end
                raise self._task.exception()  # type: ignore[misc]
            self._arrived.clear()
            await self._arrived.wait()
        line = self.lines.popleft()
        if len(self.lines) < STREAM_BUFFER:
            self._room.set()
        return line

    def _ask_stop(self) -> None:
        stop = Stop(StopReason.INTERRUPTED, CONSUMER_LEFT)
        self._stop_asked = stop
        self._room.set()  # a read waiting for room ends now
        if self._stops is not None:
            self._stops.request(stop)

    async def stop(self, *, hard: bool, quiet: bool = False) -> None:
        """Stop the run (`hard`: cancel it at once) and wait until its task ended, even when the
        caller is cancelled meanwhile (then cancel it at once and re-raise). The run's error, if
        it had one not raised yet, is raised unless `hard` or `quiet`."""
        task = self._task
        if task is None:
            return
        if hard:
            task.cancel()
        elif not task.done():
            self._ask_stop()
        cancelled = False
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                cancelled = True
                task.cancel()
        if not task.cancelled() and task.exception() is not None and not (hard or quiet or self._raised):
            self._raised = True
            raise task.exception()  # type: ignore[misc]
        if cancelled:
            raise asyncio.CancelledError

    def abandon(self) -> None:
        """The consumer's handle is gone: stop the run, in the loop's thread."""
        self.abandoned = True
        task, loop = self._task, self._loop
        if task is not None and loop is not None and not task.done() and not loop.is_closed():
            loop.call_soon_threadsafe(self._ask_stop)

    async def finished(self) -> None:
        """Return once the run's task has ended (whatever its end)."""
        if self._task is not None:
            await asyncio.wait({self._task})
