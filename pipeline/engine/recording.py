"""What a session records for the report as it goes: its row in the run history (started as
"running", brought up to date every step, completed at its end) and a time series sample every
`STEP_S` seconds (requests and 429s per QPS group, result lines, tasks in flight), with the
task-duration and detection-lag histograms so far. Everything is taken from the run's `RunStats`;
the checkpoint stores it (`state.history`, `state.series`, which also bound it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio

from ..config.load import Config
from ..config.pricing import estimate_cost
from ..core.capabilities import CAPABILITIES
from ..core.echo import clipped
from ..core.errors import PipelineError, StateLocked
from ..core.exit_codes import ExitCode
from ..core.outcome import RunOutcome, Stop, StopReason
from ..observe.report import CapabilityStats, RunStats
from ..state.checkpoint import Buckets, Checkpoint, Sample, SessionCounts
from ..state.history import INTERRUPTED
from ..state.lock import StateDirLock
from ..state.resume import manifest_key
from .closing import RunResult

__all__ = ["STEP_S", "Recorder", "record_unstarted", "session_counts"]

#: Seconds of (emulated) time per sample: divided by the config's time scale, as every delay is.
STEP_S = 10.0


def session_counts(caps: Mapping[str, CapabilityStats], prices: Mapping[str, Mapping[str, float]],
                   rejected: int = 0) -> SessionCounts:
    """What a session did, from its own counters (lines it wrote, requests it sent); the cost is
    the price table's estimate of its successes, as the summary's."""
    by_capability: dict[str, dict[str, float]] = {}
    for name, s in caps.items():
        if not (s.succeeded or s.failed or s.skipped or s.requests):
            continue
        usage = {sid: dict(counter) for sid, counter in s.usage.items()}
        cost, _ = estimate_cost(usage, s.successes_by_service, prices)
        by_capability[name] = {"succeeded": s.succeeded, "failed": s.failed, "skipped": s.skipped,
                               "requests": s.requests, "rate_limited": s.rate_limited, "cost": round(cost, 6)}
    rows = by_capability.values()
    return SessionCounts(
        succeeded=int(sum(r["succeeded"] for r in rows)), failed=int(sum(r["failed"] for r in rows)),
        skipped=int(sum(r["skipped"] for r in rows)), rejected=rejected,
        cost=round(sum(r["cost"] for r in rows), 6), requests=int(sum(r["requests"] for r in rows)),
        rate_limited=int(sum(r["rate_limited"] for r in rows)), by_capability=by_capability)


class Recorder:
    """One session's recording: `start()` opens its history row, `run()` samples every step
    until cancelled, `flush()` takes the last (partial) step, `end()` completes the row."""

    def __init__(self, ckpt: Checkpoint, stats: RunStats, cfg: Config, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._ckpt = ckpt
        self._stats = stats
        self._prices = cfg.prices
        self.step = STEP_S / cfg.time_scale
        self._clock = clock
        self._wall = wall
        self._origin = clock()
        self._last_t = 0.0
        self._last: dict[str, tuple[int, int]] = {}  # capability -> (requests, 429s) at the last sample
        self._last_results = 0
        self.samples = 0
        self.session: int | None = None
        self.ended = False  # `end`, `end_stopped` or `abandon` completed the row

    def start(self, started: float | None = None) -> int:
        """Open this session's history row (a row left "running" becomes "interrupted"), begun at
        `started` (wall clock; default now): the run's start, its source's check included."""
        self._origin = self._clock()
        self.session = self._ckpt.start_session(self._wall() if started is None else started)
        return self.session

    async def run(self) -> None:
        """A sample every step, until cancelled."""
        while True:
            await anyio.sleep(max(0.0, self._origin + self._last_t + self.step - self._clock()))
            self.flush()

    def flush(self) -> None:
        """Record what happened since the last sample (nothing when no time passed)."""
        t = self._clock() - self._origin
        if t <= self._last_t:
            return
        requests: dict[str, int] = {}
        throttled: dict[str, int] = {}
        for name, s in self._stats.caps.items():
            before = self._last.get(name, (0, 0))
            group = CAPABILITIES[name].qps_group if name in CAPABILITIES else name
            if s.requests - before[0]:
                requests[group] = requests.get(group, 0) + s.requests - before[0]
            if s.rate_limited - before[1]:
                throttled[group] = throttled.get(group, 0) + s.rate_limited - before[1]
            self._last[name] = (s.requests, s.rate_limited)
        results = sum(s.succeeded + s.failed for s in self._stats.caps.values())
        in_flight = sum(s.in_flight for s in self._stats.caps.values())
        sample = Sample(self._last_t, t - self._last_t, requests, throttled, results - self._last_results, in_flight)
        self._last_t, self._last_results = t, results
        self._ckpt.record_progress(sample, self.histograms(), self.counts())
        self.samples += 1

    def histograms(self) -> dict[str, Buckets]:
        stats = self._stats
        return {"durations": (stats.durations.bounds, stats.durations.counts),
                "detection_lag": (stats.detection_lag.bounds, stats.detection_lag.counts)}

    def counts(self) -> SessionCounts:
        return session_counts(self._stats.caps, self._prices, self._stats.rejected)

    def abandon(self, exc: BaseException) -> None:
        """Complete this session's row when an exception ends it instead of an outcome (the
        awaiting task cancelled, a full disk): what it did so far, its exit code (3 unless the
        error carries another) and why; best effort, as the disk may be what failed (the error
        raised then says so)."""
        if self.ended:
            return
        self.ended = True
        code = exc.exit_code if isinstance(exc, PipelineError) else ExitCode.INTERRUPTED
        cancelled = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
        reason = "cancelled: run the same command again to resume" if cancelled else clipped(str(exc) or repr(exc))
        outcome = RunOutcome.STOPPED.value if code != ExitCode.INTERRUPTED else INTERRUPTED
        with contextlib.suppress(Exception):
            self.flush()
            self._ckpt.end_session(ended=self._wall(), outcome=outcome, exit_code=int(code), stop_reason=reason,
                                   counts=self.counts())

    def end(self, result: RunResult) -> None:
        """Complete this session's row: how it ended and what it did."""
        self.ended = True
        self._ckpt.end_session(ended=self._wall(), outcome=result.outcome.value, exit_code=int(result.exit_code),
                               stop_reason=result.reason, counts=self.counts())

    def end_stopped(self, stop: Stop) -> None:
        """Complete the row of a session that ends without a result (its task cancelled): stopped by
        `stop`, with what it did up to now (not as of its last sample)."""
        if self.ended or self.session is None:
            return
        self.flush()
        self._ckpt.end_session(ended=self._wall(), outcome=RunOutcome.STOPPED.value,
                               exit_code=int(stop.reason.exit_code), stop_reason=str(stop), counts=self.counts())
        self.ended = True


