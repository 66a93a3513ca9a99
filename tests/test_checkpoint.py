"""The checkpoint store: durability, transitions, read-only views, the spend ledger, corrupt files."""

from __future__ import annotations

import dataclasses
import os
import sqlite3

import pytest
from state_support import CAP, SVC, done_ids, key, outcome, pending_ids

from pipeline.core.errors import StateError
from pipeline.core.results import ItemStatus
from pipeline.state.checkpoint import Checkpoint, JobState, Outcome

SUCCESS, FAILED = ItemStatus.SUCCESS, ItemStatus.FAILED

# ---- checkpoint ---------------------------------------------------------------------------


def test_recorded_task_id_survives_close_and_reopen(tmp_path):
    """A task id recorded as submitted is still there, as pending, after the store is closed and reopened."""
    state = tmp_path / "state"
    c = Checkpoint.open(state)
    c.record_submitted(key("job-1"), CAP, SVC, "task-abc", attempts=2)
    c.close()
    c = Checkpoint.open(state)
    try:
        pending = pending_ids(c)
        assert set(pending) == {"job-1"}
        task = pending["job-1"]
        assert (task.state, task.task_id, task.attempts) == (JobState.SUBMITTED, "task-abc", 2)
        assert task.state is JobState.SUBMITTED and task.key == key("job-1")
        assert task.submitted_at is not None
        assert done_ids(c) == []
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
    ckpt.record_submitted(key("a"), CAP, SVC, "t-a", attempts=1)
    ckpt.mark_done([outcome("a", task_id="t-a"), outcome("b")], 123)
    assert ckpt.sink_offset() == 123
    assert done_ids(ckpt) == ["a", "b"]
    assert pending_ids(ckpt) == {}
    ckpt.mark_done([outcome("c")], 456)
    assert ckpt.sink_offset() == 456


def test_record_submitted_again_accumulates_attempts(ckpt):
    """A resubmission replaces the task id and adds its attempts to the earlier ones."""
    ckpt.record_submitted(key("a"), CAP, SVC, "t-1", attempts=2)
    ckpt.record_submitted(key("a"), CAP, SVC, "t-2", attempts=3, resubmits=1)
    task = pending_ids(ckpt)["a"]
    assert (task.task_id, task.attempts, task.resubmits) == ("t-2", 5, 1)


def test_counts_and_outcomes(ckpt):
    """counts() groups by capability and state/status; outcomes() returns what mark_done stored."""
    ckpt.record_submitted(key("s1"), CAP, SVC, "t-s1", attempts=1)
    ckpt.record_submitted(key("v1"), "video_snapshot", "ops-video-snapshot-001", "t-v1", attempts=1)
    ckpt.mark_done([
        Outcome("ok1", CAP, SVC, SUCCESS, None, None, {"pages": 2}, 0.5, 1),
        Outcome("ok2", CAP, SVC, SUCCESS, None, None, None, None, 1),
        Outcome("bad", CAP, SVC, FAILED, None, "InvalidParameter", None, None, 3),
    ], 10)
    assert ckpt.counts() == {
        CAP: {JobState.SUBMITTED: 1, SUCCESS: 2, FAILED: 1},
        "video_snapshot": {JobState.SUBMITTED: 1},
    }
    by_key = {o.key: o for o in ckpt.outcomes()}
    assert set(by_key) == {"ok1", "ok2", "bad"}
    assert by_key["ok1"].usage == {"pages": 2} and by_key["ok1"].status is SUCCESS
    assert by_key["ok1"].elapsed == 0.5
    assert by_key["bad"].error_code == "InvalidParameter" and by_key["bad"].status is FAILED
    assert by_key["bad"].attempts == 3


def test_read_only_open_sees_the_data_and_refuses_writes(tmp_path):
    """A read-only checkpoint (for `status`) reads a live store but cannot write to it."""
    state = tmp_path / "state"
    writer = Checkpoint.open(state)
    writer.mark_done([outcome("a")], 7)
    reader = Checkpoint.open(state, read_only=True)
    try:
        assert done_ids(reader) == ["a"]
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
        outcome("timeout", FAILED, "PollTimeout", task_id="t-timeout"),
        outcome("task-failed", FAILED, "TaskFailed", task_id="t-failed"),
        outcome("ok", SUCCESS, task_id="t-ok"),
    ], 0)
    reopened = ckpt.reopen_failed()
    assert sorted(reopened) == [key("task-failed"), key("timeout")]
    pending = pending_ids(ckpt)
    assert set(pending) == {"timeout", "task-failed"}
    assert pending["timeout"].state is JobState.RETRY and pending["timeout"].task_id == "t-timeout"
    assert pending["task-failed"].state is JobState.RETRY and pending["task-failed"].task_id is None
    assert done_ids(ckpt) == ["ok"]


