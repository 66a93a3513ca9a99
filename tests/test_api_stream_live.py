"""`pipeline.stream` fed by a live source: an async source's items are sent as they come (not
once 512 have, or at its end), while items all at hand are still decided in full batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import items

import pipeline
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.engine import reader

KEY = "stream-live-key-71d0"
SCALE = 50.0
FAST = {cap: (0.5, 1.5) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}
CONFIG: dict[str, Any] = {"qps_headroom": 0.9, "polling": {"first_delay": 1.0, "max_delay": 5.0}}
#: A hang guard only: on the old reader the first line never came (it waited for 512 items).
HANG = 90


pytestmark = pytest.mark.usefixtures("api_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=FAST)


def call(tmp: Path, emu: RunningEmulator) -> dict[str, Any]:
    return {"out": tmp / "r.jsonl", "endpoint": emu.url, "api_key": KEY, "config": CONFIG}


def sent(emu: RunningEmulator) -> int:
    """Creates and detections the emulator accepted so far."""
    return sum(emu.counters()["submissions"].values())


@pytest.mark.parametrize("analysis", ["object_detection", "video_snapshot"])
async def test_a_live_feeds_item_is_sent_before_the_next_one_comes(tmp_path: Path, emu: RunningEmulator,
                                                                    analysis: str) -> None:
    """An async source that yields one item, then waits until the consumer has that item's line,
    gets it: each item is sent once none is ready after it, not once 512 have come."""
    rows = items(3, [analysis])
    taken: dict[str, anyio.Event] = {row["id"]: anyio.Event() for row in rows}

    async def feed() -> AsyncIterator[dict[str, Any]]:
        for row in rows:
            yield row
            await taken[row["id"]].wait()  # the next item comes only once this one's line did

    got = []
    with anyio.fail_after(HANG):
        async with pipeline.stream(feed(), **call(tmp_path, emu)) as lines:
            async for line in lines:
                got.append(line.id)
                taken[line.id].set()
    assert got == [row["id"] for row in rows]
    assert lines.result is not None and lines.result.exit_code == pipeline.ExitCode.OK


async def test_an_async_source_with_its_items_at_hand_is_still_decided_in_full_batches(
        tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Items an async source has ready (no wait between them) fill the reader's batches as a file's
    do: one catalog lookup per READER_YIELD_EVERY units, not one per item."""
    monkeypatch.setattr(reader, "READER_YIELD_EVERY", 50)
    sizes: list[int] = []
    decide = reader.Reader._batch

    async def counted(self: reader.Reader, batch: list[Any], *args: Any, **kwargs: Any) -> None:
        sizes.append(len(batch))
        await decide(self, batch, *args, **kwargs)

    monkeypatch.setattr(reader.Reader, "_batch", counted)
    rows = items(500, ["object_detection"])

    async def at_hand() -> AsyncIterator[dict[str, Any]]:
        for row in rows:
            yield row

    got = [line.id async for line in pipeline.stream(at_hand(), **call(tmp_path, emu))]
    assert len(got) == 500 and sum(sizes) == 500
    assert len([n for n in sizes if n]) <= 500 // 50 + 2, sizes
