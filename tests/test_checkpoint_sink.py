"""Checkpoint store and JSONL sink: durability, reconcile after crashes, retry-failed, the result line."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pipeline import sink as sink_module
from pipeline.checkpoint import Checkpoint, Outcome
from pipeline.sink import ResultsMissing, Sink, drop_lines, reconcile, result_line

CAP = "image_analyze"
SVC = "ops-image-analyze-ocr-001"

RESULT_KEYS = {"id", "capability", "service_id", "status", "task_id", "data", "usage", "error",
               "attempts", "polls", "submitted_at", "finished_at", "elapsed_s", "meta"}


def line_for(job_id: str, status: str = "SUCCESS", code: str | None = None, **extra: Any) -> dict[str, Any]:
    error = {"code": code, "message": "boom", "http_status": 400} if status == "FAILED" else None
    line = result_line(job_id=job_id, capability=CAP, service_id=SVC, status=status,
                       task_id=extra.pop("task_id", None), data={"ok": True} if status == "SUCCESS" else None,
                       usage=extra.pop("usage", None), error=error, attempts=1, polls=0,
                       submitted_at=1_700_000_000.0, finished_at=1_700_000_001.5, meta=extra.pop("meta", None))
    return line


def encode(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def outcome(job_id: str, status: str = "SUCCESS", code: str | None = None, task_id: str | None = None) -> Outcome:
    return Outcome(job_id, CAP, SVC, status, task_id, code, None, None, 1)


def file_ids(path: Path) -> list[str]:
    return [json.loads(raw)["id"] for raw in path.read_bytes().splitlines()]


@pytest.fixture
def ckpt(tmp_path: Path):
    c = Checkpoint.open(tmp_path / "state")
    yield c
    c.close()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "results.jsonl"


def write_done(path: Path, ckpt: Checkpoint, ids: list[str]) -> None:
    """Append lines for `ids` and mark them done, the way the sink does."""
    with open(path, "ab") as f:
        for i in ids:
            f.write(encode(line_for(i)))
    ckpt.mark_done([outcome(i) for i in ids], path.stat().st_size)


# ---- checkpoint ---------------------------------------------------------------------------


def test_recorded_task_id_survives_close_and_reopen(tmp_path):
    """A task id recorded as submitted is still there, as pending, after the store is closed and reopened."""
    state = tmp_path / "state"
    c = Checkpoint.open(state)
    c.record_submitted("job-1", CAP, SVC, "task-abc", attempts=2)
    c.close()
    c = Checkpoint.open(state)
    try:
        pending = c.pending()
        assert set(pending) == {"job-1"}
        task = pending["job-1"]
        assert (task.state, task.task_id, task.attempts) == ("submitted", "task-abc", 2)
        assert task.submitted_at is not None
        assert list(c.iter_done_ids()) == []
    finally:
        c.close()


def test_open_creates_the_state_dir(tmp_path):
    """Checkpoint.open creates a missing state dir and its database file."""
    state = tmp_path / "a" / "b"
    c = Checkpoint.open(state)
    c.close()
    assert (state / Checkpoint.DB_NAME).is_file()


def test_close_twice_is_safe(ckpt):
    """Closing a checkpoint a second time does nothing."""
    ckpt.close()
    ckpt.close()


def test_mark_done_moves_the_offset_and_the_state(ckpt):
    """mark_done marks the batch done and records the results-file offset in the same step."""
    assert ckpt.sink_offset() == 0
    ckpt.record_submitted("a", CAP, SVC, "t-a", attempts=1)
    ckpt.mark_done([outcome("a", task_id="t-a"), outcome("b")], 123)
    assert ckpt.sink_offset() == 123
    assert sorted(ckpt.iter_done_ids()) == ["a", "b"]
    assert ckpt.pending() == {}
    ckpt.mark_done([outcome("c")], 456)
    assert ckpt.sink_offset() == 456


def test_record_submitted_again_accumulates_attempts(ckpt):
    """A resubmission replaces the task id and adds its attempts to the earlier ones."""
    ckpt.record_submitted("a", CAP, SVC, "t-1", attempts=2)
    ckpt.record_submitted("a", CAP, SVC, "t-2", attempts=3, resubmits=1)
    task = ckpt.pending()["a"]
    assert (task.task_id, task.attempts, task.resubmits) == ("t-2", 5, 1)


def test_counts_and_outcomes(ckpt):
    """counts() groups by capability and state/status; outcomes() returns what mark_done stored."""
    ckpt.record_submitted("s1", CAP, SVC, "t-s1", attempts=1)
    ckpt.record_submitted("v1", "video_snapshot", "ops-video-snapshot-001", "t-v1", attempts=1)
    ckpt.mark_done([
        Outcome("ok1", CAP, SVC, "SUCCESS", None, None, {"pages": 2}, 0.5, 1),
        Outcome("ok2", CAP, SVC, "SUCCESS", None, None, None, None, 1),
        Outcome("bad", CAP, SVC, "FAILED", None, "InvalidParameter", None, None, 3),
    ], 10)
    assert ckpt.counts() == {
        CAP: {"submitted": 1, "SUCCESS": 2, "FAILED": 1},
        "video_snapshot": {"submitted": 1},
    }
    by_id = {o.id: o for o in ckpt.outcomes()}
    assert set(by_id) == {"ok1", "ok2", "bad"}
    assert by_id["ok1"].usage == {"pages": 2}
    assert by_id["ok1"].elapsed == 0.5
    assert by_id["bad"].error_code == "InvalidParameter"
    assert by_id["bad"].attempts == 3


def test_read_only_open_sees_the_data_and_refuses_writes(tmp_path):
    """A read-only checkpoint (for `status`) reads a live store but cannot write to it."""
    state = tmp_path / "state"
    writer = Checkpoint.open(state)
    writer.mark_done([outcome("a")], 7)
    reader = Checkpoint.open(state, read_only=True)
    try:
        assert list(reader.iter_done_ids()) == ["a"]
        assert reader.sink_offset() == 7
        with pytest.raises(sqlite3.OperationalError):
            reader.set_meta("sink_offset", "0")
    finally:
        reader.close()
        writer.close()


def test_read_only_open_of_a_missing_store_says_so(tmp_path):
    """Opening a non-existent state dir read-only raises FileNotFoundError and creates nothing."""
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Checkpoint.open(tmp_path / "nothing", read_only=True)
    assert not (tmp_path / "nothing").exists()


def test_reopen_failed_keeps_task_id_only_for_poll_timeout(ckpt):
    """reopen_failed puts FAILED items back in play; only a PollTimeout keeps its task id (to be polled)."""
    ckpt.mark_done([
        outcome("timeout", "FAILED", "PollTimeout", task_id="t-timeout"),
        outcome("task-failed", "FAILED", "TaskFailed", task_id="t-failed"),
        outcome("ok", "SUCCESS", task_id="t-ok"),
    ], 0)
    reopened = ckpt.reopen_failed()
    assert sorted(reopened) == ["task-failed", "timeout"]
    pending = ckpt.pending()
    assert set(pending) == {"timeout", "task-failed"}
    assert pending["timeout"].state == "retry" and pending["timeout"].task_id == "t-timeout"
    assert pending["task-failed"].state == "retry" and pending["task-failed"].task_id is None
    assert list(ckpt.iter_done_ids()) == ["ok"]


def test_reopen_failed_skips_the_given_codes(ckpt):
    """Failures whose code is in skip_codes stay done; the others are reopened."""
    ckpt.mark_done([
        outcome("invalid", "FAILED", "InvalidParameter"),
        outcome("server", "FAILED", "InternalError"),
        outcome("nocode", "FAILED", None),
    ], 0)
    reopened = ckpt.reopen_failed(skip_codes=("InvalidParameter",))
    assert sorted(reopened) == ["nocode", "server"]
    assert list(ckpt.iter_done_ids()) == ["invalid"]
    assert ckpt.ids_in_state("retry") == {"nocode", "server"}


def test_reopen_failed_without_skip_codes_reopens_failures_with_no_code(ckpt):
    """With no skip codes, every FAILED item is reopened, including one with no error code."""
    ckpt.mark_done([outcome("nocode", "FAILED", None), outcome("coded", "FAILED", "InternalError")], 0)
    assert sorted(ckpt.reopen_failed()) == ["coded", "nocode"]


# ---- reconcile ----------------------------------------------------------------------------


def test_reconcile_with_nothing_to_do(out, ckpt):
    """A missing file with offset 0, or a file exactly at the offset, needs no repair."""
    assert reconcile(out, ckpt) == 0
    write_done(out, ckpt, ["a", "b"])
    before = out.read_bytes()
    assert reconcile(out, ckpt) == 0
    assert out.read_bytes() == before


def test_reconcile_marks_extra_complete_lines_done_without_duplicating(out, ckpt):
    """Complete lines past the recorded offset (crash before mark_done) are marked done, not rewritten."""
    write_done(out, ckpt, ["a", "b"])
    recorded = ckpt.sink_offset()
    ckpt.record_submitted("c", CAP, SVC, "t-c", attempts=1)
    with open(out, "ab") as f:  # the crash came between the file write and mark_done
        f.write(encode(line_for("c", task_id="t-c")) + encode(line_for("d", "FAILED", "TaskFailed")))
    size = out.stat().st_size
    assert size > recorded

    assert reconcile(out, ckpt) == 2
    assert sorted(ckpt.iter_done_ids()) == ["a", "b", "c", "d"]
    assert ckpt.pending() == {}
    assert ckpt.sink_offset() == size
    assert file_ids(out) == ["a", "b", "c", "d"]
    assert {o.id: o.error_code for o in ckpt.outcomes()}["d"] == "TaskFailed"
    assert reconcile(out, ckpt) == 0  # idempotent


def test_reconcile_cuts_a_torn_last_line(out, ckpt):
    """A torn last line (no trailing newline) is cut, so the next append starts on a fresh line."""
    write_done(out, ckpt, ["a"])
    with open(out, "ab") as f:
        f.write(encode(line_for("b")))  # complete, not yet marked done
        f.write(encode(line_for("c"))[:25])  # kill -9 mid-write
    assert reconcile(out, ckpt) == 1
    assert out.read_bytes().endswith(b"\n")
    assert ckpt.sink_offset() == out.stat().st_size
    assert sorted(ckpt.iter_done_ids()) == ["a", "b"]

    with open(out, "ab") as f:  # what the next run's sink does
        f.write(encode(line_for("c")))
    assert file_ids(out) == ["a", "b", "c"]  # every line parses: no glued half line


def test_reconcile_cuts_a_torn_line_right_after_the_offset(out, ckpt):
    """When the only bytes past the offset are a torn line, the file is cut back to the offset."""
    write_done(out, ckpt, ["a"])
    recorded = ckpt.sink_offset()
    with open(out, "ab") as f:
        f.write(b'{"id":"b","capa')
    assert reconcile(out, ckpt) == 0
    assert out.stat().st_size == recorded
    assert list(ckpt.iter_done_ids()) == ["a"]


def test_reconcile_trusts_a_file_shorter_than_the_offset(out, ckpt):
    """A file shorter than the recorded offset wins: its lines are done, the missing done items go back to pending."""
    write_done(out, ckpt, ["a", "b"])
    ckpt.record_submitted("c", CAP, SVC, "t-c", attempts=1)
    ckpt.mark_done([outcome("c", task_id="t-c"), outcome("d")], ckpt.sink_offset() + 10_000)
    with open(out, "ab") as f:
        f.write(b'{"id":"tor')  # and a torn tail, to be cut
    assert reconcile(out, ckpt) == 2
    assert file_ids(out) == ["a", "b"]
    assert ckpt.sink_offset() == out.stat().st_size
    assert sorted(ckpt.iter_done_ids()) == ["a", "b"]
    pending = ckpt.pending()
    assert set(pending) == {"c", "d"}
    assert (pending["c"].state, pending["c"].task_id) == ("submitted", "t-c")  # polled, not resubmitted
    assert (pending["d"].state, pending["d"].task_id) == ("retry", None)


def test_reconcile_missing_results_file_with_an_offset_raises(out, ckpt):
    """A missing results file when the store records written bytes raises ResultsMissing naming the file."""
    ckpt.mark_done([outcome("a")], 100)
    with pytest.raises(ResultsMissing, match="results.jsonl"):
        reconcile(out, ckpt)


# ---- drop_lines ---------------------------------------------------------------------------


def test_drop_lines_removes_exactly_the_given_ids(out, ckpt):
    """drop_lines removes the lines of the given ids, keeps every other line byte for byte, and moves the offset."""
    write_done(out, ckpt, ["a", "b", "c", "d"])
    kept = [raw for raw in out.read_bytes().splitlines(keepends=True) if json.loads(raw)["id"] in ("a", "c")]
    assert drop_lines(out, {"b", "d", "not-there"}, ckpt) == 2
    assert out.read_bytes() == b"".join(kept)
    assert ckpt.sink_offset() == out.stat().st_size
    assert not out.with_name(out.name + ".rewrite").exists()
    assert reconcile(out, ckpt) == 0  # the new offset agrees with the file


def test_drop_lines_with_nothing_to_drop(out, ckpt):
    """An empty id set, or a missing file, changes nothing."""
    assert drop_lines(out, {"a"}, ckpt) == 0
    write_done(out, ckpt, ["a"])
    before = out.read_bytes()
    assert drop_lines(out, set(), ckpt) == 0
    assert out.read_bytes() == before


def test_drop_lines_is_atomic(out, ckpt, monkeypatch):
    """If the rewrite fails before the rename, the results file and the offset are untouched."""
    write_done(out, ckpt, ["a", "b"])
    before, offset = out.read_bytes(), ckpt.sink_offset()

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(sink_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        drop_lines(out, {"a"}, ckpt)
    assert out.read_bytes() == before
    assert ckpt.sink_offset() == offset


def test_retry_failed_round_trip(out, ckpt):
    """reopen_failed then drop_lines leaves only the successes in the file, and reconcile keeps it so."""
    with open(out, "ab") as f:
        for ln in (line_for("ok"), line_for("bad", "FAILED", "TaskFailed"), line_for("inv", "FAILED", "InvalidParameter")):
            f.write(encode(ln))
    assert reconcile(out, ckpt) == 3
    reopened = ckpt.reopen_failed(skip_codes=("InvalidParameter",))
    assert reopened == ["bad"]
    assert drop_lines(out, ckpt.ids_in_state("retry"), ckpt) == 1
    assert file_ids(out) == ["ok", "inv"]
    assert reconcile(out, ckpt) == 0
    assert set(ckpt.pending()) == {"bad"}


# ---- the Sink -----------------------------------------------------------------------------


async def test_sink_writes_one_line_per_put_in_batches(out, ckpt, monkeypatch):
    """Lines put before the writer runs go out in one batch: one line each, one mark_done for all."""
    batches: list[list[str]] = []
    real_mark_done = ckpt.mark_done

    def spy(outcomes, sink_offset):
        outcomes = list(outcomes)
        batches.append([o.id for o in outcomes])
        real_mark_done(outcomes, sink_offset)

    monkeypatch.setattr(ckpt, "mark_done", spy)
    sink = Sink(out, ckpt)
    sink.start()
    for i in range(5):
        sink.put(line_for(f"j{i}"))
    await sink.close()
    assert file_ids(out) == [f"j{i}" for i in range(5)]
    assert batches == [[f"j{i}" for i in range(5)]]
    assert sink.written == 5
    assert ckpt.sink_offset() == out.stat().st_size
    assert sorted(ckpt.iter_done_ids()) == [f"j{i}" for i in range(5)]


async def test_sink_keeps_writing_as_lines_arrive(out, ckpt):
    """Lines put while the writer runs are written too, each exactly once, in order."""
    sink = Sink(out, ckpt)
    sink.start()
    for i in range(12):
        sink.put(line_for(f"j{i}"))
        if i % 3 == 0:
            await asyncio.sleep(0)
    await sink.close()
    assert file_ids(out) == [f"j{i}" for i in range(12)]


async def test_on_written_runs_after_the_line_is_durable(out, ckpt):
    """on_written sees each line only once it is in the file and marked done in the checkpoint."""
    seen: list[tuple[str, bool, bool]] = []

    def on_written(line: dict[str, Any]) -> None:
        in_file = line["id"] in file_ids(out)
        done = line["id"] in set(ckpt.iter_done_ids())
        seen.append((line["id"], in_file, done))

    sink = Sink(out, ckpt, on_written=on_written)
    sink.start()
    for i in range(3):
        sink.put(line_for(f"j{i}"))
    await asyncio.sleep(0)
    sink.put(line_for("late"))
    await sink.close()
    assert seen == [("j0", True, True), ("j1", True, True), ("j2", True, True), ("late", True, True)]


async def test_sink_close_twice_is_safe_and_put_after_close_fails(out, ckpt):
    """close() a second time is a no-op; put() after close raises instead of losing the line."""
    sink = Sink(out, ckpt)
    sink.start()
    sink.put(line_for("a"))
    await sink.close()
    await sink.close()
    assert file_ids(out) == ["a"]
    with pytest.raises(RuntimeError, match="closed"):
        sink.put(line_for("b"))


async def test_sink_close_without_start_writes_what_was_queued(out, ckpt):
    """A sink that was never started still writes its queued lines on close."""
    sink = Sink(out, ckpt)
    sink.put(line_for("a"))
    sink.put(line_for("b"))
    await sink.close()
    assert file_ids(out) == ["a", "b"]
    assert ckpt.sink_offset() == out.stat().st_size


async def test_sink_appends_after_existing_results(out, ckpt):
    """A resumed run's sink appends after the lines already in the file, and the offset follows."""
    write_done(out, ckpt, ["old"])
    sink = Sink(out, ckpt)
    sink.start()
    sink.put(line_for("new"))
    await sink.close()
    assert file_ids(out) == ["old", "new"]
    assert ckpt.sink_offset() == out.stat().st_size


