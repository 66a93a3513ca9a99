"""Where a run's items come from: a manifest, a local directory, or ``oss://BUCKET/PREFIX``.

`ItemSource(location, ...)` tells the three apart (`kind_of`) and streams the same thing for
each: the `Job`s of every valid item (one per analysis) and a `Rejected` per bad one, in the
source's order. A manifest is read by `manifest.read_manifest`; a directory is walked
(`manifest.folder.walk_folder`) and an OSS prefix listed (`sources.oss_listing.list_oss`), each
listed entry checked by `validate_record` like a manifest line, with the include/exclude globs
and `analyses_by_type` (or `--analyses`) of `Listing`. An OSS object's ETag and size become its
jobs' `stamp` (a local file's comes from the stat that checks it).

The OSS listing blocks (the SDK is synchronous): it runs in a worker thread, a chunk of entries
per hop. `open()` is awaited before the run starts anything: it checks a manifest's type and
existence, starts a directory's walk (a missing directory or a file: exit 2) and asks OSS to
list one key of the prefix (`probe_oss`), so that a bucket that does not exist (exit 2), a
refused key pair (exit 4) or OSS unreachable (exit 3) stop the run before its state dir is
touched; the listing itself runs in the reader, a failure part way stopping the run resumably.
`counts` says what a listing turned away, and `complete` whether the source was read to its end.

A fourth kind, "stream", is the items of `pipeline.stream`: an iterable or async iterable of item
dicts (`records`), each checked as a manifest line (`manifest.python_items`). Before it takes
the next item it awaits `ready()`, the stream's back-pressure: a consumer behind holds the read.
An async iterable may make the run wait for its next item (a queue, a paged API): then what was
read is routed now (`chunk_end`, as between an OSS listing's pages) rather than held until a
batch fills, and a stop of the run (`stops`) ends the wait (`cut_short`) instead of waiting on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from ..config.load import Config
from ..core import aio
from ..core.capabilities import MAX_BODY_BYTES
from ..core.echo import clipped
from ..core.errors import Stopped
from ..core.fingerprint import object_stamp
from ..core.job import Job
from ..manifest.analyses import validate_record
from ..manifest.folder import walk_folder
from ..manifest.globs import Globs
from ..manifest.listed import Listed, ListingCounts, Selection
from ..manifest.python_items import ItemChecker
from ..manifest.reader import Rejected, Skipped, read_manifest
from ..state.resume import STREAM_SOURCE
from .stopping import Stopping

#: The end of a stream's items, and a stop that came while the run waited for the next one.
_END, _STOPPED = object(), object()

__all__ = ["CHUNK", "STREAM_SOURCE", "ItemSource", "Listing", "Records", "kind_of", "selection_args",
           "selection_record"]

#: The items of `pipeline.stream`.
Records = Iterable[object] | AsyncIterable[object]

log = logging.getLogger("pipeline.listing")

#: Listed entries fetched per worker-thread hop of an OSS listing.
CHUNK = 512


@dataclass(frozen=True)
class Listing:
    """How a listed source (a directory, an OSS prefix) is turned into items."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    follow_symlinks: bool = False


def selection_record(listing: Listing, analyses: Sequence[str] | None) -> str:
    """A session's source selection (`--include`, `--exclude`, `--follow-symlinks`, `--analyses`)
    as the JSON the checkpoint keeps (meta ``selection``), from which `selection_args` rebuilds it."""
    return json.dumps({"include": list(listing.include), "exclude": list(listing.exclude),
                       "follow_symlinks": listing.follow_symlinks, "analyses": list(analyses or ())})


def selection_args(record: str | None) -> list[str]:
    """The command-line options that select what `selection_record` kept (none for a state dir
    from before it was kept, or a record it cannot read)."""
    try:
        kept = json.loads(record or "{}")
    except ValueError:
        return []
    if not isinstance(kept, dict):
        return []
    args: list[str] = []
    for flag in ("include", "exclude"):
        for pattern in kept.get(flag) or ():
            args += [f"--{flag}", str(pattern)]
    if kept.get("follow_symlinks"):
        args.append("--follow-symlinks")
    if kept.get("analyses"):
        args += ["--analyses", ",".join(str(name) for name in kept["analyses"])]
    return args


def kind_of(location: str) -> str:
    """"oss", "folder" or "manifest": ``oss://...``, an existing directory (or a path ending in
    ``/``), anything else (``-`` is stdin)."""
    if location.startswith("oss://"):
        return "oss"
    if location != "-" and (os.path.isdir(location) or location.endswith(("/", os.sep))):
        return "folder"
    return "manifest"


