"""How a session's end reaches the run history: `status --history` exits as `status` does for a
run whose last session did not finish, and a cancelled `pipeline.arun` leaves a completed row
that says what it did (against the emulator on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from support import items, write_manifest

import pipeline
from pipeline.cli.main import main
from pipeline.core.exit_codes import ExitCode
from pipeline.core.outcome import UNFINISHED, RunOutcome
from pipeline.emulator import EmulatorSettings, EmulatorThread
from pipeline.state.checkpoint import Checkpoint
from pipeline.state.lock import live_holder

KEY = "history-ends-key"
SCALE = 20.0
#: Tasks that stay PENDING past any test: the run is cancelled while they are in flight.
PENDING = {cap: (3000.0, 3000.0) for cap in ("video-snapshot",)}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIPELINE_TIME_SCALE", str(SCALE))
    monkeypatch.setenv("PIPELINE_REPORT", "off")


def test_history_exits_as_status_does_after_a_killed_session(tmp_path: Path) -> None:
    """A session that began, marked the run unfinished and never recorded its end (as kill -9
    leaves it): `status` exits 3, and so does `status --history` (JSON and text)."""
    ckpt = Checkpoint.open(tmp_path / "state")
    ckpt.begin_session()
    ckpt.set_last_stop(UNFINISHED.to_record())
    ckpt.start_session(100.0)
    ckpt._conn.close()  # no end recorded, as kill -9 leaves it
    state = str(tmp_path / "state")
    assert main(["status", "--state-dir", state]) == ExitCode.INTERRUPTED
    assert main(["status", "--history", "--state-dir", state]) == ExitCode.INTERRUPTED
    assert main(["status", "--history", "--json", "--state-dir", state]) == ExitCode.INTERRUPTED


async def test_a_cancelled_arun_leaves_a_history_row_of_what_it_did(tmp_path: Path) -> None:
    """arun cancelled while its 4 tasks are in flight: its history row is ended, interrupted with
    exit 3, and counts the 4 creates it sent (not zeros)."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(4, ["video_snapshot"]))
    out, state = tmp_path / "r.jsonl", tmp_path / "r.jsonl.state"
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=PENDING)) as emu:
        task = asyncio.create_task(pipeline.arun(manifest, out=out, endpoint=emu.url, api_key=KEY,
                                                 config={"qps_headroom": 0.9}))
        while not (live_holder(state) and emu.counters()["tasks_created_total"] >= 4):
            assert not task.done(), task
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    ckpt = Checkpoint.open(state, read_only=True)
    try:
        (row,), _ = ckpt.history()
    finally:
        ckpt.close()
    assert (row.outcome, row.exit_code) == (RunOutcome.STOPPED.value, ExitCode.INTERRUPTED)  # as a Ctrl-C run
    assert row.ended is not None and row.ended >= row.started
    assert row.counts.requests >= 4 and "cancelled" in str(row.stop_reason)
