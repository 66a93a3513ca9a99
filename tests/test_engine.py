"""The engine end to end against the emulator on 127.0.0.1: every valid item gets exactly one
correct line, within the QPS limits, through faults, bad lines, lost tasks and timeouts."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import errno
import json
from pathlib import Path
from typing import Any

import pytest
from run_support import config, emulator, run_once
from support import assert_exactly_once, expected_data, items, jobs_of, read_results, write_manifest

from pipeline.config.load import Config
from pipeline.core.backoff import PollPolicy
from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import FaultSettings, start_emulator
from pipeline.emulator.results import build_result
from pipeline.state.checkpoint import Checkpoint

LIMITS = {"image-analyze": 10, "image-object-detection": 20, "video-segmentation": 5,
          "video-snapshot": 5, "video-summarization": 5, "audio-asr": 5}


#: The time scale of tests that count 429s: the emulator's window is 1 s / scale, and the pacer
#: allows a request a quarter window to arrive. At scale 10 a loaded machine's scheduling delays
#: (tens of ms) exceed that 25 ms and the server counts a burst; at 2 they are far within 125 ms.
RATE_SCALE = 2.0


@pytest.mark.timing
async def test_mixed_manifest_all_capabilities(tmp_path: Path) -> None:
    """120 items over all six capabilities: one correct line each, no duplicate submission,
    no 429, and no sliding window ever offered more than the limit."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(120))
    async with start_emulator(emulator(time_scale=RATE_SCALE)) as emu:
        result = await run_once(tmp_path, manifest, config(emu, time_scale=RATE_SCALE))
        counters = emu.counters()
    assert result.exit_code == ExitCode.OK, result.summary
    lines = read_results(tmp_path / "results.jsonl")
    jobs = jobs_of(manifest)
    assert_exactly_once(lines, jobs)
    for line in lines:
        job = jobs[line["id"]]
        assert line["status"] == "SUCCESS", line
        assert line["capability"] == job.capability and line["meta"] == job.meta
        assert line["data"] == expected_data(job, seed=11), f"wrong data for {line['id']}"
        assert (line["task_id"] is None) == (job.capability == "object_detection")
        assert line["usage"]
    assert counters["duplicate_submissions"] == 0
    assert counters["throttled_total"] == 0, counters["throttled"]
    for cap, peak in counters["max_window_offered"].items():
        assert peak <= LIMITS[cap], (cap, peak)
    summary = json.loads((tmp_path / "results.summary.json").read_text())
    assert summary["succeeded"] == 120 and summary["failed"] == 0
    assert summary["capabilities"]["image_analyze"]["succeeded"] == 20


async def test_local_file_is_sent_inline(tmp_path: Path) -> None:
    """A local `path` source is read at submit time and sent as base64 content."""
    image = tmp_path / "pic.png"
    image.write_bytes(b"\x89PNG fake image bytes")
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"id": "local", "capability": "Extract Image Content", "path": "pic.png"}])
    async with start_emulator(emulator()) as emu:
        result = await run_once(tmp_path, manifest, config(emu))
        counters = emu.counters()
    assert result.exit_code == ExitCode.OK
    (line,) = read_results(tmp_path / "results.jsonl")
    assert line["status"] == "SUCCESS" and "pic.png" in line["data"]["content"]
    assert counters["requests"]["POST image-analyze create"]["200"] == 1
    # The emulator's answer derives from the body it got: the file's bytes, base64, inline.
    job = jobs_of(manifest)["local"]
    body = CAPABILITIES["image_analyze"].build_body(job, base64.b64encode(image.read_bytes()).decode())
    assert line["data"] == build_result("image-analyze", job.service_id, body, 11)[0]


