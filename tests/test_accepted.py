"""Accepted tasks' ids are recorded by group commit: one transaction for the ids answered in the
same turn of the event loop, each durable before its `record` returns, whatever cancels it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from state_support import CAP, SVC, key, pending_ids

from pipeline.engine.accepted import AcceptedTasks
from pipeline.state.checkpoint import Accepted, Checkpoint


def _on_disk(state: Path) -> set[str]:
    """The ids recorded as submitted, read through a connection of its own (what a crash leaves)."""
    other = Checkpoint.open(state, read_only=True)
    try:
        return set(pending_ids(other))
    finally:
        other.close()


async def test_ids_answered_together_are_one_commit_and_durable_before_any_returns(tmp_path: Path) -> None:
    """Twenty records started in one turn of the loop make one transaction, and each caller finds
    every one of the twenty on disk when its record returns."""
    ckpt = Checkpoint.open(tmp_path / "s")
    accepted = AcceptedTasks(ckpt)
    seen: list[set[str]] = []

    async def one(i: int) -> None:
        await accepted.record(Accepted(key(f"a{i}"), CAP, SVC, f"t-{i}", 1))
        seen.append(_on_disk(tmp_path / "s"))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, i)
    assert accepted.commits == 1
    assert seen == [{f"a{i}" for i in range(20)}] * 20
    ckpt.close()


async def test_a_record_whose_caller_is_cancelled_is_still_committed(tmp_path: Path) -> None:
    """A stop (cancellation) arriving while the batch gathers or commits does not leave an id
    unrecorded: every record started is on disk when the cancelled scope has ended."""
    ckpt = Checkpoint.open(tmp_path / "s")
    accepted = AcceptedTasks(ckpt)
    started = 0

    async def one(i: int) -> None:
        nonlocal started
        started += 1
        await accepted.record(Accepted(key(f"c{i}"), CAP, SVC, f"t-{i}", 1))
        await anyio.sleep_forever()  # the next checkpoint after the record takes the cancellation

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(one, i)
        while started < 5:
            await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()  # while the leader's batch is still gathering
    assert _on_disk(tmp_path / "s") == {f"c{i}" for i in range(5)}
    ckpt.close()


async def test_a_failed_commit_fails_every_record_of_its_batch(tmp_path: Path) -> None:
    """When the commit fails, every caller of the batch gets the error (none is told its id is
    durable)."""
    ckpt = Checkpoint.open(tmp_path / "s")
    accepted = AcceptedTasks(ckpt)
    ckpt.close()  # a closed connection: the commit raises
    errors: list[BaseException] = []

    async def one(i: int) -> None:
        try:
            await accepted.record(Accepted(key(f"f{i}"), CAP, SVC, f"t-{i}", 1))
        except sqlite3.Error as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(one, i)
    assert len(errors) == 3 and accepted.commits == 0


@pytest.mark.parametrize("many", [1, 3])
def test_record_accepted_keeps_record_submitted_semantics(tmp_path: Path, many: int) -> None:
    """Recording again accumulates attempts and keeps the latest task id, in a batch as alone."""
    ckpt = Checkpoint.open(tmp_path / "s")
    ckpt.record_accepted([Accepted(key("r"), CAP, SVC, "t-1", 2)])
    ckpt.record_accepted([Accepted(key("r"), CAP, SVC, "t-2", 3, 1)] + [
        Accepted(key(f"o{i}"), CAP, SVC, f"o-{i}", 1) for i in range(many - 1)])
    task = pending_ids(ckpt)["r"]
    assert (task.task_id, task.attempts, task.resubmits) == ("t-2", 5, 1)
    assert len(pending_ids(ckpt)) == many
    ckpt.close()
