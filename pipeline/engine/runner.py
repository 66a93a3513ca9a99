"""Wiring and supervision of one run; the stages themselves live in `stages`, `poller`, `sink`.

The flow, one direction: reader -> (jobs per capability) -> submitters -> (task handles per
capability) -> pollers; every stage -> (result lines) -> sink. One task group owns every task:

    outer group:       sink, pacer dispatchers
      supervision:     stop watcher, time limit
        work group:    reader, submitters, pollers

The normal end: the reader closes its streams, the submitters then theirs, the pollers finish
their last tasks, the work group ends, the supervision is cancelled, the line stream is closed
and the sink writes the rest. A stop (`request_stop`) is a cancel scope, not a sentinel: a
signal or the failure threshold stops taking items, lets submits already on the wire finish
(their task ids are recorded) and cancels the rest; a 401 or an unreachable service cancels
at once; a spend cap or a time limit stops taking items and lets accepted tasks finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..config.load import Config
from ..config.pricing import item_cost_bound
from ..core.backoff import PollPolicy
from ..core.capabilities import CAPABILITIES
from ..core.errors import AuthError, FatalError, ServiceError, ServiceUnreachable
from ..core.exit_codes import ExitCode
from ..core.job import Job, split_key
from ..core.lanes import Lane, PermitLike
from ..core.outcome import UNFINISHED, RunOutcome, Stop, StopReason, decide, is_run_fault
from ..core.results import ResultLine, RunFiles
from ..observe.report import RunStats, stats_from_totals, summarize, with_live_counters
from ..pacing.build import build_pacers, check_limiter
from ..pacing.memory import PacerBackend
from ..service.client import THROTTLE_WARN_EVERY, ServiceClient
from ..state.checkpoint import Checkpoint
from ..state.lock import StateDirLock
from ..state.resume import check_identity, manifest_key, prepare
from ..state.shards import Shard, check_sharding
from ..state.sink import Sink
from ..upload.errors import OssAuthError
from ..upload.stage import Uploads, check_uploads
from .chaining import Chain
from .decisions import ResumeRoute, route_resumed
from .poller import Poller, TaskHandle
from .preflight import check_paths
from .shutdown import FailureWatch, SignalHandlers, carried_window
from .spend import SpendLedger
from .stages import Control, Reader, Submitter

if sys.version_info < (3, 11):  # anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Run", "RunRequest", "RunResult", "run", "single_error"]

log = logging.getLogger("pipeline.run")

#: Result lines buffered between the stages and the sink.
LINE_BUFFER = 1024
#: The failure watch's window is saved in the checkpoint every this many lines (and at the end).
WATCH_SAVE_EVERY = 50


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


@dataclass
class RunResult:
    exit_code: ExitCode
    outcome: RunOutcome
    stop: Stop | None
    summary: dict[str, Any]
    stats: RunStats = field(repr=False)

    @property
    def reason(self) -> str | None:
        return str(self.stop) if self.stop is not None else None


class Run:
    """One execution of `run`: lock the state dir, wire the stages, run them, report."""

    def __init__(self, request: RunRequest, *, stats: RunStats | None = None,
                 rand: Callable[[], float] = random.random,
                 on_started: Callable[[], Awaitable[None]] | None = None) -> None:
        self.req = request
        self._on_started = on_started  # once accepted: a refused run (exit 2, 7) must not ping or write metrics
        self.cfg = request.config
        self.stats = stats or RunStats()
        self._rand = rand
        self._lock = StateDirLock(request.files.state_dir)
        self._stop: Stop | None = None
        self._signals = SignalHandlers(lambda name: self.request_stop(
            Stop(StopReason.INTERRUPTED, f"interrupted by {name}; run the same command again to resume")))

    async def execute(self) -> RunResult:
        files = self.req.files
        metrics_file = Path(self.cfg.metrics_file) if self.cfg.metrics_file else None
        check_paths(self.req.manifest, files, config_file=self.req.config_file, metrics_file=metrics_file)
        check_sharding(files.results, files.state_dir, self.req.shard)  # before anything is created
        await check_limiter(self.cfg)  # a shared limiter that cannot be reached: exit 2, nothing written
        # Uploads configured but impossible: exit 2 (no bucket, no key pair) or 4 (refused), nothing written.
        await check_uploads(self.cfg.upload, timeout=self.cfg.request_timeout)
        files.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()  # before anything in the state dir is opened for writing
        try:
            ckpt = Checkpoint.open(files.state_dir)
            try:
                return await self._execute(ckpt)
            finally:
                ckpt.close()
        finally:
            self._lock.release()

    def request_stop(self, stop: Stop) -> None:
        """Stop the run for `stop.reason` (see the module docstring); a later, stronger reason
        (an interrupt after a spend-cap drain, a 401 after a signal) takes over."""
        current = self._stop
        if current is not None and not (current.reason.drains and not stop.reason.drains) \
                and not (stop.reason.immediate and not current.reason.immediate):
            return
        self._stop = stop
        log.warning("stopping: %s", stop)
        self._control.stop_taking(interrupt=not stop.reason.drains)
        self._stop_event.set()

    # ---- the run -----------------------------------------------------------------------
    async def _execute(self, ckpt: Checkpoint) -> RunResult:
        files = self.req.files
        self._joined = check_identity(ckpt, out=files.results, manifest=self.req.manifest, append=self.req.append,
                                      state_dir=files.state_dir, shard=str(self.req.shard) if self.req.shard else None)
        state = prepare(ckpt, out=files.results, retry_failed=self.req.retry_failed)
        routes = Counter(route_resumed(task).value for task in state.pending.values())
        log.debug("resume: %d (item, analysis) results done (skipped unread), %d recorded tasks to poll, %d known "
                  "items to submit (again)", len(state.done), routes[ResumeRoute.POLL.value],
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
        files.results.parent.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        self._ckpt = ckpt
        self._stop_event = anyio.Event()
        self._control = Control(cfg.max_in_flight, self.stats)
        self._watch = FailureWatch(cfg.failure_threshold.window, cfg.failure_threshold.max_ratio, window)
        self._ledger = SpendLedger(ckpt, cfg, item_cost_bound)
        self._ledger.start()  # what a killed session left reserved for submits never sent is released
        self._pacers = self._build_pacers()
        self._client = self._build_client()
        # Costs are settled in the ledger only under a cap: without one, the summary's cost comes
        # from the usage totals, and the ledger's writes would be paid on every batch for nothing.
        self._sink = Sink(files.results, ckpt, on_written=self._on_written,
                          cost=self._ledger.cost if cfg.max_cost is not None else None)
        line_send, line_receive = anyio.create_memory_object_stream[ResultLine](LINE_BUFFER)
        uploads = Uploads(cfg.upload, retry=cfg.effective_retry(), poll_timeout=cfg.polling.timeout,
                          state_dir=files.state_dir, checkpoint=ckpt, on_bytes=self.stats.on_uploaded,
                          timeout=cfg.request_timeout)
        self._submitter = Submitter(control=self._control, client=self._client, checkpoint=ckpt, lines=line_send,
                                    clock=asyncio.get_running_loop().time,
                                    reserve=lambda job: self._ledger.reserve(job, self._control.interruptible),
                                    on_fatal=self._on_fatal, on_cap_reached=self._on_cap_reached,
                                    uploads=uploads if uploads.enabled else None)
        self._pollers = self._build_pollers(cfg.effective_polling())
        shard = self.req.shard
        self._ledger.preview(self.req.manifest, lambda key: key in state.done or (
            shard is not None and not shard.owns(split_key(key)[0])), analyses=self.req.analyses)
        self._chain = Chain(ckpt, files.results)
        self._reader_scope = anyio.CancelScope()
        self._poller_scope = anyio.CancelScope()
        with open(files.rejects, "w", encoding="utf-8") as rejects:  # noqa: ASYNC230 - small, local, at start
            reader = Reader(self.req.manifest, state, self._control, self._submitter, rejects, chain=self._chain,
                            shard=self.req.shard, uploads=cfg.upload.enabled, analyses=self.req.analyses,
                            outputs=cfg.outputs, adopt=self._ledger.adopt)
            self._signals.install(asyncio.get_running_loop())
            try:
                async with self._client, uploads:
                    await self._run_groups(reader, line_send, line_receive)
            except BaseExceptionGroup as group:
                raise single_error(group) from None
            finally:
                self._chain.close()
                self._signals.remove()  # last: a second signal during the clean-up still exits at once
        ckpt.set_meta("failure_window", self._watch.state())
        self._ledger.clear_stale()  # reservations of submits never sent (the stop came first)
        self._save_manifest_counts(reader)
        self._log_stages(reader)
        self._drop_moot_stop(reader)
        return self._result()

    async def _run_groups(self, reader: Reader, line_send: MemoryObjectSendStream[ResultLine],
                          line_receive: MemoryObjectReceiveStream[ResultLine]) -> None:
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._pacers.run, name="pacers")
            async with anyio.create_task_group() as writing:
                writing.start_soon(self._sink.run, line_receive, name="sink")
                async with line_send, anyio.create_task_group() as supervision:
                    work = anyio.CancelScope()
                    supervision.start_soon(self._watch_stop, work, name="stop-watcher")
                    if self.cfg.max_duration:
                        supervision.start_soon(self._time_limit, self.cfg.max_duration, name="time-limit")
                    with work:
                        async with anyio.create_task_group() as tg:
                            self._start_stages(tg, reader)
                    supervision.cancel_scope.cancel()
                # the line stream is closed: the sink writes the rest and returns
            outer.cancel_scope.cancel()  # the pacers' dispatchers

    def _start_stages(self, tg: anyio.abc.TaskGroup, reader: Reader) -> None:
        jobs: dict[str, MemoryObjectSendStream[Job]] = {}
        handles: dict[str, MemoryObjectSendStream[TaskHandle]] = {}
        to_poll: dict[str, MemoryObjectReceiveStream[TaskHandle]] = {}
        for name, cap in CAPABILITIES.items():
            job_send, job_receive = anyio.create_memory_object_stream[Job](self.cfg.queue_size)
            jobs[name] = job_send
            handle_send = None
            if cap.is_async:
                # Unbounded by count, bounded in fact: every handle holds an in-flight slot.
                handle_send, to_poll[name] = anyio.create_memory_object_stream[TaskHandle](math.inf)
                handles[name] = handle_send
            with job_receive:
                for i in range(self.cfg.submit_workers):
                    out = handle_send.clone() if handle_send is not None else _nowhere()
                    tg.start_soon(self._submitter.work, name, job_receive.clone(), out, name=f"submit-{name}-{i}")
        tg.start_soon(self._read, reader, jobs, handles, name="reader")
        tg.start_soon(self._poll, to_poll, name="pollers")

    async def _read(self, reader: Reader, jobs: dict[str, MemoryObjectSendStream[Job]],
                    handles: dict[str, MemoryObjectSendStream[TaskHandle]]) -> None:
        with self._reader_scope:
            await reader.run(jobs, handles)

    async def _poll(self, streams: dict[str, MemoryObjectReceiveStream[TaskHandle]]) -> None:
        with self._poller_scope:
            async with anyio.create_task_group() as tg:
                for name, stream in streams.items():
                    tg.start_soon(self._poll_one, self._pollers[name], stream, name=f"poll-{name}")

    async def _poll_one(self, poller: Poller, stream: MemoryObjectReceiveStream[TaskHandle]) -> None:
        try:
            await poller.run(stream)
        except FatalError as exc:
            self._on_fatal(exc)

    # ---- building ------------------------------------------------------------------------
    def _build_pacers(self) -> PacerBackend:
        return build_pacers(self.cfg, self.req.api_key)

    def _build_client(self) -> ServiceClient:
        cfg = self.cfg
        return ServiceClient(
            cfg.endpoint or "", cfg.workspace, self.req.api_key, protocol=cfg.protocol, timeout=cfg.request_timeout,
            retry=cfg.effective_retry(), rand=self._rand, throttle=self._throttle, sleep=self._backoff_sleep,
            on_retry=self._on_retry, on_response=self.stats.on_response, on_ambiguous=self.stats.on_ambiguous,
            connection_limit=max(100, cfg.submit_workers * len(CAPABILITIES) + 64),
            warn_every=THROTTLE_WARN_EVERY / cfg.time_scale)

    def _build_pollers(self, polling: PollPolicy) -> dict[str, Poller]:
        # Spare slots need the pacer's signal; the Redis backend has none, so its polls keep
        # their per-task schedule alone (today's behaviour).
        spare_slots = getattr(self._pacers, "spare_slots", None)
        return {
            name: Poller(cap, self._client, polling, on_finished=self._submitter.task_finished,
                         on_lost=self._submitter.on_lost,
                         pause=lambda seconds, name=name: self._pacers.pause(name, seconds),  # type: ignore[misc]
                         rand=self._rand,
                         spare=spare_slots(name) if spare_slots is not None else None)
            for name, cap in CAPABILITIES.items() if cap.is_async}

    # ---- supervision -------------------------------------------------------------------
    async def _watch_stop(self, work: anyio.CancelScope) -> None:
        await self._stop_event.wait()
        while True:
            stop = self._stop
            assert stop is not None
            if stop.reason.drains:  # the stages end by themselves; a stronger stop may follow
                self._reader_scope.cancel()
                self._stop_event = anyio.Event()
                await self._stop_event.wait()
                continue
            self._reader_scope.cancel()
            self._poller_scope.cancel()  # recorded tasks are polled by the next run
            if not stop.reason.immediate and self._control.submitting:
                timeout = self.cfg.request_timeout
                log.warning("waiting up to %.0f s for %d submits already sent, so their task ids are recorded; "
                            "a second Ctrl-C exits now", timeout, self._control.submitting)
                with anyio.move_on_after(timeout + 1):
                    while self._control.submitting:
                        await self._control.idle.wait()
            work.cancel()
            return

    async def _time_limit(self, seconds: float) -> None:
        await anyio.sleep(seconds / self.cfg.time_scale)
        self.request_stop(Stop(StopReason.TIME_LIMIT, f"--max-duration {seconds:g} s reached; accepted tasks "
                                                       "were finished; run the same command again to go on"))

    # ---- hooks -------------------------------------------------------------------------
    def _on_fatal(self, exc: FatalError) -> None:
        reason = (StopReason.OSS_AUTH if isinstance(exc, OssAuthError) else StopReason.AUTH
                  if isinstance(exc, AuthError) else StopReason.UNREACHABLE
                  if isinstance(exc, ServiceUnreachable) else StopReason.INTERRUPTED)
        advice = (f"fix {exc.credential}, then run the same command again to resume" if isinstance(exc, AuthError)
                  else "nothing was marked failed; run the same command again to resume")
        self.request_stop(Stop(reason, f"{exc.code}: {exc.message}; {advice}"))

    def _on_cap_reached(self, job: Job | None = None) -> None:
        self.request_stop(Stop(StopReason.SPEND_CAP, self._ledger.stop_detail()))

    async def _throttle(self, capability: str, lane: Lane) -> PermitLike | None:
        clock = asyncio.get_running_loop().time
        started = clock()
        if lane is Lane.SUBMIT:
            permit = await self._control.interruptible(lambda: self._pacers.acquire(capability, lane))
        else:
            permit = await self._pacers.acquire(capability, lane)
        stats = self.stats.caps[capability]
        stats.paced_s[lane.value] += clock() - started
        stats.paced[lane.value] += 1
        return permit

    async def _backoff_sleep(self, seconds: float) -> None:
        await self._control.interruptible(lambda: anyio.sleep(seconds))

    def _on_retry(self, capability: str, error: ServiceError, delay: float) -> None:
        self.stats.on_retry(capability)
        if error.http_status == 429 and error.retry_after is not None:
            self._pacers.pause(capability, delay)

    def _on_written(self, line: ResultLine) -> None:
        self.stats.on_line(line)
        self._chain.on_written(line)
        error = line.error or {}
        tripped = self._watch.record(line.status.value == "FAILED" and is_run_fault(
            error.get("code"), error.get("http_status")))
        if self._sink.written % WATCH_SAVE_EVERY == 0:
            self._ckpt.set_meta("failure_window", self._watch.state())
        if tripped:
            self.request_stop(Stop(StopReason.THRESHOLD, tripped))
        if self._ledger.over_cap():  # a settlement above its reservation: send nothing more
            self._on_cap_reached()

    def _save_manifest_counts(self, reader: Reader) -> None:
        """What `status` and later sessions need to know of this manifest: its rejected lines
        (they count in the whole run's outcome) and its number of items."""
        self._ckpt.save_manifest_counts(manifest_key(self.req.manifest), rejected=reader.rejected,
                                        items=reader.items if reader.complete else None,
                                        shared=reader.known if self._joined else None)
        if reader.complete:
            self._ckpt.set_empty(manifest_key(self.req.manifest), not reader.any_items and not reader.rejected)

    def _drop_moot_stop(self, reader: Reader) -> None:
        """A stop that came when nothing was left to do (a time limit shorter than a resume of a
        finished run, a signal as the last line was written) stopped nothing: the outcome is the
        work's. Every unit read ended this session as skipped or as a line, and the reader read all."""
        if self._stop is None or not reader.complete:
            return
        ended = sum(s.succeeded + s.failed + s.skipped for s in self.stats.caps.values())
        if ended == self.stats.units_read:
            log.info("%s came after the last item had ended: nothing was left to stop", self._stop.reason.value)
            self._stop = None

    def _log_stages(self, reader: Reader) -> None:
        """-v: what each stage decided this session."""
        if not log.isEnabledFor(logging.DEBUG):
            return
        routed = ", ".join(f"{n} {what}" for what, n in reader.routed.items()) or "nothing"
        log.debug("reader: %s the manifest; (item, analysis) results: %s; %d lines rejected",
                  "read all of" if reader.complete else "stopped part-way through", routed, reader.rejected)
        for name, stats in self.stats.caps.items():
            waits = [f"{stats.paced[lane]} {lane}s waited {stats.paced_s[lane]:.1f} s in all"
                     for lane in ("submit", "poll") if stats.paced[lane]]
            if waits:
                log.debug("pacer %s: %s", name, "; ".join(waits))
        for name, poller in self._pollers.items():
            if poller.polls:
                log.debug("poller %s: %d status checks, %d of them in spare pacer slots", name, poller.polls,
                          poller.spare_polls)

    # ---- result ------------------------------------------------------------------------
    def _result(self) -> RunResult:
        self.stats.finished = self.stats.started + self.stats.elapsed()
        if self._stop is not None and self._stop.reason is StopReason.SPEND_CAP:  # the figures after the drain
            self._stop = Stop(StopReason.SPEND_CAP, self._ledger.stop_detail())
        totals = stats_from_totals(*self._ckpt.totals())
        failed = sum(c.failed for c in totals.values())
        rejected = self._ckpt.rejected_lines()
        empty = self._ckpt.catalog_empty()
        if empty and self._stop is None:
            log.warning("the manifest has no items (validate says the same): nothing was run, exit 1")
        outcome, code = decide(self._stop, failed=failed, rejected=rejected, empty=empty)
        self._ckpt.set_last_stop(self._stop.to_record() if self._stop else None)
        for name, poller in self._pollers.items():
            self.stats.caps[name].polls = poller.polls
        caps = with_live_counters(totals, self.stats.caps)
        qps = {name: self.cfg.limit_rps(name) for name in CAPABILITIES}
        summary = summarize(caps, prices=self.cfg.prices, elapsed=self.stats.elapsed(), qps=qps,
                            rejected=rejected, outcome=outcome.value, extra={
                                "exit_code": int(code), "reason": str(self._stop) if self._stop else None,
                                "results": str(self.req.files.results), "state_dir": str(self.req.files.state_dir),
                                "spend": self._ledger.report(),
                                "possible_double_billing": self.stats.ambiguous})
        self.req.files.summary.write_text(json.dumps(summary, indent=2) + "\n")
        return RunResult(code, outcome, self._stop, summary, self.stats)


def _nowhere() -> MemoryObjectSendStream[TaskHandle]:
    """A handle stream for a synchronous capability's workers: nothing is ever sent on it."""
    send, receive = anyio.create_memory_object_stream[TaskHandle](0)
    receive.close()
    return send


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside a task group's exception group (a failing sink, a bug)."""
    # asyncio's own class, not anyio's lookup: this also runs after the loop has closed.
    errors = [e for e in group.exceptions if not isinstance(e, asyncio.CancelledError)]
    first = errors[0] if errors else group.exceptions[0]
    return single_error(first) if isinstance(first, BaseExceptionGroup) else first


async def run(request: RunRequest, **kwargs: Any) -> RunResult:
    return await Run(request, **kwargs).execute()
