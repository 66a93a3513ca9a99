"""`pipeline.stream` against the emulator: each line yielded once durable, the same checkpoint and
resume as a run, back-pressure from a slow consumer, invalid items rejected with their index, and
a consumer that leaves (break, an exception, cancellation) stopping the run so a second call
resumes it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import assert_exactly_once, items, read_results, write_manifest

import pipeline
from pipeline.api import streaming
from pipeline.core.job import job_key
from pipeline.emulator import EmulatorSettings, RunningEmulator, start_emulator
from pipeline.engine import reader
from pipeline.state.checkpoint import Checkpoint
from pipeline.state.lock import live_holder

KEY = "stream-key-5c2a"
SCALE = 50.0
FAST = {cap: (0.5, 1.5) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}
#: Tasks that stay PENDING past any test: a run the test needs alive cannot end on its own.
PENDING = {cap: (3000.0, 3000.0) for cap in FAST}
CONFIG: dict[str, Any] = {"qps_headroom": 0.9, "polling": {"first_delay": 1.0, "max_delay": 5.0}}


pytestmark = pytest.mark.usefixtures("api_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=FAST)


def call(tmp: Path, emu: RunningEmulator, **extra: Any) -> dict[str, Any]:
    return {"out": tmp / "r.jsonl", "endpoint": emu.url, "api_key": KEY, "config": CONFIG, **extra}


def done_keys(state_dir: Path) -> set[str]:
    ckpt = Checkpoint.open(state_dir, read_only=True)
    try:
        return {key for key, _at in ckpt.done_lines()}
    finally:
        ckpt.close()


def sent(emu: RunningEmulator) -> int:
    """Creates and detections the emulator accepted so far."""
    return sum(emu.counters()["submissions"].values())


async def until(condition: Any, what: str, *, guard: Any = None) -> None:
    """Wait (yielding to the loop) until `condition()`; `guard()` must hold meanwhile."""
    while not condition():
        assert guard is None or guard(), what
        await asyncio.sleep(0.01)


async def test_each_line_is_yielded_once_durable_and_a_second_call_sends_nothing(tmp_path: Path,
                                                                                 emu: RunningEmulator) -> None:
    """Every yielded line is already in the results file and marked done in the checkpoint; each
    (item, analysis) comes once; the same call again yields nothing and sends nothing."""
    rows = items(12, ["image_analyze", "object_detection", "video_snapshot"])
    out, state = tmp_path / "r.jsonl", tmp_path / "r.jsonl.state"
    got = []
    async with pipeline.stream(rows, **call(tmp_path, emu)) as lines:
        async for line in lines:
            assert isinstance(line, pipeline.ResultLine)
            assert (line.id, line.analysis) in {(r["id"], r["analysis"]) for r in read_results(out)}
            assert job_key(line.id, line.analysis) in done_keys(state)
            got.append(line.id)
    assert lines.result is not None and lines.result.exit_code == pipeline.ExitCode.OK
    assert sorted(got) == sorted(r["id"] for r in rows)
    assert_exactly_once(read_results(out), got)
    before = sent(emu)
    again = pipeline.stream(rows, **call(tmp_path, emu))
    assert [line async for line in again] == []
    assert again.result is not None and again.result.exit_code == 0 and sent(emu) == before
    assert again.result.summary["catalog"]["unchanged"] == 12


async def test_an_async_iterable_of_items_and_a_chained_analysis(tmp_path: Path, emu: RunningEmulator) -> None:
    """An async generator of items works as a list does, chained analyses included (the child's
    line comes after its parent's)."""
    async def produce() -> AsyncIterator[dict[str, Any]]:
        for i in range(3):
            await asyncio.sleep(0)  # a producer that awaits between items
            yield {"id": f"ep-{i}", "oss": f"oss://media/ep{i}.mp4", "analyses": [
                {"name": "seg", "capability": "video_segmentation", "output": "oss://media/out/"},
                {"name": "summary", "capability": "video_summarization", "after": "seg",
                 "output": "oss://media/sum/"}]}

    order = [(line.id, line.analysis) async for line in pipeline.stream(produce(), **call(tmp_path, emu))]
    assert sorted(order) == sorted((f"ep-{i}", name) for i in range(3) for name in ("seg", "summary"))
    for i in range(3):
        assert order.index((f"ep-{i}", "seg")) < order.index((f"ep-{i}", "summary"))


async def test_invalid_items_are_rejected_with_their_index(tmp_path: Path, emu: RunningEmulator) -> None:
    """A non-dict, a bad field, a value JSON cannot carry and a repeated id are rejected like
    manifest lines, each naming its index; the valid items run; the outcome is exit 1."""
    good = items(3, ["object_detection"])
    rows: list[Any] = [good[0], "just a string", {"id": 7, "capability": "object_detection", "url": "https://x/a.png"},
                       good[1], {**good[2], "meta": {"when": object()}}, dict(good[0]), good[2]]
    stream = pipeline.stream(rows, **call(tmp_path, emu))
    ids = sorted([line.id async for line in stream])
    assert ids == sorted(r["id"] for r in good)
    rejects = [json.loads(line) for line in (tmp_path / "r.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3, 5, 6]
    assert [r["reason"].split(":")[0] for r in rejects] == ["items[1]", "items[2]", "items[4]", "items[5]"]
    assert "not a dict" in rejects[0]["reason"] and "id must be a string" in rejects[1]["reason"]
    assert "not JSON" in rejects[2]["reason"] and "duplicate id" in rejects[3]["reason"]
    assert stream.result is not None and stream.result.exit_code == pipeline.ExitCode.PARTIAL


async def test_a_slow_consumer_holds_the_read(tmp_path: Path, emu: RunningEmulator,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """While the consumer does not take lines, the run stops taking items once the window is full:
    far fewer than all were read from the iterable; taking lines lets it go on to the end."""
    monkeypatch.setattr(streaming, "STREAM_BUFFER", 8)
    monkeypatch.setattr(reader, "READER_YIELD_EVERY", 8)  # the reader's batch: part of what it may hold
    total, pulled = 600, [0]

    def produce() -> Iterator[dict[str, Any]]:
        for row in items(total, ["object_detection"]):
            pulled[0] += 1
            yield row

    config = {**CONFIG, "queue_size": 4, "max_in_flight": 4}
    seen = []
    async with pipeline.stream(produce(), **call(tmp_path, emu, config=config)) as lines:
        seen.append((await lines.__anext__()).id)
        await until(lambda: lines.held, "the run ended: nothing held the read", guard=lambda: lines.result is None)
        held_at = pulled[0]
        # Held: no item is taken until the consumer takes a line (the source waits before each).
        assert lines.buffered >= 8 and held_at < total // 4, held_at
        seen += [line.id async for line in lines]
    assert pulled[0] == total and len(seen) == total
    assert lines.result is not None and lines.result.exit_code == 0


async def _first_lines(stream: pipeline.ResultStream, n: int) -> list[str]:
    got = []
    async for line in stream:
        got.append(line.id)
        if len(got) == n:
            break
    return got


async def test_breaking_out_stops_the_run_and_a_second_call_resumes(tmp_path: Path, emu: RunningEmulator) -> None:
    """Leaving `async with` after a break stops the run (lock released, exit 3: resumable); every
    line taken is in the file, and a second call writes the rest, nothing submitted twice."""
    rows = items(60, ["object_detection", "image_analyze"])
    state = tmp_path / "r.jsonl.state"
    async with pipeline.stream(rows, **call(tmp_path, emu)) as lines:
        taken = await _first_lines(lines, 3)
    assert live_holder(state) is None
    assert lines.result is not None and lines.result.exit_code == pipeline.ExitCode.INTERRUPTED
    assert "stopped reading" in (lines.result.reason or "")
    written = {r["id"] for r in read_results(tmp_path / "r.jsonl")}
    assert set(taken) <= written
    rest = [line.id async for line in pipeline.stream(rows, **call(tmp_path, emu))]
    assert not set(rest) & written
    assert_exactly_once(read_results(tmp_path / "r.jsonl"), [r["id"] for r in rows])
    assert emu.counters()["duplicate_submissions"] == 0


async def test_a_bare_break_stops_the_run_and_the_next_stream_waits_for_it(tmp_path: Path,
                                                                             emu: RunningEmulator) -> None:
    """`break` without closing: the dropped handle stops the run in the background, and a second
    stream on the same out waits for that stop (no StateLocked) and finishes the rest."""
    rows = items(40, ["object_detection"])
    taken = await _first_lines(pipeline.stream(rows, **call(tmp_path, emu)), 2)
    rest = pipeline.stream(rows, **call(tmp_path, emu))
    later = [line.id async for line in rest]
    assert rest.result is not None and rest.result.exit_code == 0
    assert not set(taken) & set(later)
    assert_exactly_once(read_results(tmp_path / "r.jsonl"), [r["id"] for r in rows])


async def test_an_exception_in_the_consumer_propagates_and_stops_the_run(tmp_path: Path,
                                                                          emu: RunningEmulator) -> None:
    """The consumer's own exception comes out of `async with` unchanged; the run has stopped
    (lock released) and the same call resumes to one line per item."""
    rows = items(30, ["object_detection"])
    with pytest.raises(LookupError, match="consumer failed"):
        async with pipeline.stream(rows, **call(tmp_path, emu)) as lines:
            async for _line in lines:
                raise LookupError("consumer failed")
    assert live_holder(tmp_path / "r.jsonl.state") is None
    assert lines.result is not None and lines.result.exit_code == pipeline.ExitCode.INTERRUPTED
    [_ async for _ in pipeline.stream(rows, **call(tmp_path, emu))]
    assert_exactly_once(read_results(tmp_path / "r.jsonl"), [r["id"] for r in rows])


async def test_an_exception_from_the_items_ends_the_iteration_with_it(tmp_path: Path, emu: RunningEmulator) -> None:
    """Items that raise part-way: the iteration raises that exception, the run has let go of the
    state dir, and a second call with working items resumes to one line per item."""
    rows = items(20, ["object_detection"])

    def broken() -> Iterator[dict[str, Any]]:
        yield from rows[:10]
        raise ConnectionResetError("the items' database went away")

    with pytest.raises(ConnectionResetError, match="went away"):
        async with pipeline.stream(broken(), **call(tmp_path, emu)) as lines:
            [_ async for _ in lines]
    assert live_holder(tmp_path / "r.jsonl.state") is None
    [_ async for _ in pipeline.stream(rows, **call(tmp_path, emu))]
    assert_exactly_once(read_results(tmp_path / "r.jsonl"), [r["id"] for r in rows])


async def test_cancelling_the_consumer_stops_the_run_before_the_cancel_returns(tmp_path: Path) -> None:
    """A consumer task cancelled while it waits for a line: by the time the cancellation has
    propagated the run has let go of the state dir; a second call (a fresh service) resumes."""
    rows = items(4, ["video_snapshot"])
    state = tmp_path / "r.jsonl.state"
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=PENDING)) as slow:
        consumer = asyncio.create_task(_first_lines(pipeline.stream(rows, **call(tmp_path, slow)), 4))
        await until(lambda: slow.counters()["tasks_created_total"] >= 4, "the consumer ended",
                    guard=lambda: not consumer.done())
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert live_holder(state) is None
        port = int(slow.url.rsplit(":", 1)[1])  # the same service: another is refused while tasks are recorded
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=FAST),
                              port=port) as fast:
        stream = pipeline.stream(rows, **call(tmp_path, fast))
        [_ async for _ in stream]
    assert stream.result is not None and stream.result.exit_code == 0
    assert_exactly_once(read_results(tmp_path / "r.jsonl"), [r["id"] for r in rows])


