"""Wiring of one run: manifest -> checkpoint filter -> queues -> submit workers -> pollers -> sink.

The data flows one way (DESIGN.md): the reader validates items and filters them through the
checkpoint (done: skip; task recorded: straight to the poller; otherwise: the capability's
bounded queue, which makes the reader wait when full). Submit workers take jobs, pass the
group's pacer, submit, durably record the task id, and hand the task to the poller; sync
capabilities write their result at once. The sink writes every line and only then counts it.

Shutdown is explicit: the end of the manifest closes the queues, then the pollers, then the
sink. A fatal error (401), the failure threshold or a signal stops the run with a reason
(exit 3) and leaves every unfinished item resumable.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .capabilities import CAPABILITIES, MAX_BODY_BYTES, Capability
from .checkpoint import Checkpoint, PendingTask
from .client import ApiResponse, ServiceClient
from .config import Config
from .errors import FatalError, InvalidParameter, RateLimited, ServiceError, TaskNotExist, UsageError
from .job import Job
from .limits import Pacers
from .manifest import DuplicateIds, Rejected, Skipped, read_manifest
from .poller import FirstPollTuner, Poller, TaskHandle
from .report import RunStats, stats_from_checkpoint, summarize, with_live_counters
from .shutdown import EXIT_ABORTED, FailureThreshold, SignalHandlers
from .sink import Sink, drop_lines, reconcile, result_line

log = logging.getLogger("pipeline.run")

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class RunRequest:
    manifest: str
    out: Path
    state_dir: Path
    api_key: str
    config: Config
    retry_failed: bool = False


@dataclass
class RunResult:
    exit_code: int
    outcome: str  # "completed" | "completed with failures" | "aborted"
    reason: str | None
    summary: dict[str, Any]
    stats: RunStats = field(repr=False)


def side_file(out: Path, kind: str) -> Path:
    """`results.jsonl` -> `results.rejects.jsonl`, `results.summary.json`."""
    return out.with_name(f"{out.stem}.{kind}")


class Run:
    """One execution of `run`: build everything inside the loop, run, and always clean up."""

    def __init__(self, request: RunRequest, *, stats: RunStats | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.req = request
        self.cfg = request.config
        self.stats = stats or RunStats()
        self._rand = rand
        self._stop = asyncio.Event()  # stop taking new items (signal, abort)
        self._abort_reason: str | None = None
        self._signals = SignalHandlers(self.request_stop)
        self._fatal = False  # stopped by a FatalError (401): no point waiting for calls out
        self._busy: set[asyncio.Future[None]] = set()  # submits on the wire, done when they end
        self._threshold = FailureThreshold(self.cfg.failure_threshold.window,
                                           self.cfg.failure_threshold.max_ratio)

    # ---- public ------------------------------------------------------------------------
    async def execute(self) -> RunResult:
        ckpt = Checkpoint.open(self.req.state_dir)
        try:
            return await self._execute(ckpt)
        finally:
            ckpt.close()

    def request_stop(self, reason: str) -> None:
        """Stop taking new items, finish what is in hand, exit 3 (first signal / abort)."""
        if self._abort_reason is None:
            self._abort_reason = reason
            log.warning("stopping: %s", reason)
        self._stop.set()

    # ---- setup -------------------------------------------------------------------------
    def _check_identity(self, ckpt: Checkpoint) -> None:
        out = str(self.req.out.resolve())
        manifest = self.req.manifest if self.req.manifest == "-" else str(Path(self.req.manifest).resolve())
        recorded_out = ckpt.get_meta("out")
        if recorded_out is None:
            ckpt.set_meta("out", out)
            ckpt.set_meta("manifest", manifest)
            ckpt.set_meta("created_at", str(time.time()))
            return
        if recorded_out != out:
            raise UsageError(
                f"state dir {self.req.state_dir} belongs to a run writing {recorded_out}, not {out}: "
                "give the same --out to resume it, or a new --state-dir for a new run")
        recorded_manifest = ckpt.get_meta("manifest")
        if recorded_manifest != manifest:
            log.warning("the state dir was made with manifest %s; resuming with %s "
                        "(items are matched by id)", recorded_manifest, manifest)

    def _prepare_state(self, ckpt: Checkpoint) -> tuple[DuplicateIds, dict[str, PendingTask]]:
        self._check_identity(ckpt)
        found = reconcile(self.req.out, ckpt)
        if found:
            log.info("recovered %d result lines written just before an interruption", found)
        if self.req.retry_failed:
            # The flag first: a crash between the two must not leave reopened items whose old
            # lines stay in the file (a later drop with no retry ids is a no-op).
            ckpt.set_meta("drop_pending", "1")
            reopened = ckpt.reopen_failed(skip_codes=("InvalidParameter",))
            log.info("--retry-failed: %d failed items will run again", len(reopened))
        if ckpt.get_meta("drop_pending") == "1":
            dropped = drop_lines(self.req.out, ckpt.ids_in_state("retry"), ckpt)
            ckpt.set_meta("drop_pending", "0")
            log.info("removed %d superseded result lines", dropped)
        done = DuplicateIds(expected=ckpt.count_done())
        for job_id in ckpt.iter_done_ids():
            done.add(job_id)
        return done, ckpt.pending()

    # ---- the run -----------------------------------------------------------------------
    async def _execute(self, ckpt: Checkpoint) -> RunResult:
        done, pending = self._prepare_state(ckpt)
        self.req.out.parent.mkdir(parents=True, exist_ok=True)
        self._ckpt = ckpt
        cfg = self.cfg
        groups = {cap.qps_group: cfg.effective_qps(name) for name, cap in CAPABILITIES.items()}
        # The service's own rule, for the pacer's guard: at most `limit` requests in any
        # window (one second, shortened by the emulator's time scale).
        windows = {cap.qps_group: (1.0 / cfg.time_scale, int(cfg.qps.get(name, cap.default_qps)))
                   for name, cap in CAPABILITIES.items()}
        self._pacers = Pacers(groups, polls_share=cfg.polls_share_qps, windows=windows,
                              weights={"submit": cfg.submit_share, "poll": 1.0 - cfg.submit_share})
        self._client = ServiceClient(
            cfg.endpoint or "", cfg.workspace, self.req.api_key, protocol=cfg.protocol,
            timeout=cfg.request_timeout,
            retry=cfg.effective_retry(), rand=self._rand, throttle=self._throttle,
            on_retry=self._on_retry, on_response=self.stats.on_response,
            connection_limit=max(100, cfg.submit_workers * len(CAPABILITIES) + 64))
        self._sink = Sink(self.req.out, ckpt, on_written=self._on_written)
        sink_task = self._sink.start()
        self._queues: dict[str, asyncio.Queue[Job | None]] = {
            name: asyncio.Queue(cfg.queue_size) for name in CAPABILITIES}
        self._inflight = {name: asyncio.Semaphore(cfg.max_in_flight) for name in CAPABILITIES}
        polling = cfg.effective_polling()
        self._pollers = {
            name: Poller(cap, self._client, self._pause_for(cap), polling, self._task_finished,
                         tuner=FirstPollTuner(polling.first_delay, target=cfg.adaptive_polling.target,
                                              floor=polling.first_delay / 50, ceiling=polling.timeout)
                         if cfg.adaptive_polling.enabled else None, rand=self._rand)
            for name, cap in CAPABILITIES.items() if cap.is_async}
        self._rejects = open(side_file(self.req.out, "rejects.jsonl"), "w", encoding="utf-8")
        self._extra_tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        self._signals.install(loop)
        workers = [loop.create_task(self._worker(name), name=f"submit-{name}-{i}")
                   for name in CAPABILITIES for i in range(cfg.submit_workers)]
        pollers = [loop.create_task(p.run(), name=f"poll-{n}") for n, p in self._pollers.items()]
        reader = loop.create_task(self._read(done, pending), name="reader")
        fatal: BaseException | None = None
        try:
            fatal = await self._supervise(reader, workers, pollers, sink_task)
        finally:
            for task in [reader, *workers, *pollers, *self._extra_tasks]:
                task.cancel()
            await asyncio.gather(reader, *workers, *pollers, *self._extra_tasks, return_exceptions=True)
            await self._sink.close()
            await self._client.close()
            self._pacers.close()
            self._rejects.close()
            self._signals.remove()  # last: a second signal during the clean-up still exits at once
        if fatal is not None:
            raise fatal
        return self._result()

    async def _supervise(self, reader: asyncio.Task[None], workers: list[asyncio.Task[None]],
                         pollers: list[asyncio.Task[None]], sink: asyncio.Task[None]) -> BaseException | None:
        """Wait for the normal end (reader, then workers, then pollers) or a stop.

        Returns an unexpected exception to re-raise (a crashed stage, a sink that cannot
        write), or None.
        """
        stop = asyncio.get_running_loop().create_task(self._stop.wait())
        stages = [([reader], self._close_queues), (workers, self._close_pollers), (pollers, None)]
        running = {reader, *workers, *pollers, sink}
        try:
            while stages:
                finished, running = await asyncio.wait(running | {stop}, return_when=asyncio.FIRST_COMPLETED)
                running.discard(stop)
                for task in finished - {stop}:
                    exc = task.exception()
                    if isinstance(exc, FatalError):
                        self._fatal = True
                        self.request_stop(f"{exc.code}: {exc.message}")
                    elif exc is not None:
                        return exc
                if self._stop.is_set():
                    await self._drain_on_stop()
                    self._close_pollers()  # and they are cancelled by the caller
                    return None
                while stages and all(t.done() for t in stages[0][0]):
                    _, closer = stages.pop(0)
                    if closer is not None:
                        closer()
            return None
        finally:
            stop.cancel()

    async def _drain_on_stop(self) -> None:
        """Let submits already on the wire finish and record their task ids (bounded by the
        request timeout), so an interruption loses no accepted task. Not after a fatal
        error: those calls fail the same way."""
        busy = [f for f in self._busy if not f.done()]
        if busy and not self._fatal:
            await asyncio.wait(busy, timeout=self.cfg.request_timeout)

    def _close_queues(self) -> None:
        for queue in self._queues.values():
            for _ in range(self.cfg.submit_workers):
                queue.put_nowait(None) if not queue.full() else self._extra(queue.put(None))

    def _close_pollers(self) -> None:
        for poller in self._pollers.values():
            poller.close()

    def _extra(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._extra_tasks.add(task)
        task.add_done_callback(self._extra_tasks.discard)

    # ---- reader ------------------------------------------------------------------------
    async def _read(self, done: DuplicateIds, pending: dict[str, PendingTask]) -> None:
        seen = 0
        for item in read_manifest(self.req.manifest, max_body_bytes=MAX_BODY_BYTES, skip=done.__contains__,
                                  expected_items=len(done) + len(pending)):
            if self._stop.is_set():
                return
            seen += 1
            if seen % 512 == 0:
                await asyncio.sleep(0)  # a resume may skip many done items without awaiting
            if isinstance(item, Skipped):  # done in an earlier run
                if item.capability is not None:
                    self.stats.caps[item.capability].skipped += 1
                continue
            if isinstance(item, Rejected):
                self.stats.rejected += 1
                self._rejects.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
                log.warning("manifest line %d rejected: %s", item.line, item.reason)
                continue
            stats = self.stats.caps[item.capability]
            known = pending.pop(item.id, None)
            if known is not None and known.task_id and (known.state == "submitted" or known.error_code == "PollTimeout"):
                await self._acquire_slot(item.capability)
                if self._stop.is_set():
                    self._inflight[item.capability].release()
                    return
                self._start_polling(item, known.task_id, known.submitted_at, known.attempts, known.resubmits)
                continue
            stats.queued += 1
            await self._queues[item.capability].put(item)
        self._rejects.flush()

    async def _acquire_slot(self, capability: str) -> None:
        await self._inflight[capability].acquire()
        self.stats.caps[capability].in_flight += 1

    def _release_slot(self, capability: str) -> None:
        self._inflight[capability].release()
        self.stats.caps[capability].in_flight -= 1

    # ---- submit ------------------------------------------------------------------------
    async def _worker(self, capability: str) -> None:
        queue = self._queues[capability]
        while True:
            job = await queue.get()
            if job is None or self._stop.is_set():
                return
            self.stats.caps[capability].queued -= 1
            await self._acquire_slot(capability)
            # A future per submit, not the worker task: an idle worker waits on its queue
            # for ever, and the drain on stop must wait for submits, not for workers.
            on_wire: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._busy.add(on_wire)
            try:
                await self._submit(job)
            finally:
                on_wire.set_result(None)
                self._busy.discard(on_wire)

    async def _submit(self, job: Job, resubmits: int = 0) -> None:
        cap = CAPABILITIES[job.capability]
        submitted_at = time.time()
        try:
            body = await self._body(cap, job)
            if cap.is_async:
                response = await self._client.create_task(cap.segment, job.service_id, body)
            else:
                response = await self._client.detect(cap.segment, job.service_id, body)
        except FatalError:
            self._release_slot(job.capability)
            raise
        except ServiceError as err:
            self._finish(job, "FAILED", error=err.to_dict(), attempts=err.attempts,
                         submitted_at=submitted_at)
            return
        self.stats.caps[job.capability].submits += 1
        if not cap.is_async:
            self._finish(job, "SUCCESS", data=cap.parse_result(response.result), usage=response.usage,
                         attempts=response.attempts, submitted_at=submitted_at)
            return
        task_id = response.result.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            self._finish(job, "FAILED", attempts=response.attempts, submitted_at=submitted_at,
                         error={"code": "BadResponse", "message": "create response has no task_id",
                                "http_status": response.http_status})
            return
        # Durable before the poller sees it: a crash from here on polls, never resubmits.
        submitted_at = self._ckpt.record_submitted(job.id, job.capability, job.service_id, task_id,
                                                   response.attempts, resubmits)
        self._start_polling(job, task_id, submitted_at, response.attempts, resubmits)

    async def _body(self, cap: Capability, job: Job) -> dict[str, Any]:
        content = None
        if job.source_kind == "path":
            try:
                raw = await asyncio.to_thread(Path(job.source).read_bytes)
            except OSError as exc:
                raise InvalidParameter("FileError", f"cannot read {job.source}: {exc.strerror}") from None
            content = base64.b64encode(raw).decode("ascii")
        body = cap.build_body(job, content)
        size = len(json.dumps(body, separators=(",", ":")).encode("utf-8")) if content else 0
        if size > MAX_BODY_BYTES:
            raise InvalidParameter("InvalidParameter",
                               f"{job.source} makes a {size / 1e6:.1f} MB request body, over the 8 MB limit: "
                               "upload it and give an oss:// path or a url instead")
        return body

    def _start_polling(self, job: Job, task_id: str, submitted_at: float | None, attempts: int,
                       resubmits: int) -> None:
        loop_now = asyncio.get_running_loop().time()
        wall_now = time.time()
        age = max(0.0, wall_now - submitted_at) if submitted_at else 0.0
        handle = TaskHandle(job, task_id, submitted_at or wall_now, loop_now - age, attempts, resubmits)
        self._pollers[job.capability].add(handle)

    # ---- poll outcomes -----------------------------------------------------------------
    async def _task_finished(self, handle: TaskHandle, response: ApiResponse | None,
                             error: ServiceError | None) -> None:
        job = handle.job
        common = dict(task_id=handle.task_id, attempts=handle.attempts, polls=handle.polls,
                      submitted_at=handle.submitted_at)
        if isinstance(error, TaskNotExist) and handle.resubmits == 0:
            if self._stop.is_set():
                return  # stays recorded as submitted; the next run resubmits it
            log.info("task %s of %s is unknown to the service; submitting it once more", handle.task_id, job.id)
            # Awaited inside the poll, so the poller cannot finish before the new task is added.
            await self._submit(job, resubmits=1)
            return
        if error is not None:
            self._finish(job, "FAILED", error=error.to_dict(), **common)
        elif response is None:
            self._finish(job, "FAILED", error={
                "code": "PollTimeout", "http_status": None,
                "message": f"task {handle.task_id} still PENDING after the poll timeout; "
                           "`run --retry-failed` polls it again without resubmitting"}, **common)
        else:
            result = response.result
            if str(result.get("status")).upper() == "SUCCESS":
                cap = CAPABILITIES[job.capability]
                self._finish(job, "SUCCESS", data=cap.parse_result(result), usage=response.usage, **common)
            else:
                self._finish(job, "FAILED", error={
                    "code": "TaskFailed", "http_status": response.http_status,
                    "message": str(result.get("error") or "the service reported FAILED")}, **common)

    # ---- the end of an item ------------------------------------------------------------
    def _finish(self, job: Job, status: str, *, data: Any = None, usage: Any = None,
                error: dict[str, Any] | None = None, task_id: str | None = None, attempts: int = 1,
                polls: int = 0, submitted_at: float | None = None) -> None:
        self._sink.put(result_line(
            job_id=job.id, capability=job.capability, service_id=job.service_id, status=status,
            task_id=task_id, data=data, usage=usage, error=error, attempts=attempts, polls=polls,
            submitted_at=submitted_at, finished_at=time.time(), meta=job.meta))
        self._release_slot(job.capability)

    def _on_written(self, line: dict[str, Any]) -> None:
        self.stats.on_line(line)
        tripped = self._threshold.record(line["status"] == "SUCCESS")
        if tripped:
            self.request_stop(tripped)

    # ---- pacing hooks ------------------------------------------------------------------
    async def _throttle(self, segment: str, lane: str) -> None:
        await self._pacers.acquire(segment, lane)

    def _pause_for(self, cap: Capability) -> Callable[[float], None]:
        return lambda seconds: self._pacers.pause(cap.qps_group, seconds)

    def _on_retry(self, segment: str, error: ServiceError, delay: float) -> None:
        self.stats.on_retry(segment)
        if isinstance(error, RateLimited) and error.retry_after is not None:
            self._pacers.pause(segment, delay)

    # ---- result ------------------------------------------------------------------------
    def _result(self) -> RunResult:
        self.stats.finished = self.stats.started + self.stats.elapsed()
        total = self.stats.totals()
        if self._abort_reason is not None:
            code, outcome = EXIT_ABORTED, "aborted"
        elif total.failed or self.stats.rejected:
            code, outcome = EXIT_PARTIAL, "completed with failures"
        else:
            code, outcome = EXIT_OK, "completed"
        qps = {name: self.cfg.limit_rps(name) for name in CAPABILITIES}
        for name, poller in self._pollers.items():
            self.stats.caps[name].polls = poller.polls
        # Outcomes of the whole run (earlier sessions included), this session's traffic.
        caps = with_live_counters(stats_from_checkpoint(self._ckpt), self.stats.caps)
        summary = summarize(caps, prices=self.cfg.prices, elapsed=self.stats.elapsed(),
                            qps=qps, rejected=self.stats.rejected, outcome=outcome,
                            extra={"reason": self._abort_reason, "results": str(self.req.out),
                                   "state_dir": str(self.req.state_dir)})
        side_file(self.req.out, "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return RunResult(code, outcome, self._abort_reason, summary, self.stats)


async def run(request: RunRequest, **kwargs: Any) -> RunResult:
    return await Run(request, **kwargs).execute()
