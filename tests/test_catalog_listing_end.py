"""A session of a catalog run that ends while its source is checked or listed, before anything is
sent (OSS failing past the retries, a cancelled `pipeline.arun`), against the emulator and its OSS
on 127.0.0.1: `status` and `status --history` show it with its exit code, its history row counts
the listing's time, and the same command then resumes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from catalog_support import (
    KEY,
    OSS_ID,
    OSS_SECRET,
    cli_args,
    fill_two_pages,
    finish,
    oss_config,
    session,
    start_cli,
    until,
)
from run_support import emulator

from pipeline.cli import history, status
from pipeline.cli.main import exit_code_for
from pipeline.config.load import Config
from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.emulator.oss_server import RunningOss
from pipeline.engine.item_source import ItemSource

pytestmark = pytest.mark.usefixtures("no_pipeline_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    """The engine tests' emulator: the runs' key and time scale."""
    return emulator()


async def test_a_listing_fault_before_anything_is_sent_shows_in_status_and_history(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss, monkeypatch: pytest.MonkeyPatch) -> None:
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
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss, monkeypatch: pytest.MonkeyPatch) -> None:
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


async def test_ctrl_c_while_the_source_is_checked_is_a_recorded_interruption(
        tmp_path: Path, emu: RunningEmulator, oss: RunningOss) -> None:
    """`run` from the command line, SIGINT while OSS does not answer the source's check on night 2:
    it exits 3 saying so, `status` and `status --history` exit 3, and the history has its row."""
    fill_two_pages(oss)
    env = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": "10", "OSS_ACCESS_KEY_ID": OSS_ID,
           "OSS_ACCESS_KEY_SECRET": OSS_SECRET, "PYTHONFAULTHANDLER": "1"}
    args = cli_args(tmp_path, "oss://media/v/", emu, analyses_by_type={"video": ["video_snapshot"]},
                    upload={"endpoint": oss.url}, request_timeout=300)
    code, err = await finish(await start_cli(args, env))
    assert code == 0, err[-2000:]
    oss.state.faults.inject("ListObjectsV2", "hang")
    proc = await start_cli(args, env)
    await until(proc, lambda: oss.state.faults.applied["hang"] == 1)
    assert proc.stderr is not None
    said = asyncio.create_task(proc.stderr.read())  # read as it comes: a full pipe would hold the run
    proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), timeout=60)
    except asyncio.TimeoutError:  # stuck: its threads' stacks (faulthandler) say where
        proc.send_signal(signal.SIGABRT)
        await proc.wait()
    code, err = proc.returncode, (await said).decode()
    oss.state.faults.clear()
    assert code == ExitCode.INTERRUPTED and "SIGINT" in err, err[-6000:]
    state = tmp_path / "state"
    assert status.status([state], Config())[0] == ExitCode.INTERRUPTED
    code, past = history.history([state])
    rows = past["runs"][0]["sessions"]
    assert code == ExitCode.INTERRUPTED and len(rows) == 2 and rows[-1]["exit_code"] == ExitCode.INTERRUPTED
