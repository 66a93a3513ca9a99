"""A cancelled `pipeline.arun` (the caller's task cancelled): the state dir is resumable (exit 3),
`status` says it was cancelled, and the session's history row records what it did up to the
cancel and how it ended, instead of staying "running" with the counts of its last sample."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from support import assert_exactly_once, cli, items, read_results, write_manifest

import pipeline
from pipeline.emulator import EmulatorSettings, EmulatorThread
from pipeline.state.lock import live_holder

KEY = "api-cancel-key-5b0a"
SCALE = 20.0
FAST = {cap: (0.5, 1.5) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}
#: Tasks that stay PENDING past any test: the run cannot end before the cancel.
PENDING = {cap: (3000.0, 3000.0) for cap in FAST}
CONFIG = {"qps_headroom": 0.9, "polling": {"first_delay": 1.0, "max_delay": 5.0}}


pytestmark = pytest.mark.usefixtures("api_env")


def sessions(state: Path) -> list[dict]:
    done = cli(["status", "--history", "--json", "--state-dir", str(state)])
    report = json.loads(done.stdout)
    assert done.returncode == report["runs"][0]["exit_code"], done.stderr  # the history exits as status does
    return report["runs"][0]["sessions"]


async def test_a_cancelled_arun_is_resumable_and_its_history_row_says_what_it_did(tmp_path: Path) -> None:
    """Cancelled once every task was created: status exits 3 naming the cancel; the history row is
    ended as stopped (exit 3) with the requests it sent (at least the creates); the same call
    resumes to one line per item, and the history then lists both sessions."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(5, ["video_snapshot"]))
    out, state = tmp_path / "r.jsonl", tmp_path / "r.jsonl.state"
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=PENDING)) as emu:
        task = asyncio.create_task(pipeline.arun(manifest, out=out, endpoint=emu.url, api_key=KEY, config=CONFIG))
        while not (live_holder(state) and emu.counters()["tasks_created_total"] >= 5):
            assert not task.done(), task
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        created = emu.counters()["tasks_created_total"]
        port = int(emu.url.rsplit(":", 1)[1])
    assert live_holder(state) is None
    status = cli(["status", "--state-dir", str(state)])
    assert status.returncode == 3 and "the task running it was cancelled" in status.stdout, status.stdout
    [row] = sessions(state)
    assert row["outcome"] == "stopped" and row["exit_code"] == 3 and row["ended"] is not None
    assert "the task running it was cancelled" in row["stop_reason"]
    assert row["requests"] >= created and row["by_capability"]["video_snapshot"]["requests"] >= created
    # A fresh emulator on the same address forgets the tasks: the resume creates them again and ends.
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=FAST), port=port) as emu:
        result = await pipeline.arun(manifest, out=out, endpoint=emu.url, api_key=KEY, config=CONFIG)
    assert result.exit_code == 0
    assert_exactly_once(read_results(out), [f"item-{i:05d}" for i in range(5)])
    assert [(s["outcome"], s["exit_code"]) for s in sessions(state)] == [("stopped", 3), ("completed", 0)]
