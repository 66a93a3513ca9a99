"""`pipeline.stream` over an async source that makes the run wait for its next item (a queue, a
paged API): the items already read are sent and their lines yielded meanwhile, not held until a
batch of 512 fills; and leaving the stream while the source waits stops the run (exit 3) at once,
its next call resuming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import assert_exactly_once, items, read_results

import pipeline
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.state.lock import live_holder

KEY = "stream-waits-key-3d7e"
SCALE = 50.0
FAST = {cap: (0.5, 1.5) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}
CONFIG: dict[str, Any] = {"qps_headroom": 0.9, "polling": {"first_delay": 1.0, "max_delay": 5.0}}

# On the code before the fix these tests hang (the source's wait holds the read): fail in a minute, not two.
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("api_env")]


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=FAST)


def call(tmp: Path, emu: RunningEmulator) -> dict[str, Any]:
    return {"out": tmp / "r.jsonl", "endpoint": emu.url, "api_key": KEY, "config": CONFIG}


async def test_items_read_before_the_source_waits_are_run_meanwhile(tmp_path: Path, emu: RunningEmulator) -> None:
    """A source that gives 3 items, then (and a second time after 2 more) gives more only once
    the consumer has the lines of those before: every line comes, each once, exit 0."""
    rows = items(7, ["image_analyze"])
    taken: list[pipeline.ResultLine] = []
    got = asyncio.Event()

    async def paged() -> AsyncIterator[dict[str, Any]]:
        for start, end in ((0, 3), (3, 5), (5, 7)):
            for row in rows[start:end]:
                yield row
            got.clear()
            while len(taken) < end and end < len(rows):  # the next page only once these are run
                await got.wait()
                got.clear()

    async with pipeline.stream(paged(), **call(tmp_path, emu)) as lines:
        async for line in lines:
            taken.append(line)
            got.set()
    assert lines.result is not None and lines.result.exit_code == 0
    assert sorted(line.id for line in taken) == sorted(row["id"] for row in rows)
    assert_exactly_once(read_results(tmp_path / "r.jsonl"), [r["id"] for r in rows])


async def test_leaving_while_the_source_waits_stops_the_run_and_a_second_call_resumes(
        tmp_path: Path, emu: RunningEmulator) -> None:
    """The consumer leaves `async with` while the source waits for an item that never comes: the
    run stops (exit 3, lock released) rather than wait for it, and a second call with the full
    list sends only the rest."""
    rows = items(6, ["image_analyze"])

    async def stalls() -> AsyncIterator[dict[str, Any]]:
        for row in rows[:3]:
            yield row
        await asyncio.Event().wait()  # never set: only the stop ends this wait
        yield rows[3]

    async with pipeline.stream(stalls(), **call(tmp_path, emu)) as lines:
        ids = []
        async for line in lines:
            ids.append(line.id)
            if len(ids) == 3:
                break
    assert lines.result is not None and lines.result.exit_code == pipeline.ExitCode.INTERRUPTED
    assert live_holder(tmp_path / "r.jsonl.state") is None
    before = sum(emu.counters()["submissions"].values())
    again = pipeline.stream(rows, **call(tmp_path, emu))
    rest = [line.id async for line in again]
    assert again.result is not None and again.result.exit_code == 0
    assert sorted(rest) == sorted(r["id"] for r in rows[3:])
    assert sum(emu.counters()["submissions"].values()) - before == 3
    assert_exactly_once(read_results(tmp_path / "r.jsonl"), [r["id"] for r in rows])
