"""Leaving `pipeline.stream`'s loop while the stream is still held in a variable (no `async with`,
no `aclose`): the run stops and the next stream on the same out waits for it; a stream of this
process still being read is refused with a StateLocked that says which and what to do."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from support import assert_exactly_once, items, read_results

import pipeline
from pipeline.emulator import EmulatorSettings, RunningEmulator, start_emulator
from pipeline.state.lock import live_holder

KEY = "stream-leave-key-3e91"
SCALE = 50.0
FAST = {cap: (0.5, 1.5) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}
#: Tasks that stay PENDING past any test: a run the test needs alive cannot end on its own.
PENDING = {cap: (3000.0, 3000.0) for cap in FAST}
CONFIG: dict[str, Any] = {"qps_headroom": 0.9, "polling": {"first_delay": 1.0, "max_delay": 5.0}}


pytestmark = pytest.mark.usefixtures("api_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=11, time_scale=SCALE, durations=FAST)


def call(tmp: Path, url: str) -> dict[str, Any]:
    return {"out": tmp / "r.jsonl", "endpoint": url, "api_key": KEY, "config": CONFIG}


async def test_a_break_out_of_a_held_stream_stops_its_run(tmp_path: Path, emu: RunningEmulator) -> None:
    """`break` out of `async for` over a stream still held in a variable stops its run: a second
    stream on the same out waits for that stop (no StateLocked) and writes the rest, each item once."""
    rows = items(40, ["object_detection"])
    first = pipeline.stream(rows, **call(tmp_path, emu.url))
    taken = []
    async for line in first:
        taken.append(line.id)
        break
    rest = pipeline.stream(rows, **call(tmp_path, emu.url))
    later = [line.id async for line in rest]
    assert rest.result is not None and rest.result.exit_code == pipeline.ExitCode.OK
    # The second run started only once the first had ended: stopped for its consumer, resumable.
    assert first.result is not None and first.result.exit_code == pipeline.ExitCode.INTERRUPTED
    assert "stopped reading" in (first.result.reason or "")
    assert not set(taken) & set(later)
    assert_exactly_once(read_results(tmp_path / "r.jsonl"), [r["id"] for r in rows])
    assert emu.counters()["duplicate_submissions"] == 0


async def test_an_exception_in_the_loop_of_a_held_stream_stops_its_run(tmp_path: Path,
                                                                        emu: RunningEmulator) -> None:
    """The consumer's exception leaves the loop of a held stream: it propagates unchanged, the run
    stops (exit 3, resumable), and the same call right after resumes it to one line per item."""
    rows = items(30, ["object_detection"])
    lines = pipeline.stream(rows, **call(tmp_path, emu.url))
    with pytest.raises(LookupError, match="consumer failed"):
        async for _line in lines:
            raise LookupError("consumer failed")
    again = pipeline.stream(rows, **call(tmp_path, emu.url))
    [_ async for _ in again]
    assert again.result is not None and again.result.exit_code == pipeline.ExitCode.OK
    assert lines.result is not None and lines.result.exit_code == pipeline.ExitCode.INTERRUPTED
    await lines.aclose()  # nothing left to stop: returns at once
    assert_exactly_once(read_results(tmp_path / "r.jsonl"), [r["id"] for r in rows])


async def test_a_stream_still_being_read_refuses_another_in_this_process_saying_so(tmp_path: Path) -> None:
    """While this process's first stream on an out is still being read, a second one raises
    StateLocked (exit 7) naming the earlier pipeline.stream() and how to end it, and sends nothing."""
    rows = items(3, ["video_snapshot"])
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=11, time_scale=SCALE, durations=PENDING)) as slow:
        async with pipeline.stream(rows, **call(tmp_path, slow.url)) as first:
            waiting = asyncio.ensure_future(first.__anext__())
            while slow.counters()["tasks_created_total"] < 3:
                assert not waiting.done(), "the first run ended"
                await asyncio.sleep(0.01)
            with pytest.raises(pipeline.StateLocked) as caught:
                [_ async for _ in pipeline.stream(rows, **call(tmp_path, slow.url))]
            message = str(caught.value)
            assert caught.value.exit_code == 7 and "earlier pipeline.stream() in this process" in message
            assert "aclose()" in message and slow.counters()["tasks_created_total"] == 3
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        assert live_holder(tmp_path / "r.jsonl.state") is None