async def test_a_second_stream_on_a_live_out_raises_state_locked(tmp_path: Path) -> None:
    """While a stream whose consumer still holds it runs, another on the same out raises
    StateLocked (exit code 7) from its first iteration and sends nothing; the first one, closed,
    releases the state dir."""
    rows = items(3, ["video_snapshot"])
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=PENDING)) as slow:
        async with pipeline.stream(rows, **call(tmp_path, slow)) as first:
            waiting = asyncio.ensure_future(first.__anext__())
            await until(lambda: slow.counters()["tasks_created_total"] >= 3, "the first run ended",
                        guard=lambda: not waiting.done())
            with pytest.raises(pipeline.StateLocked) as caught:
                [_ async for _ in pipeline.stream(rows, **call(tmp_path, slow))]
            assert caught.value.exit_code == 7 and slow.counters()["tasks_created_total"] == 3
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        assert live_holder(tmp_path / "r.jsonl.state") is None


async def test_a_stream_marks_nothing_vanished(tmp_path: Path, emu: RunningEmulator) -> None:
    """A later stream with fewer items leaves the others current: a stream is never the whole catalog."""
    rows = items(4, ["object_detection"])
    [_ async for _ in pipeline.stream(rows, **call(tmp_path, emu))]
    second = pipeline.stream(rows[:1], **call(tmp_path, emu))
    [_ async for _ in second]
    assert second.result is not None
    catalog = second.result.summary["catalog"]
    assert catalog["vanished"] == 0 and catalog["decided_vanished"] is False and catalog["unchanged"] == 1
    assert len(done_keys(tmp_path / "r.jsonl.state")) == 4


