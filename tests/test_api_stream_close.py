"""A closed `pipeline.stream` is closed, as a closed async generator is: `aclose()` before the
first iteration starts no run, and after `aclose()` (or leaving `async with`) iterating yields
nothing more, even lines that were durable and waiting."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from support import items, read_results

import pipeline
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.state.lock import live_holder

KEY = "stream-close-key-19aa"
SCALE = 50.0
FAST = {cap: (0.5, 1.5) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}
CONFIG: dict[str, Any] = {"qps_headroom": 0.9, "polling": {"first_delay": 1.0, "max_delay": 5.0}}


pytestmark = pytest.mark.usefixtures("api_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=FAST)


def call(tmp: Path, emu: RunningEmulator) -> dict[str, Any]:
    return {"out": tmp / "r.jsonl", "endpoint": emu.url, "api_key": KEY, "config": CONFIG}


async def test_aclose_before_iterating_starts_no_run(tmp_path: Path, emu: RunningEmulator) -> None:
    """A stream closed before its first iteration yields nothing, sends nothing and creates no file."""
    lines = pipeline.stream(items(5, ["image_analyze"]), **call(tmp_path, emu))
    await lines.aclose()
    assert [line async for line in lines] == []
    async with lines:
        assert [line async for line in lines] == []
    assert lines.result is None and sum(emu.counters()["submissions"].values()) == 0
    assert list(tmp_path.iterdir()) == []


async def test_after_aclose_waiting_lines_are_not_yielded(tmp_path: Path, emu: RunningEmulator) -> None:
    """Closed while durable lines wait for the consumer: the run stops (exit 3, lock released) and
    iterating the closed stream yields none of them; they are in the results file."""
    rows = items(6, ["image_analyze"])

    async def more_to_come() -> Any:  # five items, then none until the stream is closed: the run cannot end first
        for row in rows[:5]:
            yield row
        await asyncio.Event().wait()
        yield rows[5]

    lines = pipeline.stream(more_to_come(), **call(tmp_path, emu))
    first = await lines.__anext__()
    while lines.buffered < 4:  # until every other line is durable and waits for the consumer
        assert lines.result is None, "the run ended"
        await asyncio.sleep(0.01)
    await lines.aclose()
    assert lines.result is not None and lines.result.exit_code == pipeline.ExitCode.INTERRUPTED
    assert live_holder(tmp_path / "r.jsonl.state") is None
    assert [line async for line in lines] == []
    written = {line["id"] for line in read_results(tmp_path / "r.jsonl")}
    assert written == {row["id"] for row in rows[:5]} and first.id in written
