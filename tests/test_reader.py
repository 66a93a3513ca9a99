"""The read stage over a real manifest and checkpoint: each (item, analysis) goes its one way (done:
skipped; recorded: its handle to the poller under a token; `after` another: to the chain, on at
once if its parent's line is durable, FAILED unsent if that parent failed; else: a job), bad
lines to the rejects file, and the streams closed once nothing more can come."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from engine_support import drain, in_flight, parts
from state_support import write_done

from pipeline.config.load import Config
from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.errors import DependencyFailed
from pipeline.core.job import Job, job_key
from pipeline.core.outcome import Stop, StopReason
from pipeline.core.results import ItemStatus, ResultLine
from pipeline.engine.chaining import Chain
from pipeline.engine.item_source import ItemSource
from pipeline.engine.reader import Reader, ReaderStreams
from pipeline.engine.work import Ending, TaskHandle
from pipeline.state.resume import prepare
from pipeline.state.sink import outcome_of

SEG = {"name": "seg", "capability": "video_segmentation", "output": "oss://b/out/"}
SUM = {"name": "sum", "capability": "video_summarization", "after": "seg", "output": "oss://b/sum/"}
CHUNKS = [{"chunk_index": 0, "start_time": 0.0, "end_time": 4.0, "transcript": "hi", "snapshots": []}]


def image(item_id: str) -> dict[str, Any]:
    return {"id": item_id, "capability": "image_analyze", "url": f"https://example.com/{item_id}.jpg"}


def chained(item_id: str) -> dict[str, Any]:
    return {"id": item_id, "oss": f"oss://b/{item_id}.mp4", "analyses": [SEG, SUM]}


class Out:
    """The reader's streams, unbounded, and what arrived on them."""

    def __init__(self) -> None:
        self.receive: dict[str, MemoryObjectReceiveStream[Job]] = {}
        jobs, handles = {}, {}
        for name, cap in CAPABILITIES.items():
            jobs[name], self.receive[name] = anyio.create_memory_object_stream[Job](math.inf)
            if cap.is_async:
                handles[name], self.receive[f"{name}/handles"] = anyio.create_memory_object_stream[TaskHandle](
                    math.inf)
        ending_send, self.endings = anyio.create_memory_object_stream[Ending](math.inf)
        self.streams = ReaderStreams(jobs, handles, ending_send)

    def jobs(self) -> dict[str, list[Job]]:
        return {name: got for name, stream in self.receive.items() if "/" not in name and (got := drain(stream))}

    def handles(self) -> list[TaskHandle]:
        return [h for name, stream in self.receive.items() if name.endswith("/handles") for h in drain(stream)]

    def close(self) -> None:
        for stream in (*self.receive.values(), self.endings):
            stream.close()


def manifest(tmp_path: Path, *records: dict[str, Any] | str) -> str:
    path = tmp_path / "m.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def reader(tmp_path: Path, ckpt, manifest_path: str, p, **options: Any) -> tuple[Reader, Chain, io.StringIO]:
    results = tmp_path / "results.jsonl"
    chain = Chain(ckpt, results)
    rejects = io.StringIO()
    state = prepare(ckpt, out=results, retry_failed=False)
    return Reader(ItemSource(manifest_path, Config()), state, rejects, stats=p.stats, stops=p.stops,
                  inflight=p.inflight, chain=chain, ledger=p.ledger, clock=anyio.current_time, catalog=ckpt.catalog,
                  session=ckpt.begin_session(), **options), chain, rejects


def parent_line(item_id: str, status: ItemStatus, data: Any = None) -> ResultLine:
    error = {"code": "TaskFailed", "message": "no", "http_status": None} if status is ItemStatus.FAILED else None
    return ResultLine.finished(id=item_id, capability="video_segmentation", service_id="ops-video-segment-001",
                               status=status, finished_at=1.0, data=data, error=error, analysis="seg")


def mark_written(tmp_path: Path, ckpt, line: ResultLine) -> None:
    """Append `line` and mark it done with its offset, as the sink does."""
    results = tmp_path / "results.jsonl"
    with open(results, "ab") as f:
        at = f.tell()
        f.write(line.to_json().encode() + b"\n")
    ckpt.mark_done([outcome_of(line, at)], results.stat().st_size)


