"""After the failure threshold stopped a run (exit 5), a resume can finish it: its window judges
only what happens after the resume, and `--retry-failed` sends the outage's items again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from support import assert_exactly_once, items, jobs_of, read_results, write_manifest

from pipeline.config.load import Config
from pipeline.core.exit_codes import ExitCode
from pipeline.core.outcome import UNFINISHED, Stop, StopReason, is_run_fault
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, FaultSettings, start_emulator
from pipeline.engine.runner import RunRequest, RunResult, run
from pipeline.engine.shutdown import FailureWatch, carried_window

KEY = "threshold-key-83a0"
SCALE = 10.0
WINDOW = 10


@pytest.mark.parametrize(
    ("saved", "last_stop", "carried"),
    [
        ("0111111111", Stop(StopReason.THRESHOLD, "6 of the last 10"), ""),
        ("0111", Stop(StopReason.INTERRUPTED, "SIGTERM"), "0111"),
        ("0111", Stop(StopReason.TIME_LIMIT, "6h"), "0111"),
        ("0111", Stop(StopReason.SPEND_CAP, "cap"), "0111"),
        ("0111", Stop(StopReason.UNREACHABLE, "refused"), "0111"),
        ("0111", UNFINISHED, "0111"),  # kill -9: the window spans it
        ("0111", None, "0111"),  # the run finished
        ("", Stop(StopReason.THRESHOLD, "tripped"), ""),
    ],
)
def test_which_window_a_session_carries(saved: str, last_stop: Stop | None, carried: str) -> None:
    """The saved window spans every stop but the threshold's own: a resume after exit 5 starts empty."""
    assert carried_window(saved, last_stop) == carried


def test_a_window_carried_after_a_trip_no_longer_trips_on_the_first_success() -> None:
    """The trip that made the resumes hopeless: a full window of faults trips again on any item
    (52 of the last 53…), while the window a resume after exit 5 carries does not."""
    full = "1" * WINDOW
    assert FailureWatch(WINDOW, 0.5, full).record(False) is not None
    resumed = FailureWatch(WINDOW, 0.5, carried_window(full, Stop(StopReason.THRESHOLD, "tripped")))
    assert all(resumed.record(False) is None for _ in range(3 * WINDOW))


def config(endpoint: str, **overrides: Any) -> Config:
    base: dict[str, Any] = {"endpoint": endpoint, "time_scale": SCALE, "qps_headroom": 0.9,
                            "retry": dataclasses.replace(Config().retry, max_attempts=1),
                            "failure_threshold": dataclasses.replace(Config().failure_threshold, window=WINDOW)}
    return Config(**{**base, **overrides})


async def run_once(tmp: Path, manifest: Path, cfg: Config, **flags: Any) -> RunResult:
    files = RunFiles(tmp / "results.jsonl", tmp / "state")
    return await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=cfg, **flags))


async def test_after_an_outage_trips_the_threshold_the_resume_finishes(tmp_path: Path) -> None:
    """500s trip the threshold (exit 5); once the service answers again the same command runs
    every item left (before: one item, then exit 5 again), ending with exit 1 for the outage's
    FAILED items, which `--retry-failed` then sends again: exit 0, one line per item, nothing
    paid twice."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(60, ["object_detection"]))
    settings = EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, faults=FaultSettings(error_500_rate=1.0))
    async with start_emulator(settings) as emu:
        tripped = await run_once(tmp_path, manifest, config(emu.url))
        assert tripped.exit_code == ExitCode.THRESHOLD, tripped.reason
        assert "--retry-failed" in (tripped.reason or "")
        outage = read_results(tmp_path / "results.jsonl")
        assert 0 < len(outage) < 60
        assert all(line["status"] == "FAILED" and is_run_fault(line["error"]["code"], line["error"]["http_status"])
                   for line in outage)
        emu.state.update_faults({"error_500_rate": 0.0})
        resumed = await run_once(tmp_path, manifest, config(emu.url))
        assert resumed.exit_code == ExitCode.PARTIAL, resumed.reason
        assert resumed.summary["failed"] == len(outage) and resumed.summary["succeeded"] == 60 - len(outage)
        retried = await run_once(tmp_path, manifest, config(emu.url), retry_failed=True)
        counters = emu.state.counters_snapshot()
    assert retried.exit_code == ExitCode.OK, retried.reason
    lines = read_results(tmp_path / "results.jsonl")
    assert_exactly_once(lines, jobs_of(manifest))
    assert all(line["status"] == "SUCCESS" for line in lines)
    assert counters["duplicate_submissions"] == 0  # the outage's 500s processed nothing: nothing paid twice


async def test_a_resume_still_broken_trips_again_only_on_its_own_failures(tmp_path: Path) -> None:
    """The resume's window starts empty, not off: against a service still failing it trips again,
    on the first run fault past half a window of its own (before: on its first item, the outage's
    window still full)."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(80, ["object_detection"]))
    settings = EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, faults=FaultSettings(error_500_rate=1.0))
    async with start_emulator(settings) as emu:
        first = await run_once(tmp_path, manifest, config(emu.url))
        again = await run_once(tmp_path, manifest, config(emu.url))
    assert first.exit_code == again.exit_code == ExitCode.THRESHOLD
    tripped_at = WINDOW // 2 + 1
    assert f"{tripped_at} of the last {tripped_at} finished items" in (again.reason or ""), again.reason
