"""Measured child processes: CPU from `os.wait4`, an RSS timeline from /proc, clean stops.

The pipeline under test always runs as its own process (`python -m pipeline run ...`), so
its CPU time and peak RSS are its own: the CPU comes from `os.wait4` (its rusage alone), the
RSS timeline and peak from /proc/<pid>/status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .environment import PYTHON, REPO, child_env, write_yaml
from .manifests import count_lines

TICKS = os.sysconf("SC_CLK_TCK")  # /proc/<pid>/stat counts CPU time in clock ticks
KIB_PER_MIB = 1024  # /proc/<pid>/status counts kB
SAMPLE_EVERY = 0.02  # seconds between two RSS samples of a measured child
RUN_EXIT_CODES = (0, 1, 3)  # a pipeline run that ended as designed: ok, partial, interrupted
STDERR_TAIL = 3000  # characters of a failed child's stderr quoted in the error


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a live process in MB: its resident set now, and its peak so far."""
    found: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line[:5]] = int(line.split()[1]) / KIB_PER_MIB
    except OSError:
        return None
    return (found["VmRSS"], found["VmHWM"]) if len(found) == 2 else None


@dataclass
class ProcessRun:
    """A finished child process, measured on its own."""

    exit_code: int
    started_at: float  # time.monotonic() just before the process was spawned
    wall: float  # spawn to exit, seconds
    cpu: float  # user + system CPU seconds of the child alone (wait4 rusage)
    #: The last VmHWM read from /proc (sampled every `sample_every` s until the exit). Not
    #: ru_maxrss: Linux carries the parent's RSS at fork over the exec into the child's maxrss.
    peak_rss_mb: float
    samples: list[tuple[float, float]]  # (seconds since spawn, RSS MB)
    stopped_at: float | None  # seconds since spawn when SIGTERM was sent, if it was
    forced_at: float | None  # ... when a second SIGTERM (immediate exit) had to follow it
    cpu_after_stop: float | None  # CPU seconds used from the first SIGTERM to the exit (or the second)
    ended_epoch: float  # time.time() when the exit was seen (within `sample_every`)
    stderr: str

    @property
    def stop_seconds(self) -> float | None:
        """From the first SIGTERM to the exit."""
        return None if self.stopped_at is None else self.wall - self.stopped_at


def measure(argv: Sequence[str], workdir: Path, name: str, *, stop_after: float | None = None,
            grace: float = 10.0, timeout: float = 300.0, sample_every: float = SAMPLE_EVERY,
            env: Mapping[str, str] | None = None) -> ProcessRun:
    """Run `argv` to its end, sampling its RSS.

    With `stop_after`, send SIGTERM (a clean stop) after that many seconds; if the process is
    still there `grace` seconds later, a second SIGTERM (the CLI's immediate exit).
    """
    err_path = workdir / f"{name}.stderr"
    with open(workdir / f"{name}.stdout", "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO, env={**child_env(), **(env or {})})
    samples: list[tuple[float, float]] = []
    peak = 0.0
    stopped_at: float | None = None
    forced_at: float | None = None
    cpu_at_stop: float | None = None
    cpu_after_stop: float | None = None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            now = time.monotonic() - started
            if pid:
                ended_epoch = time.time()
                break
            memory = memory_mb(proc.pid)
            if memory is not None:
                samples.append((now, memory[0]))
                peak = max(peak, memory[1])
            if stop_after is not None and stopped_at is None and now >= stop_after:
                cpu_at_stop = cpu_seconds(proc.pid)
                proc.send_signal(signal.SIGTERM)
                stopped_at = now
            elif stopped_at is not None and forced_at is None and now >= stopped_at + grace:
                cpu_after_stop = cpu_seconds(proc.pid) - (cpu_at_stop or 0.0)
                proc.send_signal(signal.SIGTERM)
                forced_at = now
            if now > timeout:
                raise TimeoutError(f"{name} still running after {timeout:.0f} s: {argv}")
            time.sleep(sample_every)
    except BaseException:
        proc.kill()
        os.waitpid(proc.pid, 0)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen quiet
    if cpu_at_stop is not None and cpu_after_stop is None:
        cpu_after_stop = usage.ru_utime + usage.ru_stime - cpu_at_stop
    return ProcessRun(
        exit_code=proc.returncode, started_at=started, wall=time.monotonic() - started,
        cpu=usage.ru_utime + usage.ru_stime, peak_rss_mb=peak,
        samples=samples, stopped_at=stopped_at, forced_at=forced_at, cpu_after_stop=cpu_after_stop,
        ended_epoch=ended_epoch,
        stderr=err_path.read_text(errors="replace"))


@dataclass
class PipelineRun:
    """A measured `python -m pipeline run`, its results file and its summary."""

    proc: ProcessRun
    out: Path
    summary: dict[str, Any]

    @property
    def run_seconds(self) -> float:
        """The run's own wall time (from its summary; excludes interpreter start-up)."""
        return float(self.summary.get("wall_time_s") or self.proc.wall)

    def lines(self) -> int:
        """Result lines written so far."""
        return count_lines(self.out) if self.out.exists() else 0


def run_pipeline(manifest: Path, workdir: Path, endpoint: str, config: Mapping[str, Any], *,
                 name: str = "run", state_dir: Path | None = None, out: Path | None = None,
                 stop_after: float | None = None, grace: float = 10.0, timeout: float = 300.0) -> PipelineRun:
    """`python -m pipeline run MANIFEST --out F --state-dir D --endpoint URL --config FILE`."""
    run_dir = workdir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    out = out or run_dir / "results.jsonl"
    state_dir = state_dir or run_dir / "state"
    # The time scale is a test facility the client reads from its environment, not its config.
    values = dict(config)
    scale = values.pop("time_scale", None)
    config_path = write_yaml(run_dir / "config.yaml", values)
    argv = [PYTHON, "-m", "pipeline", "run", str(manifest), "--out", str(out), "--state-dir",
            str(state_dir), "--endpoint", endpoint, "--config", str(config_path), "--progress", "off"]
    env = {"PIPELINE_TIME_SCALE": str(scale)} if scale is not None else None
    proc = measure(argv, run_dir, "pipeline", stop_after=stop_after, grace=grace, timeout=timeout, env=env)
    summary_path = out.with_name(f"{out.stem}.summary.json")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if proc.exit_code not in RUN_EXIT_CODES or (not summary and proc.forced_at is None):
        raise RuntimeError(f"pipeline run {name} failed (exit {proc.exit_code}):\n{proc.stderr[-STDERR_TAIL:]}")
    return PipelineRun(proc, out, summary)


def rss_at(samples: Sequence[tuple[float, float]], when: float) -> float:
    """The RSS sample closest to `when` seconds after spawn."""
    return min(samples, key=lambda s: abs(s[0] - when))[1]


def thin(samples: Sequence[tuple[float, float]], every: float = 1.0) -> list[tuple[float, float]]:
    """One (seconds, MB) sample per `every` seconds, rounded, for results.json."""
    out: list[tuple[float, float]] = []
    for t, value in samples:
        if not out or t >= out[-1][0] + every:
            out.append((round(t, 2), round(value, 1)))
    return out
