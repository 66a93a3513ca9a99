"""The finisher: an ending's one line (table), handed to the sink before its token is given back,
no line for abandoned work, and `Finisher.end` the only place a token is released."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import anyio
import pytest
from engine_support import answer, drain, in_flight, job

from pipeline.core.errors import DependencyFailed, PollTimeout, TaskFailed
from pipeline.core.results import ItemStatus, ResultLine
from pipeline.engine.finisher import Finisher, line_of
from pipeline.engine.inflight import InFlight
from pipeline.engine.work import Ending, TaskHandle
from pipeline.observe.report import RunStats

ENGINE = Path(__file__).resolve().parent.parent / "pipeline" / "engine"
TASK = TaskHandle(job("a", meta={"sku": 1}), "t-1", submitted_at=1_700_000_000.0, started=0.0, attempts=2, polls=3)


@pytest.mark.parametrize(("ending", "status", "data", "code", "task_id", "attempts", "polls"), [
    # a task's final answer: its data and usage, with the handle's counts
    (Ending.of_task(TASK, answer({"status": "SUCCESS", "data": {"text": "hi"}}, usage={"n": 1})),
     ItemStatus.SUCCESS, {"text": "hi"}, None, "t-1", 2, 3),
    (Ending.of_task(TASK, TaskFailed("TaskFailed", "unsupported")), ItemStatus.FAILED, None, "TaskFailed", "t-1", 2, 3),
    (Ending.of_task(TASK, PollTimeout("PollTimeout", "still PENDING")), ItemStatus.FAILED, None, "PollTimeout",
     "t-1", 2, 3),
    # a synchronous answer is the data itself
    (Ending(job("d", "object_detection"), None, answer({"objects": [1]}), attempts=1, submitted_at=5.0),
     ItemStatus.SUCCESS, {"objects": [1]}, None, None, 1, 0),
    # a chained analysis whose parent failed: never sent
    (Ending(job("c"), None, DependencyFailed(None, "parent failed", attempts=0), attempts=0), ItemStatus.FAILED,
     None, "DependencyFailed", None, 0, 0),
])
def test_the_line_of_an_ending(ending, status, data, code, task_id, attempts, polls) -> None:
    """Status, data, error code, task id and counts of the line come from the ending."""
    line = line_of(ending, finished_at=1_700_000_010.0, source_oss=None)
    assert (line.status, line.data, line.error_code, line.task_id) == (status, data, code, task_id)
    assert (line.attempts, line.polls) == (attempts, polls)
    assert (line.id, line.analysis, line.meta) == (ending.job.id, ending.job.analysis, ending.job.meta)
    assert (line.usage is not None) == (status is ItemStatus.SUCCESS and ending.task_id is not None)
    assert line.finished_at == "2023-11-14T22:13:30.000Z"


def test_an_abandoned_ending_has_no_line() -> None:
    """Abandoned work has no line to build: asking for one is a bug."""
    with pytest.raises(ValueError, match="abandoned"):
        line_of(Ending.dropped(job("a"), None), finished_at=0.0, source_oss=None)


async def finish(ckpt, endings: list[Ending], inflight: InFlight) -> list[ResultLine]:
    """Run a finisher over `endings` until the stream closes; the lines it sent."""
    send, receive = anyio.create_memory_object_stream[Ending](math.inf)
    line_send, lines = anyio.create_memory_object_stream[ResultLine](math.inf)
    with send:
        for ending in endings:
            send.send_nowait(ending)
    await Finisher(inflight=inflight, checkpoint=ckpt, clock=lambda: 1_700_000_010.0).run(receive, line_send)
    return drain(lines)


async def test_each_ending_becomes_its_line_and_gives_its_token_back(ckpt) -> None:
    """Lines in the order the endings came, none for abandoned work, every token given back, and the
    line stream closed once the endings stream is."""
    stats = RunStats()
    inflight = InFlight(5, stats)
    tokens = [await inflight.take("image_analyze") for _ in range(3)]
    endings = [Ending.of_task(dataclasses.replace(TASK, token=tokens[0]), answer({"status": "SUCCESS", "data": 1})),
               Ending.dropped(job("b"), tokens[1]),
               Ending(job("c"), tokens[2], TaskFailed("TaskFailed", "no"), attempts=1),
               Ending(job("d"), None, DependencyFailed(None, "parent failed", attempts=0), attempts=0)]
    assert in_flight(stats) == {"image_analyze": 3}
    lines = await finish(ckpt, endings, inflight)
    assert [(line.id, line.status) for line in lines] == [("a", ItemStatus.SUCCESS), ("c", ItemStatus.FAILED),
                                                          ("d", ItemStatus.FAILED)]
    assert in_flight(stats) == {} and not any(token.held for token in tokens)


async def test_the_token_comes_back_only_once_the_line_is_with_the_sink(ckpt) -> None:
    """While the sink's stream is full, the ending's token stays taken: the in-flight cap holds the
    work back until the sink takes the line."""
    stats = RunStats()
    inflight = InFlight(5, stats)
    token = await inflight.take("image_analyze")
    line_send, lines = anyio.create_memory_object_stream[ResultLine](0)  # no room: the put waits for a reader
    finisher = Finisher(inflight=inflight, checkpoint=ckpt)
    async with anyio.create_task_group() as tg, lines, line_send:
        tg.start_soon(finisher.end, Ending(job("a"), token, TaskFailed("TaskFailed", "no")), line_send)
        await anyio.wait_all_tasks_blocked()
        assert token.held and in_flight(stats) == {"image_analyze": 1}
        line = await lines.receive()
    assert line.id == "a" and not token.held and in_flight(stats) == {}


async def test_a_path_item_uploaded_earlier_names_its_object(ckpt) -> None:
    """A resumed task of a local file uploaded in an earlier session names its OSS object."""
    ckpt.record_upload("p", "bucket", "objects/abc.mp4", 3, "ab" * 32)
    path_job = dataclasses.replace(job("p", "video_snapshot"), source_kind="path", source="/media/p.mp4")
    [line] = await finish(ckpt, [Ending(path_job, None, TaskFailed("TaskFailed", "no"))], InFlight(1, RunStats()))
    assert line.source_oss == "oss://bucket/objects/abc.mp4"


def test_tokens_are_given_back_in_one_function_only() -> None:
    """In the whole engine, `InFlight.release` is called from `Finisher.end` and nowhere else."""
    callers = []
    for path in sorted(ENGINE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "release" and "inflight" in ast.unparse(node.func.value)):
                    callers.append(f"{path.stem}.{func.name}")
    assert callers == ["finisher.end"]
