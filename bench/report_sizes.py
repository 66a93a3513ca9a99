"""Scenario 11: how big the HTML run report gets.

Three reports, each measured as the bytes of the file: a real 300-item mixed run against the
emulator (every capability, 3 % of tasks failing, 429 bursts; time scale 10), the report `run`
writes at its end; a real 10-second run (12 items); and a 10-hour session sampled every 10 s
(3,600 samples fed through the run's own recorder into a real state dir, with 365 earlier nights
in its history), rendered by `report`'s own code. Targets from issue 23: under 1 MB and 2 MB.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config.load import Config
from pipeline.core.capabilities import CAPABILITIES
from pipeline.emulator import EmulatorSettings, EmulatorThread, FaultSettings
from pipeline.state.checkpoint import Checkpoint, SessionCounts

from .environment import KEY, PYTHON, REPO, child_env, write_yaml
from .figures import ScenarioResult
from .manifests import write_manifest

TITLE = "HTML run report: file sizes"
SCALE = 10.0
DURATIONS = {"image-analyze": (0.5, 4.0), "video-segmentation": (5.0, 60.0), "video-snapshot": (2.0, 30.0),
             "video-summarization": (5.0, 60.0), "audio-asr": (3.0, 45.0)}
TARGET_MIXED_BYTES = 1_000_000
TARGET_LONG_BYTES = 2_000_000
HOURS = 10
NIGHTS = 365


def _real_run(folder: Path, n: int) -> int:
    """Bytes of the report a real run of `n` mixed items wrote at its end."""
    settings = EmulatorSettings(api_key=KEY, seed=11, time_scale=SCALE, durations=DURATIONS,
                                faults=FaultSettings(task_fail_rate=0.03, burst_429_rate=0.01))
    manifest = write_manifest(folder / "catalog.jsonl", n)
    cfg = write_yaml(folder / "cfg.yaml", {"qps_headroom": 0.9})
    with EmulatorThread(settings) as emu:
        subprocess.run([PYTHON, "-m", "pipeline", "-q", "run", str(manifest), "--out", str(folder / "results.jsonl"),
                        "--endpoint", emu.url, "--config", str(cfg)], cwd=REPO, check=False, timeout=600,
                       env=child_env(PIPELINE_TIME_SCALE=str(SCALE)), capture_output=True)
    return (folder / "results.report.html").stat().st_size


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _long_session(folder: Path) -> tuple[int, int]:
    """Bytes of the report of a 10-hour session and a year of nights; samples kept."""
    from pipeline.cli.report_data_of import report_data
    from pipeline.engine.recording import Recorder
    from pipeline.observe.html_report import render_report
    from pipeline.observe.report import RunStats

    ckpt = Checkpoint.open(folder / "state")
    ckpt.set_meta("out", str(folder / "results.jsonl"))
    for night in range(NIGHTS):
        ckpt.start_session(night * 86_400.0)
        ckpt.end_session(ended=night * 86_400.0 + 3_600, outcome="completed", exit_code=0, stop_reason=None,
                         counts=SessionCounts(succeeded=300, requests=1_200, cost=12.0))
    stats, clock = RunStats(), _Clock()
    recorder = Recorder(ckpt, stats, Config(), clock=clock, wall=lambda: NIGHTS * 86_400.0)
    session = recorder.start()
    for step in range(1, HOURS * 360 + 1):
        for n, cap in enumerate(CAPABILITIES):
            c = stats.caps[cap]
            c.requests += 40 + (step * (n + 3)) % 11
            c.rate_limited += step % (7 + n) == 0
            c.succeeded += 5
            c.in_flight = 50 + (step * 7) % 30
            stats.durations.add((step * 13) % 400)
            stats.detection_lag.add((step % 50) / 10)
        clock.now = step * recorder.step
        recorder.flush()
    samples = len(ckpt.samples(session))
    html = render_report(report_data(ckpt, folder / "state", Config(), now=NIGHTS * 86_400.0 + HOURS * 3600))
    ckpt.close()
    return len(html.encode("utf-8")), samples


def run(quick: bool = False) -> ScenarioResult:
    result = ScenarioResult("report_sizes", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        root = Path(tmp)
        for name in ("mixed", "short", "long"):
            (root / name).mkdir()
        mixed = _real_run(root / "mixed", 300)
        short = _real_run(root / "short", 12)
        long_bytes, samples = _long_session(root / "long")
    result.add("300-item mixed run (real): report size", mixed / 1000, "kB", ("<=", TARGET_MIXED_BYTES / 1000),
               digits=0)
    result.add("12-item run of a few seconds (real): report size", short / 1000, "kB", digits=0)
    result.add("10-hour session, 365 nights of history: report size", long_bytes / 1000, "kB",
               ("<=", TARGET_LONG_BYTES / 1000), digits=0)
    result.add("10-hour session: samples kept in the state dir (3,600 recorded)", samples)
    result.raw = {"mixed_bytes": mixed, "short_bytes": short, "long_bytes": long_bytes, "long_samples": samples}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    if "mixed_bytes" not in raw:
        return []
    return [
        f"The 300-item run's report is {raw['mixed_bytes']:,} bytes: every plot is inline SVG with its text as "
        "text; the time series of a run this short have a point per 10 emulated seconds.",
        f"The 10-hour session's 3,600 samples are kept as {raw['long_samples']} (merged in pairs past 720) and "
        f"drawn as at most 240 points per series; with a year of nights in the history (the report lists the "
        f"last 30) the file is {raw['long_bytes']:,} bytes.",
    ]
