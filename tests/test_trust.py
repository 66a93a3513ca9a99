"""Promises an unattended run relies on, end to end against the emulator (in process): the exit
code describes the whole run, nothing is paid twice, a broken service stops the run resumable."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from support import assert_exactly_once, items, jobs_of, read_results, write_manifest

from pipeline.config.load import Config
from pipeline.core.backoff import PollPolicy
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, FaultSettings, start_emulator
from pipeline.engine.runner import RunRequest, RunResult, run

KEY = "trust-test-key"
SCALE = 10.0
SHORT = {cap: (0.5, 2.0) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                      "video-summarization", "audio-asr")}


def emulator(**overrides: Any) -> EmulatorSettings:
    return EmulatorSettings(**{"api_key": KEY, "seed": 7, "time_scale": SCALE, "durations": SHORT, **overrides})


def config(endpoint: str, **overrides: Any) -> Config:
    base: dict[str, Any] = {"endpoint": endpoint, "time_scale": SCALE, "qps_headroom": 0.9,
                            "polling": PollPolicy(first_delay=1.0, max_delay=5.0, timeout=600.0)}
    return Config(**{**base, **overrides})


async def run_once(tmp: Path, manifest: Path, cfg: Config, **flags: Any) -> RunResult:
    files = RunFiles(tmp / "results.jsonl", tmp / "state")
    return await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=cfg, **flags))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_rerun_over_earlier_failures_still_exits_1(tmp_path: Path) -> None:
    """Items FAILED in an earlier session keep the whole run's exit code at 1 on every later run
    (before: the re-run exited 0 with "completed … failed N")."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(6, ["audio_asr"]))
    async with start_emulator(emulator(faults=FaultSettings(task_fail_rate=1.0))) as emu:
        first = await run_once(tmp_path, manifest, config(emu.url))
        again = await run_once(tmp_path, manifest, config(emu.url))
    assert first.exit_code == again.exit_code == ExitCode.PARTIAL
    assert again.summary["failed"] == 6 and again.summary["outcome"] == "completed with failures"


async def test_an_unreachable_service_stops_resumable_and_marks_nothing_failed(tmp_path: Path) -> None:
    """Connection refused after every retry stops the run with exit 3 and no FAILED line; the same
    command against a live service then finishes everything with exit 0."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(30))
    fast_retry = dataclasses.replace(Config().retry, base=0.01, max_delay=0.05)
    dead = await run_once(tmp_path, manifest, config(f"http://127.0.0.1:{closed_port()}", retry=fast_retry))
    assert dead.exit_code == ExitCode.INTERRUPTED
    assert "ServiceUnreachable" in (dead.reason or "") and "resume" in (dead.reason or "")
    assert read_results(tmp_path / "results.jsonl") == []
    async with start_emulator(emulator()) as emu:
        alive = await run_once(tmp_path, manifest, config(emu.url))
    assert alive.exit_code == ExitCode.OK, alive.summary
    assert_exactly_once(read_results(tmp_path / "results.jsonl"), jobs_of(manifest))


async def test_item_failures_do_not_trip_the_failure_threshold(tmp_path: Path) -> None:
    """Tasks the service ends FAILED are the items' fault, not the run's: with a window of 10 and
    every task failing, the run still finishes every item (exit 1), instead of stopping."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(30, ["audio_asr"]))
    async with start_emulator(emulator(faults=FaultSettings(task_fail_rate=1.0))) as emu:
        cfg = config(emu.url, failure_threshold=dataclasses.replace(Config().failure_threshold, window=10))
        result = await run_once(tmp_path, manifest, cfg)
    assert result.exit_code == ExitCode.PARTIAL, result.reason
    assert len(read_results(tmp_path / "results.jsonl")) == 30