async def test_sink_writes_unicode_as_utf8(out, ckpt):
    """Non-ASCII meta survives the round trip as UTF-8 text."""
    sink = Sink(out, ckpt)
    sink.start()
    sink.put(line_for("a", meta={"title": "café ☕"}))
    await sink.close()
    assert json.loads(out.read_text(encoding="utf-8"))["meta"] == {"title": "café ☕"}


# ---- the result line ----------------------------------------------------------------------


def test_result_line_has_exactly_the_design_keys():
    """result_line produces DESIGN.md's keys, no more and no fewer."""
    assert set(line_for("a")) == RESULT_KEYS
    assert set(line_for("b", "FAILED", "TaskFailed")) == RESULT_KEYS


def test_result_line_values():
    """Timestamps are ISO-8601 UTC with a Z, elapsed_s is finished minus submitted, meta is copied untouched."""
    meta = {"source": "catalog", "n": [1, 2]}
    line = result_line(job_id="x", capability=CAP, service_id=SVC, status="FAILED", task_id="t",
                       data=None, usage={"pages": 1}, error={"code": "TaskFailed", "message": "m", "http_status": 200},
                       attempts=2, polls=3, submitted_at=0.0, finished_at=2.25, meta=meta)
    assert line["submitted_at"] == "1970-01-01T00:00:00.000Z"
    assert line["finished_at"] == "1970-01-01T00:00:02.250Z"
    assert line["elapsed_s"] == 2.25
    assert line["meta"] is meta
    assert (line["attempts"], line["polls"], line["task_id"]) == (2, 3, "t")
    assert set(line["error"]) == {"code", "message", "http_status"}


def test_result_line_without_submit_time():
    """A sync item with no submit time has null submitted_at and elapsed_s."""
    line = result_line(job_id="x", capability=CAP, service_id=SVC, status="SUCCESS", task_id=None,
                       data={}, usage=None, error=None, attempts=1, polls=0,
                       submitted_at=None, finished_at=5.0, meta=None)
    assert line["submitted_at"] is None and line["elapsed_s"] is None
    assert line["finished_at"] == "1970-01-01T00:00:05.000Z"