class ItemSource:
    """The items of one run's source (see the module docstring)."""

    def __init__(self, location: str, config: Config, *, analyses: Sequence[str] | None = None,
                 listing: Listing = Listing(), records: Records | None = None,
                 ready: Callable[[], Awaitable[None]] | None = None, stops: Stopping | None = None) -> None:
        self.location = location
        self.kind = kind_of(location) if records is None else "stream"
        self._records = records
        self._ready = ready
        self._stops = stops
        #: True when a stop of the run ended the wait for a stream's next item: the read is not complete.
        self.cut_short = False
        self._cfg = config
        self._analyses = analyses
        self._listing = listing
        self._uploads = config.upload.enabled
        self.counts: ListingCounts | None = None
        #: True while the OSS listing's entries in hand end with the one just yielded: the next may
        #: be a request away, so a reader holding a batch decides it now rather than wait.
        self.chunk_end = False
        self._selection: Selection | None = None
        self._oss: Iterator[Listed | None] | None = None
        self._walk: Iterator[Listed | Rejected] | None = None
        if self.kind == "manifest" and (listing.include or listing.exclude or listing.follow_symlinks):
            from ..core.errors import UsageError

            raise UsageError("--include, --exclude and --follow-symlinks apply to a directory or an oss:// "
                             f"prefix, not to a manifest ({clipped(location)}): filter the manifest itself")

    async def open(self) -> None:
        """Check the source before the run starts (see the module docstring)."""
        if self.kind == "stream":
            return
        if self.kind == "manifest":  # its type, existence and --analyses: raised now (reading starts later)
            read_manifest(self.location, analyses=self._analyses, outputs=self._cfg.outputs)
            return
        self._selection = Selection(include=self._listing.include, exclude=self._listing.exclude,
                                    analyses_by_type=self._cfg.analyses_by_type, analyses=self._analyses)
        self.counts = self._selection.new_counts()
        if self.kind == "folder":  # a directory that is missing, or a file, raises now
            self._walk = walk_folder(self.location, self._selection, follow_symlinks=self._listing.follow_symlinks,
                                     counts=self.counts)
            return
        from ..sources.oss_listing import list_oss, probe_oss  # the OSS SDK: only an oss:// source needs it

        retry, timeout = self._cfg.effective_retry(), self._cfg.request_timeout
        self._oss = list_oss(self.location, self._cfg.upload, self._selection, retry=retry, timeout=timeout,
                             counts=self.counts, page_ends=True)
        # One request, not the first items: pages without media would be read before the run starts.
        # Abandoned on a cancel (Ctrl-C, a cancelled task): retries against a silent OSS can take minutes.
        await aio.in_daemon_thread(lambda: probe_oss(self.location, self._cfg.upload, retry=retry, timeout=timeout),
                                   "oss-probe")

    async def items(self, *, expected_items: int = 0, **partial: Any) -> AsyncIterator[Job | Rejected | Skipped]:
        """Every valid item's jobs and every rejected entry, in the source's order. For a
        manifest, `partial` are `read_manifest`'s tracker, reread, ids and shard (a read from a
        recorded position, the run's duplicate check, a shard's filter: `Skipped` items)."""
        if self.kind == "stream":
            async for one in self._streamed(expected_items):
                yield one
            return
        if self.kind == "manifest":
            for item in read_manifest(self.location, max_body_bytes=MAX_BODY_BYTES, uploads=self._uploads,
                                      analyses=self._analyses, outputs=self._cfg.outputs, **partial):
                yield item
            return
        if self.kind == "folder":
            assert self._walk is not None
            for entry in self._walk:
                for one in self._checked(entry):
                    yield one
            return
        assert self._oss is not None
        try:
            chunk = await anyio.to_thread.run_sync(_take, self._oss, CHUNK)
            while chunk:
                for i, entry in enumerate(chunk):
                    jobs = self._checked(entry)
                    for j, one in enumerate(jobs):
                        self.chunk_end = i == len(chunk) - 1 and j == len(jobs) - 1  # an item's last job
                        yield one
                self.chunk_end = False
                chunk = await anyio.to_thread.run_sync(_take, self._oss, CHUNK)
        finally:
            close = getattr(self._oss, "close", None)
            if close is not None:  # its page thread stops
                close()

    async def _streamed(self, expected_items: int) -> AsyncIterator[Job | Rejected]:
        """The stream's items in order, each checked as a manifest line; the next one is taken
        only once `ready()` returns. An exception the items raise ends the run with it. Each
        item's jobs are held until the next item is in hand: when an async source makes the run
        wait for it, they go out with `chunk_end` set, so the reader routes them now."""
        checker = ItemChecker(base_dir=Path.cwd(), uploads=self._uploads, analyses=self._analyses,
                              outputs=self._cfg.outputs, expected_items=expected_items)
        records, ready, index = self._records, self._ready, 0
        assert records is not None
        sync = iter(records) if isinstance(records, Iterable) else None
        unsync = aiter(records) if not isinstance(records, Iterable) else None
        held: list[Job | Rejected] = []
        while True:
            if ready is not None:
                await ready()
            if sync is not None:
                record = next(sync, _END)
            else:
                assert unsync is not None
                fetch = asyncio.ensure_future(_next(unsync))
                try:
                    await asyncio.sleep(0)  # an item already there (a list's, a filled queue's) comes in this step
                    if not fetch.done() and held:  # the source makes the run wait: route what is read
                        for one in _flushed(self, held):
                            yield one
                        held = []
                    record = await self._fetched(fetch)
                finally:
                    if not fetch.done():
                        fetch.cancel()
                if record is _STOPPED:
                    self.cut_short = True
                    return
            if record is _END:
                break
            checked = checker.check(index, record)
            index += 1
            if isinstance(checked, Rejected):  # held after the last valid item's jobs: the flag goes on those
                held.append(checked)
                continue
            for one in held:
                yield one
            held = list(checked)
        for one in held:
            yield one

    async def _fetched(self, fetch: asyncio.Future[object]) -> object:
        """The next record, or `_STOPPED` once the run stops taking items while it waits for it."""
        if self._stops is None:
            return await fetch
        try:
            return await self._stops.interruptible(lambda: asyncio.shield(fetch))
        except Stopped:
            return _STOPPED

    def _checked(self, entry: Listed | Rejected) -> list[Job | Rejected]:
        if isinstance(entry, Rejected):
            return [entry]
        result = validate_record(entry.item, entry.line, base_dir=Path("/"), uploads=self._uploads,
                                 outputs=self._cfg.outputs, presigned=self.kind == "oss")
        if isinstance(result, Rejected):
            return [result]
        if entry.stamp.etag is not None:  # an OSS object: what stands for its bytes
            stamp = object_stamp(entry.stamp.etag, entry.stamp.size)
            return [dataclasses.replace(job, stamp=stamp) for job in result]
        return list(result)

    @property
    def globs(self) -> Globs:
        """The run's --include/--exclude patterns (none for a manifest or a stream)."""
        return self._selection.globs if self._selection is not None else Globs()

    def where(self, rejected: Rejected) -> str:
        """How a message names a rejected entry: a manifest's line, a folder's file (its path
        relative to the folder), an OSS object (its key), or a stream's item (1-based)."""
        if self.kind == "folder" and rejected.id is not None:
            return f"file {clipped(rejected.id)}"
        if self.kind == "oss" and rejected.id is not None:
            return f"object {clipped(rejected.id)}"
        if self.kind == "stream":
            return f"item {rejected.line}"
        return f"manifest line {rejected.line}"

    def summary(self) -> Mapping[str, Any] | None:
        """What a listing found and turned away, for the run's summary (None for a manifest)."""
        counts = self.counts
        if counts is None:
            return None
        return {"kind": self.kind, "listed": counts.listed, "items": counts.yielded, "excluded": counts.excluded,
                "skipped_no_analyses": counts.skipped, "unreadable": list(counts.unreadable),
                "unmatched_patterns": counts.unmatched_patterns(), "complete": counts.complete}


def _take(entries: Iterator[Listed | None], n: int) -> list[Listed]:
    """Up to `n` entries, fewer at the end of a page rather than wait for the next one (in a
    worker thread: the listing blocks). Empty only at the end of the listing."""
    out: list[Listed] = []
    for entry in entries:
        if entry is None:
            if out:
                break
            continue
        out.append(entry)
        if len(out) >= n:
            break
    return out


async def _next(items: AsyncIterator[object]) -> object:
    """The next record, or `_END` (a task cannot carry StopAsyncIteration out)."""
    try:
        return await anext(items)
    except StopAsyncIteration:
        return _END


def _flushed(source: ItemSource, held: list[Job | Rejected]) -> Iterator[Job | Rejected]:
    """`held`, its last job with the source's `chunk_end` set (the reader routes its batch then;
    rejected entries after it route nothing)."""
    last = max((i for i, one in enumerate(held) if not isinstance(one, Rejected)), default=-1)
    for i, one in enumerate(held):
        source.chunk_end = i == last
        yield one
    source.chunk_end = False