async def test_bad_lines_are_reported_and_the_rest_runs(tmp_path: Path) -> None:
    """Bad manifest lines go to the rejects file with their line numbers; valid ones all run."""
    good = items(6)
    rows: list[Any] = [good[0], "{not json", good[1], {"id": "x", "capability": "teleport", "url": "https://a/b"},
                       good[2], {"id": "y", "capability": "image_analyze"}, good[3],
                       {"id": "z", "capability": "image_analyze", "url": "https://a/b.jpg", "oss": "oss://b/k"},
                       good[4], {**good[5], "id": good[4]["id"]}, good[5], "[1, 2]"]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    async with start_emulator(emulator()) as emu:
        result = await run_once(tmp_path, manifest, config(emu))
    assert result.exit_code == ExitCode.PARTIAL  # rejected lines make a partial run
    assert_exactly_once(read_results(tmp_path / "results.jsonl"), [g["id"] for g in good])
    rejects = [json.loads(line) for line in (tmp_path / "results.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 4, 6, 8, 10, 12]
    assert "teleport" in rejects[1]["reason"] and "duplicate" in rejects[4]["reason"]
    assert result.summary["rejected_lines"] == 6


async def test_faults_end_in_exactly_one_line(tmp_path: Path) -> None:
    """500s, dropped connections, slow answers, 429 bursts and FAILED tasks: every item still
    ends in exactly one line, retryable faults end in SUCCESS, FAILED tasks keep the service's error."""
    faults = FaultSettings(error_500_rate=0.15, drop_rate=0.08, slow_rate=0.1, slow_seconds=1.0,
                           burst_429_rate=0.01, burst_429_seconds=1.0, task_fail_rate=0.1)
    manifest = write_manifest(tmp_path / "m.jsonl", items(90))
    async with start_emulator(emulator(faults=faults)) as emu:
        cfg = config(emu, retry=dataclasses.replace(Config().retry, max_attempts=8))
        result = await run_once(tmp_path, manifest, cfg)
        counters = emu.counters()
    lines = read_results(tmp_path / "results.jsonl")
    assert_exactly_once(lines, jobs_of(manifest))
    failed = [line for line in lines if line["status"] == "FAILED"]
    assert failed, "task_fail_rate 0.1 over 75 tasks should fail some"
    assert {line["error"]["code"] for line in failed} == {"TaskFailed"}, failed[:3]
    assert all(line["task_id"] for line in failed)
    assert counters["faults"]["error_500"] > 0 and counters["faults"]["dropped"] > 0
    assert counters["faults"]["slow"] > 0
    assert result.exit_code == ExitCode.PARTIAL
    assert {c.in_flight for c in result.stats.caps.values()} == {0}  # every in-flight token was given back
    assert counters["duplicate_submissions"] == 0  # drops here happen before processing


async def test_lost_task_is_resubmitted_once(tmp_path: Path) -> None:
    """A task id the service forgot (BadRequest.TaskNotExist) is submitted once more and finishes."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(10, ["audio_asr"]))
    async with start_emulator(emulator(durations={"audio-asr": (5.0, 5.0)})) as emu:
        async def forget_soon() -> int:
            while emu.counters()["tasks_created_total"] < 10:  # noqa: ASYNC110 - polling a counter
                await asyncio.sleep(0.01)
            return int(emu.state.forget_tasks())

        forgotten, result = await asyncio.gather(
            forget_soon(), run_once(tmp_path, manifest, config(emu)))
        counters = emu.counters()
    assert forgotten == 10
    assert result.exit_code == ExitCode.OK, result.summary
    lines = read_results(tmp_path / "results.jsonl")
    assert_exactly_once(lines, jobs_of(manifest))
    assert all(line["status"] == "SUCCESS" for line in lines)
    assert counters["tasks_created_total"] == 20  # each submitted exactly twice
    assert {c.in_flight for c in result.stats.caps.values()} == {0}  # a resubmission kept its token, once


async def test_poll_timeout_then_retry_failed_polls_again(tmp_path: Path) -> None:
    """A poll deadline records PollTimeout with the task id; --retry-failed polls that same task
    to SUCCESS without submitting it again, and the file keeps one line per item."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(5, ["video_segmentation"]))
    async with start_emulator(emulator(durations={"video-segmentation": (30.0, 30.0)})) as emu:
        quick = PollPolicy(first_delay=1.0, max_delay=2.0, timeout=5.0)
        first = await run_once(tmp_path, manifest, config(emu, polling=quick))
        lines = read_results(tmp_path / "results.jsonl")
        assert first.exit_code == ExitCode.PARTIAL
        assert {line["error"]["code"] for line in lines} == {"PollTimeout"}
        task_ids = {line["id"]: line["task_id"] for line in lines}
        second = await run_once(tmp_path, manifest, config(emu), retry_failed=True)
        counters = emu.counters()
    assert second.exit_code == ExitCode.OK, second.summary
    lines = read_results(tmp_path / "results.jsonl")
    assert_exactly_once(lines, task_ids)
    assert all(line["status"] == "SUCCESS" and line["task_id"] == task_ids[line["id"]] for line in lines)
    assert counters["tasks_created_total"] == 5


async def test_resume_skips_done_items(tmp_path: Path) -> None:
    """Running the same command again after a complete run submits nothing and adds no line."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(24))
    async with start_emulator(emulator()) as emu:
        await run_once(tmp_path, manifest, config(emu))
        before = emu.counters()["requests_total"]
        again = await run_once(tmp_path, manifest, config(emu))
        after = emu.counters()["requests_total"]
    assert after == before
    assert again.exit_code == ExitCode.OK and again.summary["succeeded"] == 24
    assert_exactly_once(read_results(tmp_path / "results.jsonl"), jobs_of(manifest))


async def test_failure_threshold_stops_a_broken_service_run(tmp_path: Path) -> None:
    """When more than half of the last finished items fail because the service fails (5xx), the
    run stops with exit 5 and the rest stay unprocessed."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(60, ["object_detection"]))
    async with start_emulator(emulator(faults=FaultSettings(error_500_rate=1.0))) as emu:
        cfg = config(emu, retry=dataclasses.replace(Config().retry, max_attempts=1),
                     failure_threshold=dataclasses.replace(Config().failure_threshold, window=20))
        result = await run_once(tmp_path, manifest, cfg)
    assert result.exit_code == ExitCode.THRESHOLD
    assert "failure threshold" in (result.reason or "")
    lines = read_results(tmp_path / "results.jsonl")
    assert 11 <= len(lines) < 60


async def test_wrong_key_aborts_fast_and_marks_nothing(tmp_path: Path) -> None:
    """A 401 stops the run with exit 4, writes no line, and a run with the right key completes."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(30))
    async with start_emulator(emulator()) as emu:
        loop = asyncio.get_running_loop()
        started = loop.time()
        bad = await run_once(tmp_path, manifest, config(emu), key="not-the-key")
        took = loop.time() - started
        assert bad.exit_code == ExitCode.AUTH and "InvalidApiKey" in (bad.reason or "")
        assert took < 5.0
        assert read_results(tmp_path / "results.jsonl") == []
        good = await run_once(tmp_path, manifest, config(emu))
    assert good.exit_code == ExitCode.OK
    assert_exactly_once(read_results(tmp_path / "results.jsonl"), jobs_of(manifest))


@pytest.mark.parametrize("polls_count", [True, False])
@pytest.mark.timing
async def test_polls_counted_or_not(tmp_path: Path, polls_count: bool) -> None:
    """The run completes without 429s whether or not the service counts status polls."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(40, ["image_analyze", "audio_asr"]))
    async with start_emulator(emulator(polls_count=polls_count, time_scale=RATE_SCALE)) as emu:
        result = await run_once(tmp_path, manifest, config(emu, polls_share_qps=polls_count, time_scale=RATE_SCALE))
        counters = emu.counters()
    assert result.exit_code == ExitCode.OK
    assert counters["throttled_total"] == 0


async def test_a_disk_filling_mid_run_ends_the_run_with_its_error(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """When marking lines done fails mid-run (a full disk), the run ends with that OSError, not with
    an error of a stage whose hand-over found the finisher gone."""
    real = Checkpoint.mark_done
    batches = 0

    def full(self: Checkpoint, outcomes: Any, offset: int, costs: Any = ()) -> None:
        nonlocal batches
        batches += 1
        if batches > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, outcomes, offset, costs)

    monkeypatch.setattr(Checkpoint, "mark_done", full)
    manifest = write_manifest(tmp_path / "m.jsonl", items(300))
    async with start_emulator(emulator()) as emu:
        with pytest.raises(OSError, match="No space left"):
            await run_once(tmp_path, manifest, config(emu))
