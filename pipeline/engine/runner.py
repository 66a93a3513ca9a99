"""One run of a manifest: lock the state dir, prepare the resume, build the stages, run them
(`flow`), and report how the run ended (`closing`).

The stages: `reader`, `submitter` (with `submission`), `poller`, `finisher`, the sink
(`state.sink`), `written`; the stop: `stopping` and `supervisor`; the client's hooks: `throttle`.
See `flow` for how data moves between them and how a run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio

from ..config.load import Config
from ..config.pricing import item_cost_bound
from ..core import aio
from ..core.capabilities import CAPABILITIES
from ..core.endpoint import build_base_url
from ..core.errors import Interrupted
from ..core.fingerprint import items_of, with_fingerprints
from ..core.job import Job
from ..core.outcome import UNFINISHED, Stop, StopReason
from ..core.results import ResultLine, RunFiles
from ..observe.report import RunStats
from ..pacing.build import build_pacers, check_limiter
from ..pacing.memory import PacerBackend
from ..service.client import ServiceClient, check_api_key
from ..state.checkpoint import Checkpoint, MetaKey
from ..state.lock import StateDirLock
from ..state.lock_results import ResultsLock, check_owner, check_results_free, setting_up
from ..state.resume import ResumeState, check_identity, manifest_key, prepare
from ..state.shards import Shard, check_sharding
from ..state.sink import Sink
from ..upload.stage import Uploads, check_uploads
from .chaining import Chain
from .closing import RunResult, close_catalog, log_stages, moot, result_of, save_manifest_counts
from .decisions import ResumeRoute, route_resumed
from .delta import to_send
from .finisher import Finisher
from .flow import Flow
from .inflight import InFlight
from .item_source import ItemSource, Listing, selection_record
from .poller import Poller
from .preflight import check_force_analyses, check_paths, option_of
from .read_cursor import ReadCursor, settings_digest
from .reader import Reader
from .recording import Recorder, record_unstarted
from .shutdown import FailureWatch, SignalHandlers, carried_window
from .spend import SpendLedger
from .stopping import Stopping
from .submission import Submission
from .submitter import Submitter
from .supervisor import Supervisor
from .throttle import Throttle, build_client
from .written import WrittenLines

if sys.version_info < (3, 11):  # anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Run", "RunRequest", "RunResult", "run", "single_error"]

log = logging.getLogger("pipeline.run")

#: Why a session whose task was cancelled (`arun`, a stream) stopped, as `status` and the history say.
CANCELLED = "cancelled (the task running it was cancelled); run the same call again to resume"


@dataclass(frozen=True)
class RunRequest:
    manifest: str
    files: RunFiles
    api_key: str = field(repr=False)
    config: Config
    retry_failed: bool = False
    append: bool = False
    shard: Shard | None = None
    #: `--analyses`: for items that name neither capability nor analyses.
    analyses: tuple[str, ...] | None = None
    #: `--config`: read, never written; no file of the run may be it.
    config_file: Path | None = None
    #: `--force`: process every unit read again; `--force-analysis NAME`: those analyses only.
    force: bool = False
    force_analyses: tuple[str, ...] = ()
    #: `--include`, `--exclude`, `--follow-symlinks`: for a directory or an oss:// source.
    listing: Listing = field(default_factory=Listing)


class Run:
    """One execution of `run`: lock the state dir, wire the stages, run them, report."""

    def __init__(self, request: RunRequest, *, stats: RunStats | None = None,
                 rand: Callable[[], float] = random.random,
                 on_started: Callable[[], Awaitable[None]] | None = None, handle_signals: bool = True,
                 source: ItemSource | None = None, on_line: Callable[[ResultLine], None] | None = None,
                 stops: Stopping | None = None) -> None:
        """`source`: the items, when not the request's manifest (`pipeline.stream`'s); `on_line`:
        called with each line once it is durable, after the run counted it; `stops`: the run's
        stop, for a caller that may ask for one (a stream whose consumer went away)."""
        self.req = request
        # False: a program embedding the run (the Python API) keeps its own signal handling
        self._handle_signals = handle_signals
        self._on_started = on_started  # once accepted: a refused run (exit 2, 7) must not ping or write metrics
        self.cfg = request.config
        self.stats = stats or RunStats()
        self._rand = rand
        self._lock = StateDirLock(request.files.state_dir)
        self.source = source or ItemSource(request.manifest, request.config, analyses=request.analyses,
                                           listing=request.listing)
        self._on_line = on_line
        self._stops = stops
        self._out_lock = ResultsLock(request.files.results, request.files.state_dir)
        self._began = time.time()
        self._recorder: Recorder | None = None  # this session's history, once it has a row

    async def execute(self) -> RunResult:
        files = self.req.files
        self._began = time.time()  # the session's start in the history: its source's check and listing count
        check_api_key(self.req.api_key)  # a key no header can carry: exit 2 before any ping or state dir
        metrics_file = Path(self.cfg.metrics_file) if self.cfg.metrics_file else None
        check_paths(self.req.manifest if self.source.kind not in ("oss", "stream") else "-", files,
                    config_file=self.req.config_file, metrics_file=metrics_file,
                    metrics_option=option_of(self.cfg, "metrics_file"))
        check_results_free(files.results)  # a live run writes this --out (another state dir): exit 7
        check_sharding(files.results, files.state_dir, self.req.shard)  # before anything is created
        check_owner(files.results, files.state_dir, self.req.shard)  # a new state dir for another's --out
        check_force_analyses(self.req.force_analyses, files.state_dir, analyses_by_type=self.cfg.analyses_by_type,
                             analyses=self.req.analyses)
        await check_limiter(self.cfg)  # a shared limiter that cannot be reached: exit 2, nothing written
        # Uploads configured but impossible: exit 2 (no bucket, no key pair) or 4 (refused), nothing written.
        await check_uploads(self.cfg.upload, timeout=self.cfg.request_timeout)
        # A directory that is not one, a bucket that does not exist (2), a refused key pair (4),
        # OSS unreachable (3): before anything is written (but a session of an existing run that
        # ends here, 3 or 4, is recorded in its history, for `status`).
        try:
            await self._open_source()
        except BaseException as exc:
            record_unstarted(files.state_dir, self.req.manifest, exc, started=self._began,
                             force=_force_scope(self.req))
            raise
        with contextlib.ExitStack() as held:
            with setting_up(files.results, self.req.shard):  # the checks again, and the claim, one run at a time
                check_results_free(files.results)
                check_sharding(files.results, files.state_dir, self.req.shard)
                check_owner(files.results, files.state_dir, self.req.shard)
                files.state_dir.mkdir(parents=True, exist_ok=True)
                self._lock.acquire()  # before anything in the state dir is opened for writing
                held.callback(self._lock.release)
                files.results.parent.mkdir(parents=True, exist_ok=True)
                self._out_lock.acquire()  # one run per results file, whatever its state dir
                held.callback(self._out_lock.release)
                ckpt = Checkpoint.open(files.state_dir)  # a run starting next sees this one's checkpoint
                held.callback(ckpt.close)
            try:
                return await self._execute(ckpt)
            except asyncio.CancelledError:  # the caller's task (arun's, a stream's): resumable, and said so
                self._record_cancelled(ckpt)
                raise
            except BaseException as exc:  # a full disk, another error: the row says what it did
                if self._recorder is not None:
                    self._recorder.abandon(exc)
                raise

    def _record_cancelled(self, ckpt: Checkpoint) -> None:
        """A cancelled session: `status` says it stopped (exit 3) because it was cancelled, and its
        history row is completed with what it did, rather than left "running" as of its last sample."""
        recorder = self._recorder
        if recorder is None or recorder.ended or ckpt.in_transaction:  # a write cut short: leave it unfinished
            return
        stop = Stop(StopReason.INTERRUPTED, CANCELLED)
        try:
            ckpt.set_last_stop(stop.to_record())
            recorder.end_stopped(stop)
        except sqlite3.Error as exc:  # the cancellation goes on; the session stays "unfinished" (also exit 3)
            log.warning("the cancelled session could not be recorded as such (%s)", exc)

    async def _open_source(self) -> None:
        """`source.open()` under the run's signal handling (when it has any): a signal while a
        directory's first listing is read or OSS is asked for the prefix ends the session as a
        resumable interruption (exit 3, recorded for `status`), not as a bare exit."""
        caught: list[str] = []
        with anyio.CancelScope() as scope:
            def on_signal(name: str) -> None:
                caught.append(name)
                scope.cancel()

            handlers = SignalHandlers(on_signal)
            if self._handle_signals:
                handlers.install()
            try:
                await self.source.open()
            finally:
                handlers.remove()
        if caught:
            raise Interrupted(f"interrupted by {caught[0]} while the source was checked, before anything was sent; "
                              "run the same command again to resume")

    async def _execute(self, ckpt: Checkpoint) -> RunResult:
        req, cfg, files = self.req, self.cfg, self.req.files
        joined = check_identity(ckpt, out=files.results, manifest=req.manifest, append=req.append,
                                state_dir=files.state_dir, shard=str(req.shard) if req.shard else None,
                                service=build_base_url(cfg.endpoint or "", cfg.protocol, cfg.workspace))
        state = prepare(ckpt, out=files.results, retry_failed=req.retry_failed)
        ckpt.set_meta(MetaKey.SELECTION, selection_record(req.listing, req.analyses))  # for the retry command
        # The last session unfinished (killed, interrupted, stopped): this one carries on its run.
        session = ckpt.begin_session(resumes=ckpt.last_stop() is not None, force=_force_scope(req))
        cursor = ReadCursor(ckpt, req.manifest, session=session, seekable=_seekable(self.source),
                            settings=settings_digest(req.analyses, cfg.outputs, cfg.upload.enabled),
                            scattered=state.scattered, forced=req.force or bool(req.force_analyses))
        cursor.start()
        routes = Counter(route_resumed(task).value for task in state.pending.values())
        log.debug("resume: %d (item, analysis) results done, %d recorded tasks to poll, %d known "
                  "items to submit (again)", state.done, routes[ResumeRoute.POLL.value],
                  routes[ResumeRoute.QUEUE.value])
        if self._on_started is not None:
            await self._on_started()
        # Read before this session marks itself unfinished; saved now, so a kill -9 of a resume after
        # exit 5 does not bring the outage's window back.
        window = carried_window(ckpt.get_meta("failure_window") or "", Stop.from_record(ckpt.last_stop()))
        ckpt.set_meta("failure_window", window)
        # Until this session records how it ended, the run counts as unfinished: after a kill -9
        # or a full disk, `status` says what a resume needs (exit 3), not "completed".
        ckpt.set_last_stop(UNFINISHED.to_record())
        recorder = Recorder(ckpt, self.stats, cfg)
        self._recorder = recorder
        recorder.start(self._began)  # the run history's row of this session
        files.results.parent.mkdir(parents=True, exist_ok=True)
        stops = self._stops or Stopping()
        watch = FailureWatch(cfg.failure_threshold.window, cfg.failure_threshold.max_ratio, window)
        ledger = SpendLedger(ckpt, cfg, item_cost_bound)
        ledger.start()  # what a killed session left reserved for submits never sent is released
        pacers = build_pacers(cfg, req.api_key)
        client = build_client(cfg, req.api_key, Throttle(pacers, stops, self.stats), self.stats, self._rand)
        uploads = Uploads(cfg.upload, retry=cfg.effective_retry(), poll_timeout=cfg.polling.timeout,
                          state_dir=files.state_dir, checkpoint=ckpt, on_bytes=self.stats.on_uploaded,
                          timeout=cfg.request_timeout)
        shard = req.shard
        if self.source.kind == "manifest":
            def todo(jobs: list[Job]) -> list[Job]:  # what the reader will decide to send, per batch
                mine = [job for item in items_of(jobs) for job in with_fingerprints(item)
                        if shard is None or shard.owns(job.id)]
                return to_send(mine, ckpt.catalog.lookup([job.key for job in mine]), force=req.force,
                               force_analyses=frozenset(req.force_analyses), forced_from=ckpt.catalog.forced_from())

            ledger.preview(req.manifest, todo, analyses=req.analyses)
        chain = Chain(ckpt, files.results)
        signals = SignalHandlers(lambda name: stops.request(Stop(
            StopReason.INTERRUPTED, f"interrupted by {name}; run the same command again to resume")))
        # A read that skipped the part read before keeps that part's rejected lines listed.
        with open(files.rejects, "a" if cursor.skipped else "w", encoding="utf-8") as rejects:  # noqa: ASYNC230
            flow = self._flow(ckpt, state, rejects, cursor, stops=stops, watch=watch, ledger=ledger, pacers=pacers,
                              client=client, uploads=uploads, chain=chain, session=session, recorder=recorder)
            if self._handle_signals:
                signals.install()
            try:
                async with client, uploads:
                    await flow.run()
            except BaseExceptionGroup as group:
                raise single_error(group) from None
            finally:
                chain.close()
                signals.remove()  # last: a second signal during the clean-up still exits at once
        ckpt.set_meta("failure_window", watch.state())
        ledger.clear_stale()  # reservations of submits never sent (the stop came first)
        save_manifest_counts(ckpt, req.manifest, flow.reader, joined=joined, listed=self.source.kind != "manifest")
        log_stages(flow.reader, self.stats, flow.pollers)
        stop = None if moot(stops.stop, flow.reader, self.stats) else stops.stop
        catalog = close_catalog(ckpt, flow.reader, self.source, session=session, read=cursor.read,
                                decides_vanished=stop is None and not req.append and self.source.kind != "stream"
                                and _is_catalog(ckpt, req.manifest))
        if catalog is not None:  # the run history keeps each night's delta beside its counts
            ckpt.set_session_catalog({k: v for k, v in catalog.items() if isinstance(v, int)
                                      and not isinstance(v, bool) and k != "session"})
        recorder.flush()
        result = result_of(stop, ckpt=ckpt, stats=self.stats, cfg=cfg, files=files, ledger=ledger,
                           pollers=flow.pollers, catalog=catalog)
        recorder.end(result)
        return result

    def _flow(self, ckpt: Checkpoint, state: ResumeState, rejects: IO[str], cursor: ReadCursor, *, stops: Stopping,
              watch: FailureWatch, ledger: SpendLedger, pacers: PacerBackend, client: ServiceClient, uploads: Uploads,
              chain: Chain, session: int, recorder: Recorder | None = None) -> Flow:
        """The stages of this session, wired to their collaborators."""
        req, cfg, stats = self.req, self.cfg, self.stats
        clock = aio.loop_clock()
        inflight = InFlight(cfg.max_in_flight, stats)
        submission = Submission(client=client, checkpoint=ckpt, ledger=ledger, stops=stops, stats=stats, clock=clock,
                                uploads=uploads if uploads.enabled or self.source.kind == "oss" else None)
        polling = cfg.effective_polling()
        # Spare slots need the pacer's signal; the Redis backend gives none (see its spare_slots),
        # so its polls keep their per-task schedule alone.
        pollers = {
            name: Poller(cap, client, polling, resubmit=submission,
                         pause=lambda seconds, name=name: pacers.pause(name, seconds),  # type: ignore[misc]
                         rand=self._rand, spare=pacers.spare_slots(name), on_lag=stats.on_detected)
            for name, cap in CAPABILITIES.items() if cap.is_async}
        # Costs are settled in the ledger only under a cap: without one, the summary's cost comes
        # from the usage totals, and the ledger's writes would be paid on every batch for nothing.
        sink = Sink(req.files.results, ckpt, cost=ledger.cost if cfg.max_cost is not None else None)
        return Flow(
            reader=Reader(self.source, state, rejects, stats=stats, stops=stops, inflight=inflight, chain=chain,
                          ledger=ledger, clock=clock, catalog=ckpt.catalog, session=session, shard=req.shard,
                          force=req.force, force_analyses=frozenset(req.force_analyses), cursor=cursor,
                          upload_record=ckpt.upload_record),
            submitter=Submitter(submission=submission, inflight=inflight, stops=stops, stats=stats),
            pollers=pollers, finisher=Finisher(inflight=inflight, checkpoint=ckpt), sink=sink,
            written=WrittenLines(stats=stats, chain=chain, watch=watch, ledger=ledger, stops=stops, checkpoint=ckpt,
                                 on_line=self._on_line),
            supervisor=Supervisor(stops, request_timeout=cfg.request_timeout), stops=stops, pacers=pacers,
            queue_size=cfg.queue_size, submit_workers=cfg.submit_workers, max_duration=cfg.max_duration,
            time_scale=cfg.time_scale, recorder=recorder)


def _force_scope(req: RunRequest) -> str | None:
    """What a session forces, comparable across sessions (None: nothing)."""
    if not (req.force or req.force_analyses):
        return None
    return "all" if req.force else ",".join(sorted(req.force_analyses))


def _seekable(source: ItemSource) -> bool:
    """Whether the source can be read from a recorded position: a JSON Lines manifest file."""
    return source.kind == "manifest" and source.location != "-" and \
        Path(source.location).suffix.lower() in (".jsonl", ".ndjson", ".json")


def _is_catalog(ckpt: Checkpoint, manifest: str) -> bool:
    """Whether `manifest` is the run's catalog, the source it began with: only a complete read of
    that one decides what vanished (a manifest joined with --append holds a day's items, not the
    whole catalog, and so does a later run of it)."""
    names = ckpt.manifests()
    return bool(names) and names[0] == manifest_key(manifest)


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside a task group's exception group (a failing sink, a bug)."""
    # asyncio's own class, not anyio's lookup: this also runs after the loop has closed.
    errors = [e for e in group.exceptions if not isinstance(e, asyncio.CancelledError)]
    first = errors[0] if errors else group.exceptions[0]
    return single_error(first) if isinstance(first, BaseExceptionGroup) else first


async def run(request: RunRequest, **kwargs: Any) -> RunResult:
    return await Run(request, **kwargs).execute()