def record_unstarted(state_dir: Path, manifest: str, exc: BaseException, *, started: float,
                     force: str | None = None, wall: Callable[[], float] = time.time) -> None:
    """A session of an existing run that ended while its source was checked or listed, before
    its run began (OSS not answering, a refused key pair, Ctrl-C or a cancel during a long walk):
    it is a session of the run all the same, so `status` and the history show it, with its exit
    code and why, and a resume carries it on. Nothing for a refusal (exit 2, 7: nothing was
    started), a state dir without a run of this source, or one a live run holds."""
    code = exc.exit_code if isinstance(exc, PipelineError) else ExitCode.INTERRUPTED
    if code in (ExitCode.USAGE, ExitCode.LOCKED) or not (state_dir / Checkpoint.DB_NAME).is_file():
        return
    lock = StateDirLock(state_dir)
    try:
        lock.acquire()
    except StateLocked:
        return
    try:
        ckpt = Checkpoint.open(state_dir)
        try:
            if manifest_key(manifest) not in ckpt.manifests():
                return
            cancelled = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
            why = "cancelled" if cancelled else clipped(str(exc) or repr(exc), 400)
            reason = StopReason.OSS_AUTH if code == ExitCode.AUTH else StopReason.INTERRUPTED
            stop = Stop(reason, f"{why}, while the source was checked or listed, before anything was sent; "
                                "run the same command again to resume")
            ckpt.begin_session(resumes=ckpt.last_stop() is not None, force=force)
            ckpt.start_session(started)
            ckpt.end_session(ended=wall(), outcome=INTERRUPTED if code == ExitCode.INTERRUPTED
                             else RunOutcome.STOPPED.value, exit_code=int(code), stop_reason=str(stop),
                             counts=SessionCounts())
            ckpt.set_last_stop(stop.to_record())
        finally:
            ckpt.close()
    finally:
        lock.release()