async def test_each_unit_goes_its_one_way(tmp_path, ckpt) -> None:
    """Done: skipped; recorded: a handle with a token (adopted by the ledger); new: a job; a bad
    line: rejected with its number; the streams closed at the end, counts and routes kept."""
    results = tmp_path / "results.jsonl"
    write_done(results, ckpt, ["done"])
    ckpt.record_submitted(job_key("rec", "image_analyze"), "image_analyze", "ops-image-analyze-ocr-001", "t-7",
                          attempts=2)
    p = parts(ckpt)
    path = manifest(tmp_path, image("done"), image("rec"), "{not json", image("new"))
    stage, chain, rejects = reader(tmp_path, ckpt, path, p)
    out = Out()
    with anyio.fail_after(10):
        await stage.run(out.streams)
    jobs, [handle] = out.jobs(), out.handles()
    assert {name: [j.id for j in js] for name, js in jobs.items()} == {"image_analyze": ["new"]}
    assert (handle.job.id, handle.task_id, handle.attempts) == ("rec", "t-7", 2)
    assert handle.token is not None and in_flight(p.stats) == {"image_analyze": 1}
    assert drain(out.endings) == []
    assert [json.loads(r)["line"] for r in rejects.getvalue().splitlines()] == [3]
    assert stage.complete and stage.rejected == 1 and stage.known == 2 and stage.items == 3
    assert dict(stage.routed) == {"unchanged (current line kept)": 1, "recorded tasks polled": 1,
                                  "queued to submit": 1}
    assert p.stats.caps["image_analyze"].skipped == 1 and p.stats.caps["image_analyze"].queued == 1
    chain.close()
    out.close()


async def test_a_child_of_a_parent_failed_earlier_ends_failed_without_a_token(tmp_path, ckpt) -> None:
    """A child whose parent failed in an earlier session ends here, FAILED with DependencyFailed,
    attempts 0 and no token: it is never sent."""
    mark_written(tmp_path, ckpt, parent_line("f1", ItemStatus.FAILED))
    p = parts(ckpt)
    stage, chain, _ = reader(tmp_path, ckpt, manifest(tmp_path, chained("f1")), p)
    out = Out()
    with anyio.fail_after(10):
        await stage.run(out.streams)
    [ending] = drain(out.endings)
    assert (ending.job.id, ending.job.analysis, ending.token, ending.attempts) == ("f1", "sum", None, 0)
    assert isinstance(ending.outcome, DependencyFailed)
    assert out.jobs() == {} and in_flight(p.stats) == {}
    chain.close()
    out.close()


async def test_a_child_of_a_parent_done_earlier_goes_on_with_its_chunks(tmp_path, ckpt) -> None:
    """A summarization whose segmentation succeeded in an earlier session is queued at once, with
    the segmentation's data as its chunks (read back from the results file)."""
    mark_written(tmp_path, ckpt, parent_line("s1", ItemStatus.SUCCESS, CHUNKS))
    p = parts(ckpt)
    stage, chain, _ = reader(tmp_path, ckpt, manifest(tmp_path, chained("s1")), p)
    out = Out()
    with anyio.fail_after(10):
        await stage.run(out.streams)
    assert {name: [(j.id, j.analysis, j.chunks) for j in js] for name, js in out.jobs().items()} == {
        "video_summarization": [("s1", "sum", CHUNKS)]}
    chain.close()
    out.close()


async def test_a_waiting_child_goes_on_when_its_parent_is_written_then_the_reader_ends(tmp_path, ckpt) -> None:
    """With its parent in flight, the child waits and the reader stays open after the manifest;
    once the parent's line is durable and handed to the chain, the child is queued and the reader
    closes its streams."""
    p = parts(ckpt)
    stage, chain, _ = reader(tmp_path, ckpt, manifest(tmp_path, chained("v1")), p)
    out = Out()
    async with anyio.create_task_group() as tg:
        tg.start_soon(stage.run, out.streams)
        with anyio.fail_after(10):
            seg = await out.receive["video_segmentation"].receive()
        await anyio.wait_all_tasks_blocked()
        assert stage.complete and chain.waiting == 1  # read to the end, still open for the child
        line = parent_line("v1", ItemStatus.SUCCESS, CHUNKS)
        mark_written(tmp_path, ckpt, line)  # the sink marks it done ...
        chain.parent_written(line)  # ... then the stage after it hands it on
    assert seg.analysis == "seg"
    assert [(j.analysis, j.chunks) for j in out.jobs()["video_summarization"]] == [("sum", CHUNKS)]
    chain.close()
    out.close()


async def test_a_stop_ends_the_reading(tmp_path, ckpt) -> None:
    """Once the run stops taking items, the reader takes no further line and closes its streams,
    the manifest not read to the end."""
    p = parts(ckpt)
    p.stops.request(Stop(StopReason.INTERRUPTED, "signal"))
    stage, chain, _ = reader(tmp_path, ckpt, manifest(tmp_path, image("a"), image("b")), p)
    out = Out()
    with anyio.fail_after(10):
        await stage.run(out.streams)
    assert out.jobs() == {} and not stage.complete
    chain.close()
    out.close()