async def test_a_timed_out_create_is_sent_again_at_most_once(tmp_path: Path) -> None:
    """Against a service slower than the request timeout, each create is sent at most twice (the
    default ambiguous_creates 1), and the summary counts the possible double billings."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(3, ["image_analyze"]))
    slow = FaultSettings(slow_rate=1.0, slow_seconds=10.0, routes=("image-analyze:create",))
    async with start_emulator(emulator(faults=slow)) as emu:
        cfg = config(emu.url, request_timeout=0.3, retry=dataclasses.replace(Config().retry, base=0.01))
        result = await run_once(tmp_path, manifest, cfg)
        counters = emu.counters()
    lines = read_results(tmp_path / "results.jsonl")
    assert {line["error"]["code"] for line in lines} == {"Timeout"}
    assert counters["faults"]["slow"] == 2 * 3, counters["faults"]  # creates received: 2 per item, not 5
    assert result.summary["possible_double_billing"] == 3


async def test_a_cut_short_results_file_is_refilled_by_polling_not_resubmitting(tmp_path: Path) -> None:
    """Lines lost from the results file come back through their recorded task ids: no task is
    created again, and the file ends with exactly one line per item."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(20, ["audio_asr", "video_snapshot"]))
    out = tmp_path / "results.jsonl"
    async with start_emulator(emulator()) as emu:
        await run_once(tmp_path, manifest, config(emu.url))
        created = emu.counters()["tasks_created_total"]
        raw = out.read_bytes().splitlines(keepends=True)
        out.write_bytes(b"".join(raw[:8]))
        again = await run_once(tmp_path, manifest, config(emu.url))
        assert emu.counters()["tasks_created_total"] == created
    assert again.exit_code == ExitCode.OK
    assert_exactly_once(read_results(out), jobs_of(manifest))


async def test_spend_cap_stops_then_a_higher_cap_finishes_without_paying_twice(tmp_path: Path) -> None:
    """--max-cost about half the estimate: exit 6, settled + reserved within the cap, every
    submitted task polled to its line; the same run with a higher cap ends with exit 0 and no
    item submitted twice."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(20, ["video_snapshot"]))  # 0.002 CNY each
    async with start_emulator(emulator()) as emu:
        capped = await run_once(tmp_path, manifest, config(emu.url, max_cost=0.02))
        spend = capped.summary["spend"]
        assert capped.exit_code == ExitCode.SPEND_CAP, capped.reason
        assert spend["settled"] + spend["reserved"] <= 0.02 + 1e-9
        lines = read_results(tmp_path / "results.jsonl")
        assert 0 < len(lines) < 20 and all(line["status"] == "SUCCESS" for line in lines)
        created = emu.counters()["tasks_created_total"]
        assert created == len(lines), "every submitted task is polled to its line"
        raised = await run_once(tmp_path, manifest, config(emu.url, max_cost=1.0))
        counters = emu.counters()
    assert raised.exit_code == ExitCode.OK, raised.reason
    assert_exactly_once(read_results(tmp_path / "results.jsonl"), jobs_of(manifest))
    assert counters["duplicate_submissions"] == 0
    assert raised.summary["spend"]["settled"] == pytest.approx(20 * 0.002)


async def test_time_limit_stops_taking_items_and_finishes_accepted_ones(tmp_path: Path) -> None:
    """--max-duration: after the limit no new item is submitted, accepted tasks still get their
    lines, and the run exits 3; the same command then finishes the rest."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(60, ["video_snapshot"]))
    async with start_emulator(emulator()) as emu:
        limited = await run_once(tmp_path, manifest, config(emu.url, max_duration=5.0))  # 0.5 s at scale 10
        lines = read_results(tmp_path / "results.jsonl")
        assert limited.exit_code == ExitCode.INTERRUPTED and "max-duration" in (limited.reason or "")
        assert 0 < len(lines) < 60
        assert emu.counters()["tasks_created_total"] == len(lines)
        rest = await run_once(tmp_path, manifest, config(emu.url))
    assert rest.exit_code == ExitCode.OK
    assert_exactly_once(read_results(tmp_path / "results.jsonl"), jobs_of(manifest))


async def test_many_rejected_lines_are_summarized_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A garbage manifest logs the first rejected lines one by one, then only a count."""
    manifest = write_manifest(tmp_path / "m.jsonl", ["{garbage"] * 200 + items(1))
    async with start_emulator(emulator()) as emu:
        result = await run_once(tmp_path, manifest, config(emu.url))
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert result.exit_code == ExitCode.PARTIAL and result.summary["rejected_lines"] == 200
    assert len(rejected) <= 25
    assert any("200 manifest lines rejected" in r.getMessage() for r in rejected)
    assert len((tmp_path / "results.rejects.jsonl").read_text().splitlines()) == 200
    assert json.loads((tmp_path / "results.summary.json").read_text())["exit_code"] == 1
