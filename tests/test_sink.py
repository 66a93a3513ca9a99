"""The JSONL sink: one line per result, in batches, durable before it is counted."""

from __future__ import annotations

import json
import math

import anyio
import anyio.lowlevel
import pytest
from anyio.streams.memory import MemoryObjectSendStream
from state_support import done_ids, file_ids, key, line_for, write_done

from pipeline.core.job import split_key
from pipeline.core.results import ResultLine
from pipeline.state.sink import Sink


async def feed(sink: Sink, lines: list[ResultLine], *, yield_every: int = 0,
               durable: MemoryObjectSendStream[ResultLine] | None = None) -> None:
    """Run the sink until the sender closes, sending `lines` (yielding to it every few lines)."""
    send, receive = anyio.create_memory_object_stream[ResultLine](100)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.run, receive, durable)
        async with send:
            for i, line in enumerate(lines):
                await send.send(line)
                if yield_every and i % yield_every == 0:
                    await anyio.lowlevel.checkpoint()


async def test_sink_writes_queued_lines_in_one_batch(out, ckpt, monkeypatch):
    """Lines sent before the writer runs go out in one batch: one line each, one mark_done for all."""
    batches: list[list[str]] = []
    real_mark_done = ckpt.mark_done

    def spy(outcomes, sink_offset, costs=()):
        outcomes = list(outcomes)
        batches.append([split_key(o.key)[0] for o in outcomes])
        real_mark_done(outcomes, sink_offset, costs)

    monkeypatch.setattr(ckpt, "mark_done", spy)
    sink = Sink(out, ckpt)
    send, receive = anyio.create_memory_object_stream[ResultLine](100)
    async with send:
        for i in range(5):
            await send.send(line_for(f"j{i}"))
    await sink.run(receive)
    assert file_ids(out) == [f"j{i}" for i in range(5)]
    assert batches == [[f"j{i}" for i in range(5)]]
    assert sink.written == 5
    assert ckpt.sink_offset() == out.stat().st_size
    assert done_ids(ckpt) == [f"j{i}" for i in range(5)]


async def test_sink_keeps_writing_as_lines_arrive_and_ends_when_the_senders_close(out, ckpt):
    """Lines sent while the writer runs are written too, each exactly once, in order; the sink then returns."""
    sink = Sink(out, ckpt)
    await feed(sink, [line_for(f"j{i}") for i in range(12)], yield_every=3)
    assert file_ids(out) == [f"j{i}" for i in range(12)]


async def test_a_line_goes_on_to_the_durable_stream_only_once_durable(out, ckpt):
    """Each line reaches the `durable` stream only once it is in the file and marked done in the
    checkpoint, in order; the sink closes the stream when it returns."""
    durable_send, durable = anyio.create_memory_object_stream[ResultLine](math.inf)
    seen: list[tuple[str, bool, bool]] = []

    async def watch() -> None:
        async with durable:
            async for line in durable:
                seen.append((line.id, line.id in file_ids(out), line.id in set(done_ids(ckpt))))

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await feed(Sink(out, ckpt), [line_for("j0"), line_for("j1"), line_for("late")], yield_every=1,
                   durable=durable_send)
    assert seen == [("j0", True, True), ("j1", True, True), ("late", True, True)]


async def test_sink_settles_each_items_cost(out, ckpt):
    """With a cost function, each written line replaces its spend reservation with its cost."""
    ckpt.reserve(key("a"), 1.0, None)
    await feed(Sink(out, ckpt, cost=lambda line: 0.25), [line_for("a")])
    assert ckpt.spend() == pytest.approx((0.25, 0.0))


async def test_sink_appends_after_existing_results(out, ckpt):
    """A resumed run's sink appends after the lines already in the file, and the offset follows."""
    write_done(out, ckpt, ["old"])
    await feed(Sink(out, ckpt), [line_for("new")])
    assert file_ids(out) == ["old", "new"]
    assert ckpt.sink_offset() == out.stat().st_size


async def test_sink_writes_unicode_as_utf8(out, ckpt):
    """Non-ASCII meta survives the round trip as UTF-8 text."""
    await feed(Sink(out, ckpt), [line_for("a", meta={"title": "café ☕"})])
    assert json.loads(out.read_text(encoding="utf-8"))["meta"] == {"title": "café ☕"}


async def test_a_failing_write_ends_the_sink_with_the_error(out, ckpt, monkeypatch):
    """A write that fails (a full disk) ends the sink with that error instead of losing lines silently."""
    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "mark_done", broken)
    with pytest.raises(BaseException) as info:
        await feed(Sink(out, ckpt), [line_for("a")])
    assert "No space left" in repr(info.value) or any("No space left" in repr(e)
                                                      for e in getattr(info.value, "exceptions", []))