async def test_a_stream_and_a_manifest_share_a_state_dir_only_with_append(tmp_path: Path,
                                                                          emu: RunningEmulator) -> None:
    """A stream on a manifest run's state dir is refused (exit 2, nothing sent) unless append=True,
    which adds its items; a manifest run on a stream's state dir is refused the same way."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(2, ["object_detection"]))
    assert (await pipeline.arun(manifest, **call(tmp_path, emu))).exit_code == 0
    extra = [{"id": "extra-1", "capability": "object_detection", "url": "https://example.com/e1.png"}]
    before = sent(emu)
    with pytest.raises(pipeline.UsageError, match="append=True") as caught:
        [_ async for _ in pipeline.stream(extra, **call(tmp_path, emu))]
    assert caught.value.exit_code == 2 and sent(emu) == before
    joined = [line.id async for line in pipeline.stream(extra, **call(tmp_path, emu, append=True))]
    assert joined == ["extra-1"]
    other = tmp_path / "other"
    other.mkdir()
    [_ async for _ in pipeline.stream(extra, **call(other, emu))]
    with pytest.raises(pipeline.UsageError, match=r"items from Python \(pipeline.stream\)"):
        await pipeline.arun(manifest, **call(other, emu))


async def test_bad_arguments_raise_at_the_call(tmp_path: Path) -> None:
    """Items that are not an iterable of dicts, or options a stream cannot take, raise
    ConfigError naming them when `stream` is called, before anything is created."""
    for items_, option, key in ((42, {}, "items"), ("a.jsonl", {}, "items"), ({"id": "a"}, {}, "items"),
                                ([], {"include": "*.jpg"}, "include"), ([], {"max_cots": 1}, "max_cots")):
        with pytest.raises(pipeline.ConfigError) as caught:
            pipeline.stream(items_, out=tmp_path / "r.jsonl", endpoint="http://127.0.0.1:9", api_key=KEY, **option)
        assert caught.value.key == key and caught.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []
