"""Every stop, from a table: for each exit code of the table (and kill -9 mid-run), produce that
stop against the emulator, check that `status` says what a resume will do (never "completed" for
an unfinished run, and the exit code a resume needs), then clear the cause and check that the
same command (or `--retry-failed`) finishes the run with exactly one line per (item, analysis)
and nothing paid twice (the emulator's counters).

A new exit code added to `ExitCode` without a row here fails `test_every_exit_code_has_a_row`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import (
    REPO,
    assert_exactly_once,
    checkpoint_counts,
    cli,
    cli_env,
    config_file,
    items,
    jobs_of,
    read_results,
    write_manifest,
)

from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "stops-test-key-9d3e"
WRONG = "stops-wrong-key-51aa"
SCALE = 10.0
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}
SUBMIT_WORKERS = 2
CAPS = ("image-analyze", "video-segmentation", "video-snapshot", "video-summarization", "audio-asr")
#: Polls of image analysis answered after 100 real seconds: the client's 2 s request timeout
#: cuts each one and polls again later, so tasks stay in flight for as long as the fault holds
#: and finish soon after it is cleared.
SLOW_POLLS = {"slow_rate": 1.0, "slow_seconds": 1000.0, "routes": ("image-analyze:status",)}
NO_FAULTS = {"slow_rate": 0.0, "error_500_rate": 0.0, "task_fail_rate": 0.0, "routes": ()}

pytestmark = pytest.mark.slow


@dataclass
class Ctx:
    """One row's world: its emulator, manifest and command line."""

    tmp: Path
    emu: EmulatorThread
    manifest: Path
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.tmp / "results.jsonl.state"

    @property
    def results(self) -> Path:
        return self.tmp / "results.jsonl"

    def args(self, *extra: str) -> list[str]:
        cfg = config_file(self.tmp / "cfg.yaml", qps_headroom=0.9, submit_workers=SUBMIT_WORKERS, request_timeout=2.0,
                          polling={"first_delay": 0.5, "max_delay": 2.0},
                          retry={"base": 0.05, "max_delay": 0.2, "max_attempts": 2},
                          failure_threshold={"window": 6, "max_ratio": 0.5})
        return ["run", str(self.manifest), "--out", str(self.results), "--endpoint", self.emu.url,
                "--config", str(cfg), "--progress", "off", *extra]

    def start(self, args: list[str], key: str = KEY) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, text=True,
                                env=cli_env({**ENV, "DASHSCOPE_API_KEY": key}),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_in_flight(self, proc: subprocess.Popen[str], n: int) -> None:
        """Until the run's checkpoint has `n` tasks recorded and not finished (a state, not a delay)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(c.get("submitted", 0) for c in checkpoint_counts(self.state).values()) >= n:
                return
            time.sleep(0.02)
        raise AssertionError(f"the run never had {n} tasks in flight (exit {proc.poll()})")


def _sigterm(ctx: Ctx) -> int:
    ctx.emu.update_faults(**SLOW_POLLS)
    proc = ctx.start(ctx.args())
    ctx.wait_in_flight(proc, 3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    return proc.returncode


def _kill_9(ctx: Ctx) -> int:
    ctx.emu.update_faults(**SLOW_POLLS)
    proc = ctx.start(ctx.args())
    ctx.wait_in_flight(proc, 3)
    proc.kill()
    proc.communicate(timeout=30)
    return 3  # what a resume needs: a killed process has no exit code of its own


def _wrong_key(ctx: Ctx) -> int:
    done = subprocess.run([sys.executable, "-m", "pipeline", *ctx.args()], cwd=REPO, text=True, capture_output=True,
                          env=cli_env({**ENV, "DASHSCOPE_API_KEY": WRONG}), timeout=60, check=False)
    return done.returncode


def _failed_items(ctx: Ctx) -> int:
    ctx.emu.update_faults(task_fail_rate=1.0, routes=("image-analyze",))
    ctx.notes["failed"] = sum(1 for j in jobs_of(ctx.manifest).values() if j.capability == "image_analyze")
    return cli(ctx.args(), env=ENV).returncode


def _bad_flag(ctx: Ctx) -> int:
    return cli(ctx.args("--max-duration", "6hh"), env=ENV).returncode


def _threshold(ctx: Ctx) -> int:
    ctx.emu.update_faults(error_500_rate=1.0, routes=("image-object-detection",))
    ctx.notes["failed"] = sum(1 for j in jobs_of(ctx.manifest).values() if j.capability == "object_detection")
    return cli(ctx.args(), env=ENV).returncode


def _spend_cap(ctx: Ctx) -> int:
    return cli(ctx.args("--max-cost", "0.005"), env=ENV).returncode


def _locked(ctx: Ctx) -> int:
    ctx.emu.update_faults(**SLOW_POLLS)
    first = ctx.start(ctx.args())
    ctx.notes["first"] = first
    ctx.wait_in_flight(first, 3)
    # Every image task created (their polls hang): the first run creates no task from here on,
    # so any new one would be the second run's.
    tasks = sum(1 for j in jobs_of(ctx.manifest).values() if j.capability == "image_analyze")
    deadline = time.monotonic() + 60
    while ctx.emu.counters()["tasks_created_total"] < tasks and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.02)
    created = ctx.emu.counters()["tasks_created_total"]
    assert created == tasks, f"the first run created {created} of {tasks} tasks"
    second = cli(ctx.args(), env=ENV, timeout=60)
    ctx.notes["created_by_second"] = ctx.emu.counters()["tasks_created_total"] - created
    return second.returncode


def _let_first_finish(ctx: Ctx) -> None:
    ctx.emu.update_faults(**NO_FAULTS)
    first: subprocess.Popen[str] = ctx.notes["first"]
    first.communicate(timeout=120)
    assert first.returncode == 0, "the run holding the lock did not finish"


@dataclass(frozen=True)
class Stop:
    name: str
    code: ExitCode
    produce: Callable[[Ctx], int]
    #: `status` outcome right after the stop.
    outcome: str
    #: Flags of the command that finishes the run once the cause is gone.
    resume: tuple[str, ...] = ()
    #: What clears the cause (default: every emulator fault off).
    clear: Callable[[Ctx], None] | None = None
    #: Items a resume may send again: the failed ones with --retry-failed, the submits on the
    #: wire at a kill -9 (one per worker and capability at most).
    paid_again: Callable[[Ctx], int] = lambda ctx: 0
    #: `status` is asked while the stop holds (7: while the other run is live).
    status_while: bool = False
    marks: tuple[Any, ...] = ()


STOPS = [
    Stop("1-failed-items", ExitCode.PARTIAL, _failed_items, "completed with failures", ("--retry-failed",),
         paid_again=lambda ctx: ctx.notes["failed"]),
    Stop("2-usage-error", ExitCode.USAGE, _bad_flag, "no run"),
    Stop("3-sigterm", ExitCode.INTERRUPTED, _sigterm, "stopped"),
    Stop("3-kill-9", ExitCode.INTERRUPTED, _kill_9, "stopped",
         paid_again=lambda ctx: SUBMIT_WORKERS * 2),
    Stop("4-key-refused", ExitCode.AUTH, _wrong_key, "stopped"),
    Stop("5-failure-threshold", ExitCode.THRESHOLD, _threshold, "stopped", ("--retry-failed",),
         paid_again=lambda ctx: ctx.notes["failed"]),
    Stop("6-spend-cap", ExitCode.SPEND_CAP, _spend_cap, "stopped", ("--max-cost", "100")),
    Stop("7-locked", ExitCode.LOCKED, _locked, "running", clear=_let_first_finish, status_while=True),
]


def test_every_exit_code_has_a_row() -> None:
    """Each non-zero exit code of the table, and kill -9, has a stop in the table above."""
    assert {stop.code for stop in STOPS} == set(ExitCode) - {ExitCode.OK}
    assert any("kill-9" in stop.name for stop in STOPS)


def _status(state: Path) -> tuple[int, dict[str, Any], str]:
    text = cli(["status", "--state-dir", str(state)])
    report = cli(["status", "--state-dir", str(state), "--json"])
    assert text.returncode == report.returncode, (text.stdout, report.stdout)
    return text.returncode, (json.loads(report.stdout) if report.stdout.strip() else {}), text.stdout + text.stderr


@pytest.mark.parametrize("stop", [pytest.param(s, id=s.name, marks=s.marks) for s in STOPS])
def test_every_stop_then_status_then_the_same_command_finishes(tmp_path: Path, stop: Stop) -> None:
    """After the stop, `status` reports the code a resume needs (never "completed" for an
    unfinished run); once the cause is gone the same command (or --retry-failed, or a raised
    cap) exits 0 with one line per (item, analysis) and nothing paid twice."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(16, ["image_analyze", "object_detection"]))
    settings = EmulatorSettings(api_key=KEY, seed=11, time_scale=SCALE, durations={c: (0.5, 1.5) for c in CAPS})
    with EmulatorThread(settings) as emu:
        ctx = Ctx(tmp_path, emu, manifest)
        try:
            code = stop.produce(ctx)
            assert code == stop.code, f"{stop.name}: the stop exited {code}"
            if stop.status_while:
                status_code, report, text = _status(ctx.state)
                assert status_code == stop.code and report["outcome"] == stop.outcome, text
                assert ctx.notes.get("created_by_second", 0) == 0, "the refused run created tasks"
            (stop.clear or (lambda c: c.emu.update_faults(**NO_FAULTS)))(ctx)
        finally:
            first = ctx.notes.get("first")
            if first is not None and first.poll() is None:
                first.kill()
                first.communicate()
        if not stop.status_while:
            status_code, report, text = _status(ctx.state)
            if stop.code == ExitCode.USAGE:  # nothing was started: there is no run to report
                assert status_code == ExitCode.USAGE and "holds no run" in text
            else:
                assert status_code == stop.code, text
                assert report["outcome"] == stop.outcome and report["exit_code"] == stop.code, text
                if stop.code != ExitCode.PARTIAL:
                    reason = report["reason"] or ""
                    assert "completed" not in report["outcome"], text
                    assert "resume" in reason or "run the same command" in reason, text
        before = emu.counters()
        finish = cli(ctx.args(*stop.resume), env=ENV, timeout=180)
        assert finish.returncode == 0, f"{stop.name}: the resume exited {finish.returncode}: {finish.stderr[-3000:]}"
        lines = read_results(ctx.results)
        assert_exactly_once(lines, jobs_of(manifest))
        assert all(line["status"] == "SUCCESS" for line in lines)
        after = emu.counters()
        again = after["duplicate_submissions"]
        assert again <= stop.paid_again(ctx), (stop.name, again, before["duplicate_submissions"])
        final_code, final, text = _status(ctx.state)
        assert final_code == 0 and final["outcome"] == "completed" and final["queued"] == 0, text
