"""A session of a catalog run that ends while its source is checked or listed, before anything is
sent (OSS failing past the retries, a cancelled `pipeline.arun`), against the emulator and its OSS
on 127.0.0.1: `status` and `status --history` show it with its exit code, its history row counts
the listing's time, and the same command then resumes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from test_catalog_faults import (  # noqa: F401  (fixtures: the emulator's settings, its OSS)
    _no_pipeline_env,
    emu_settings,
    fill_two_pages,
    oss,
    oss_config,
    session,
)

from pipeline.cli import history, status
from pipeline.cli.main import exit_code_for
from pipeline.config.load import Config
from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import RunningEmulator
from pipeline.emulator.oss_server import RunningOss
from pipeline.engine.item_source import ItemSource


async def test_a_listing_fault_before_anything_is_sent_shows_in_status_and_history(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Night 2's listing fails past its retries at the source's check: the run raises (exit 3),
    and `status` and `status --history` both exit 3 with a second session row, ended, exit 3,
    begun before the source was checked; the same command then completes, sending nothing."""
    fill_two_pages(oss)
    cfg = oss_config(emu, oss)
    first, _ = await session(tmp_path, emu, "oss://media/v/", cfg)
    assert first.exit_code == ExitCode.OK
    opened: list[float] = []
    real_open = ItemSource.open

    async def timed_open(self: ItemSource) -> None:
        opened.append(time.time())
        await real_open(self)

    monkeypatch.setattr(ItemSource, "open", timed_open)
    oss.state.faults.inject("ListObjectsV2", "503", times=None)
    with pytest.raises(Exception) as caught:
        await session(tmp_path, emu, "oss://media/v/", cfg)
    assert exit_code_for(caught.value) == ExitCode.INTERRUPTED, caught.value
    state = tmp_path / "state"
    code, report = status.status([state], Config())
    assert code == ExitCode.INTERRUPTED and report["exit_code"] == ExitCode.INTERRUPTED, report
    assert "listed" in str(report["reason"])
    code, past = history.history([state])
    sessions = past["runs"][0]["sessions"]
    assert code == ExitCode.INTERRUPTED and len(sessions) == 2
    last = sessions[-1]
    assert (last["exit_code"], last["ended"] is not None) == (ExitCode.INTERRUPTED, True)
    assert last["started"] <= opened[-1] <= last["ended"]
    oss.state.faults.clear()
    resumed, sent = await session(tmp_path, emu, "oss://media/v/", cfg)
    assert (resumed.exit_code, sent) == (ExitCode.OK, 0), resumed.summary
    rows = history.history([state])[1]["runs"][0]["sessions"]
    assert len(rows) == 3 and rows[-1]["started"] <= opened[-1]  # the resume's row counts its listing too


async def test_a_run_cancelled_while_its_source_is_checked_is_recorded(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A second night's run cancelled while its source's check waits on OSS (a hung listing):
    its session is in the history, ended with exit 3 ("cancelled"), and `status` exits 3."""
    fill_two_pages(oss)
    cfg = oss_config(emu, oss, request_timeout=300)
    await session(tmp_path, emu, "oss://media/v/", cfg)
    oss.state.faults.inject("ListObjectsV2", "hang")
    task = asyncio.create_task(session(tmp_path, emu, "oss://media/v/", cfg))
    while not oss.state.faults.applied["hang"]:
        assert not task.done()
        await asyncio.sleep(0.02)
    task.cancel()
    oss.state.faults.clear()  # the hung request ends, so the probe's thread lets go
    with pytest.raises(asyncio.CancelledError):
        await task
    code, past = history.history([tmp_path / "state"])
    last = past["runs"][0]["sessions"][-1]
    assert code == ExitCode.INTERRUPTED and len(past["runs"][0]["sessions"]) == 2
    assert last["exit_code"] == ExitCode.INTERRUPTED and "cancelled" in str(last["stop_reason"])
    assert status.status([tmp_path / "state"], Config())[0] == ExitCode.INTERRUPTED
