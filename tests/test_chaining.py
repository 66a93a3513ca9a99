"""`chaining.follow` (what a child becomes once its parent's line is known) and `Chain`
(children wait for their parents' lines; a parent already written decides its child at once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from state_support import encode

from pipeline.core.errors import DependencyFailed
from pipeline.core.job import Job
from pipeline.core.results import ItemStatus, ResultLine
from pipeline.engine.chaining import Chain, follow
from pipeline.state.checkpoint import Checkpoint
from pipeline.state.sink import outcome_of

CHUNKS = [{"chunk_index": 0, "start_time": 0.0, "end_time": 4.0, "transcript": "hello", "snapshots": []}]


def child(capability: str = "video_summarization", after: str = "seg", **extra: object) -> Job:
    return Job(id="v1", capability=capability, service_id="ops-x", source_kind="oss", source="oss://b/v1.mp4",
               analysis="summary", after=after, **extra)  # type: ignore[arg-type]


def parent(status: ItemStatus = ItemStatus.SUCCESS, capability: str = "video_segmentation",
           data: object = CHUNKS, code: str = "TaskFailed") -> ResultLine:
    error = {"code": code, "message": "boom", "http_status": None} if status is ItemStatus.FAILED else None
    return ResultLine.finished(id="v1", capability=capability, service_id="ops-video-segment-001", status=status,
                               finished_at=1.0, data=data if status is ItemStatus.SUCCESS else None,
                               error=error, analysis="seg")


@pytest.mark.parametrize(("child_job", "parent_line", "expected"), [
    # summarization after segmentation: the chunks are passed on
    (child(), parent(), "chunks"),
    # another pair: `after` only orders, the job goes on unchanged
    (child("video_snapshot"), parent(), "unchanged"),
    (child(), parent(capability="audio_asr", data=[{"text": "x"}]), "unchanged"),
    # a failed parent: never submitted
    (child(), parent(ItemStatus.FAILED), "DependencyFailed"),
    (child("video_snapshot"), parent(ItemStatus.FAILED, code="DependencyFailed"), "DependencyFailed"),
    # a segmentation that succeeded without a list of chunks
    (child(), parent(data={"not": "chunks"}), "DependencyFailed"),
])
def test_follow(child_job: Job, parent_line: ResultLine, expected: str) -> None:
    """A succeeded parent sends its child on (with its chunks where the capabilities chain); a
    failed one, or one without chunks to pass, makes the child DependencyFailed with attempts 0."""
    step = follow(child_job, parent_line)
    if expected == "DependencyFailed":
        assert isinstance(step, DependencyFailed)
        assert step.code == "DependencyFailed" and step.attempts == 0
        assert "'seg'" in step.message and "v1" in step.message
    elif expected == "chunks":
        assert isinstance(step, Job) and step.chunks == CHUNKS and step.key == child_job.key
    else:
        assert step == child_job


def test_follow_names_the_parents_error_code() -> None:
    """The child's DependencyFailed message names why its parent failed."""
    step = follow(child(), parent(ItemStatus.FAILED, code="InvalidParameter"))
    assert isinstance(step, DependencyFailed) and "InvalidParameter" in step.message


def _written(tmp_path: Path, ckpt: Checkpoint, line: ResultLine) -> Path:
    results = tmp_path / "results.jsonl"
    with open(results, "ab") as f:
        at = f.tell()
        f.write(encode(line))
    ckpt.mark_done([outcome_of(line, at)], results.stat().st_size)
    return results


async def test_a_child_waits_for_its_parent_then_goes_on(tmp_path: Path, ckpt: Checkpoint) -> None:
    """A child whose parent is not done waits; the parent's durable line puts it on the ready
    stream, which ends once the reader is done and nothing waits."""
    chain = Chain(ckpt, tmp_path / "results.jsonl")
    job = child()
    assert chain.parent_line(job) is None  # not written yet: it waits
    assert chain.waiting == 1
    line = parent()
    _written(tmp_path, ckpt, line)
    chain.parent_written(line)
    assert chain.waiting == 0
    chain.reader_done()  # nothing waits any more: the ready stream ends after what it holds
    got = [pair async for pair in chain.ready]
    chain.close()
    assert got == [(job, line)]


async def test_a_parent_written_before_reads_back_from_the_results_file(tmp_path: Path, ckpt: Checkpoint) -> None:
    """A parent already done is read back from the results file at its offset; the child does not wait."""
    other = ResultLine.finished(id="v0", capability="video_segmentation", service_id="s", status=ItemStatus.SUCCESS,
                                finished_at=1.0, data=[], analysis="seg")
    _written(tmp_path, ckpt, other)
    line = parent()
    results = _written(tmp_path, ckpt, line)
    chain = Chain(ckpt, results)
    assert chain.parent_line(child()) == line  # the second line of the file, by its offset
    assert chain.waiting == 0
    chain.close()


async def test_lines_of_other_keys_release_nothing(tmp_path: Path, ckpt: Checkpoint) -> None:
    """Only the parent's own (item, analysis) line releases a child."""
    chain = Chain(ckpt, tmp_path / "results.jsonl")
    chain.parent_line(child())
    chain.parent_written(ResultLine.finished(id="v2", capability="video_segmentation", service_id="s",
                                         status=ItemStatus.SUCCESS, finished_at=1.0, analysis="seg"))
    chain.parent_written(ResultLine.finished(id="v1", capability="video_snapshot", service_id="s",
                                         status=ItemStatus.SUCCESS, finished_at=1.0, analysis="snap"))
    assert chain.waiting == 1
    chain.close()
