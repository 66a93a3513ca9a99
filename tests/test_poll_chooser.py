"""Work-conserving polling on a fake clock: the pure chooser (`poll_chooser`), and its loop driven
against a real GroupPacer whose dispatcher sleeps through a clock that only moves."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest

from pipeline.core.lanes import Lane
from pipeline.engine.poll_chooser import next_candidate_at, pick_spare, plan_spare
from pipeline.pacing.memory import GroupPacer

FLOOR = 1.0


@dataclass(eq=False)
class Task:
    """A task as the chooser sees it."""

    name: str
    started: float
    last_look: float = -math.inf

    def __post_init__(self) -> None:
        if self.last_look == -math.inf:
            self.last_look = self.started


# ---- the pure chooser -----------------------------------------------------------------------


def test_spare_slots_go_to_the_oldest_overdue_task_first():
    """Among tasks that may be polled, the oldest (most overdue) wins, whatever the order given."""
    tasks = [Task("young", 90.0), Task("oldest", 60.0), Task("middle", 75.0)]
    assert pick_spare(tasks, 100.0, floor=FLOOR).name == "oldest"
    assert pick_spare(list(reversed(tasks)), 100.0, floor=FLOOR).name == "oldest"


def test_a_task_looked_at_within_the_floor_is_skipped_for_the_next_oldest():
    """The oldest task, polled less than a floor ago, gives its turn to the next oldest."""
    tasks = [Task("oldest", 60.0, last_look=99.5), Task("next", 70.0, last_look=95.0)]
    assert pick_spare(tasks, 100.0, floor=FLOOR).name == "next"
    assert pick_spare(tasks, 100.6, floor=FLOOR).name == "oldest"


def test_busy_budget_means_no_spare_poll():
    """While anything waits for the group's budget (`spare_at` None), nothing is polled and the
    loop looks again one recheck later."""
    step = plan_spare(100.0, None, [Task("old", 0.0)], floor=FLOOR, recheck=0.1)
    assert step.task is None and step.wake_at == pytest.approx(100.1)


def test_next_free_slot_still_to_come_is_waited_for():
    """A free slot later than now is waited for, not taken early."""
    step = plan_spare(100.0, 100.15, [Task("old", 0.0)], floor=FLOOR, recheck=0.1)
    assert step.task is None and step.wake_at == 100.15


def test_without_candidates_the_loop_sleeps_until_the_first_is_due():
    """With no candidate yet, the loop wakes when the first task becomes one (at most a floor away)."""
    tasks = [Task("a", 99.0, last_look=99.7)]
    assert next_candidate_at(tasks, floor=FLOOR) == pytest.approx(100.7)
    step = plan_spare(100.0, 100.0, tasks, floor=FLOOR, recheck=0.1)
    assert step.task is None and step.wake_at == pytest.approx(100.7)
    assert plan_spare(100.0, 100.0, [], floor=FLOOR, recheck=0.1).wake_at == pytest.approx(101.0)


# ---- the loop against a real pacer on a fake clock ------------------------------------------


class FakeTime:
    """A clock, and a sleep (the dispatcher's) that only moves it."""

    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        for _ in range(3):  # let the waiter just granted run (and read the clock) first
            await anyio.lowlevel.checkpoint()
        self.now += seconds


async def drive(*, submits: int, scheduled_polls: int, until: float) -> tuple[list[tuple[str, float]], list[Task]]:
    """A 5-QPS group with 8 submitters (`submits` in all), one scheduled poller (`scheduled_polls`
    polls back to back) and the spare-slot loop over three tasks; returns every grant (who, when)."""
    time = FakeTime()
    pacer = GroupPacer("g", 5.0, clock=time.clock, sleep=time.sleep)
    tasks = [Task("b", 80.0), Task("a", 70.0), Task("c", 90.0)]
    grants: list[tuple[str, float]] = []
    left = [submits]

    async def submitter() -> None:
        while left[0] > 0:
            left[0] -= 1
            await pacer.acquire(Lane.SUBMIT)
            grants.append(("submit", time.now))

    async def scheduled() -> None:
        for _ in range(scheduled_polls):
            await pacer.acquire(Lane.POLL)
            grants.append(("scheduled", time.now))

    async def spare_loop() -> None:
        while time.now < until:
            step = plan_spare(time.now, pacer.spare_at(), tasks, floor=FLOOR, recheck=pacer.interval)
            if step.task is None:
                if pacer.spare_at() is not None:  # nothing waits: the dispatcher is idle, move time here
                    time.now = max(time.now, step.wake_at)
                await anyio.lowlevel.checkpoint()
                continue
            task = step.task
            assert isinstance(task, Task)
            await pacer.acquire(Lane.POLL)
            grants.append((task.name, time.now))
            task.last_look = time.now  # the answer comes back at once

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pacer.run)
            async with anyio.create_task_group() as work:
                for _ in range(8):
                    work.start_soon(submitter)
                work.start_soon(scheduled)
                work.start_soon(spare_loop)
            tg.cancel_scope.cancel()
    return grants, tasks


async def test_with_submits_waiting_polls_stay_within_their_share():
    """While submits wait, no spare poll is made and scheduled polls get at most their quarter;
    once the submits are done, spare slots are spent on polls."""
    grants, _ = await drive(submits=40, scheduled_polls=100, until=130.0)
    last_submit = max(t for who, t in grants if who == "submit")
    during = [who for who, t in grants if t <= last_submit]
    assert during.count("submit") == 40
    assert all(who in ("submit", "scheduled") for who in during), "a spare poll took a slot a submit waited for"
    assert during.count("scheduled") <= 0.25 * len(during) + 1
    assert any(who in ("a", "b", "c") for who, t in grants if t > last_submit)


async def test_spare_slots_poll_oldest_first_and_never_faster_than_the_floor():
    """With the budget idle, the oldest task is polled first, every task is polled about once per
    floor (the slots are spent) and never twice within it."""
    grants, tasks = await drive(submits=5, scheduled_polls=0, until=110.0)
    spare = [(who, t) for who, t in grants if who in ("a", "b", "c")]
    assert spare[0][0] == "a"
    for task in tasks:
        times = [t for who, t in spare if who == task.name]
        assert len(times) >= 8, f"{task.name} polled {len(times)} times in about 9 idle seconds"
        assert min(b - a for a, b in itertools.pairwise(times)) >= FLOOR - 1e-9