def test_reopen_failed_skips_the_given_codes(ckpt):
    """Failures whose code is in skip_codes stay done; the others are reopened."""
    ckpt.mark_done([
        outcome("invalid", FAILED, "InvalidParameter"),
        outcome("server", FAILED, "InternalError"),
        outcome("nocode", FAILED, None),
    ], 0)
    reopened = ckpt.reopen_failed(skip_codes=("InvalidParameter",))
    assert sorted(reopened) == [key("nocode"), key("server")]
    assert done_ids(ckpt) == ["invalid"]
    assert ckpt.keys_in_state(JobState.RETRY) == {key("nocode"), key("server")}


def test_reopen_failed_without_skip_codes_reopens_failures_with_no_code(ckpt):
    """With no skip codes, every FAILED item is reopened, including one with no error code."""
    ckpt.mark_done([outcome("nocode", FAILED, None), outcome("coded", FAILED, "InternalError")], 0)
    assert sorted(ckpt.reopen_failed()) == [key("coded"), key("nocode")]




# ---- damaged stores and the spend ledger --------------------------------------------------


@pytest.mark.parametrize("read_only", [False, True])
def test_a_corrupt_store_is_a_clear_state_error(tmp_path, read_only):
    """Random bytes as checkpoint.sqlite3 give a StateError saying the state dir is damaged, not a traceback."""
    state = tmp_path / "state"
    state.mkdir()
    (state / Checkpoint.DB_NAME).write_bytes(os.urandom(4096))
    with pytest.raises(StateError, match="not a readable checkpoint"):
        Checkpoint.open(state, read_only=read_only)


def test_an_empty_store_file_is_refused_read_only(tmp_path):
    """An empty checkpoint file is no run: the read-only open (status) says so instead of crashing later."""
    state = tmp_path / "state"
    state.mkdir()
    (state / Checkpoint.DB_NAME).write_bytes(b"")
    with pytest.raises(StateError):
        Checkpoint.open(state, read_only=True)


def test_reservations_never_pass_the_cap(ckpt):
    """reserve() refuses the reservation that would take settled + reserved past the cap."""
    assert ckpt.reserve("a", 0.4, 1.0)
    assert ckpt.reserve("b", 0.4, 1.0)
    assert not ckpt.reserve("c", 0.4, 1.0)
    assert ckpt.spend() == pytest.approx((0.0, 0.8))


def test_settling_replaces_the_reservation(ckpt):
    """Marking an item done with its cost replaces its reservation, freeing room under the cap."""
    ckpt.reserve("a", 0.5, 1.0)
    ckpt.mark_done([outcome("a")], 10, costs=[("a", 0.1)])
    assert ckpt.spend() == pytest.approx((0.1, 0.0))
    assert ckpt.reserve("b", 0.9, 1.0)
    assert not ckpt.reserve("c", 0.01, 1.0)


def test_a_batch_that_fails_to_be_marked_done_changes_nothing(ckpt):
    """mark_done is one transaction over the ledger, the jobs and the sink offset: when marking a
    batch fails half-way (a row the table refuses, after the costs were settled), the settlement,
    the keys and the offset stay as they were, and so do the spend totals kept in memory."""
    ckpt.reserve(key("a"), 0.5, None)
    ckpt.mark_done([outcome("z")], 5)
    assert ckpt.spend() == pytest.approx((0.0, 0.5))  # the totals are read now, then kept
    refused = dataclasses.replace(outcome("b"), capability=None)  # jobs.capability is NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        ckpt.mark_done([outcome("a"), refused], 99, costs=[(key("a"), 0.1)])
    assert (ckpt.sink_offset(), done_ids(ckpt), ckpt.reserved_of(key("a"))) == (5, ["z"], 0.5)
    assert ckpt.spend() == pytest.approx((0.0, 0.5))


def test_re_reserving_an_item_replaces_its_own_reservation(ckpt):
    """A resumed item's new reservation replaces its old one instead of counting twice."""
    assert ckpt.reserve("a", 0.6, 1.0)
    assert ckpt.reserve("a", 0.6, 1.0)
    assert ckpt.spend()[1] == pytest.approx(0.6)


def test_no_cap_still_records_reservations(ckpt):
    """Without a cap every reservation is granted and still recorded."""
    assert ckpt.reserve("a", 5.0, None)
    assert ckpt.spend() == pytest.approx((0.0, 5.0))


def test_last_stop_round_trips_and_tolerates_garbage(ckpt):
    """The last session's stop is kept as a record the outcome module reads back; a record it
    cannot read is no stop, not a crash."""
    from pipeline.core.outcome import Stop, StopReason

    stop = Stop(StopReason.SPEND_CAP, "cap reached")
    ckpt.set_last_stop(stop.to_record())
    assert Stop.from_record(ckpt.last_stop()) == stop
    ckpt.set_meta("last_stop", "{not json")
    assert ckpt.last_stop() is None and Stop.from_record({"reason": "bogus", "detail": "x"}) is None
