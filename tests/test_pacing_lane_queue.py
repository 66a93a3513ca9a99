"""The lanes both pacer backends share (`LaneQueue`): who gets the next slot, as a table of waiters
pushed and the order they come out in. No clock: the queue has none, the backends bring theirs."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

from pipeline.core.lanes import Lane
from pipeline.pacing.lane_queue import LaneQueue

S, P = Lane.SUBMIT, Lane.POLL
W31 = {S: 3.0, P: 1.0}
W11 = {S: 1.0, P: 1.0}


@dataclass(eq=False)
class Waiter:
    """A waiter as the queue sees it, with a name to read the order by."""

    name: str
    abandoned: bool = False


def push_all(queue: LaneQueue[Waiter], lanes: str) -> list[Waiter]:
    """Push one waiter per letter of `lanes` ("S" or "P"), named by lane and rank: S0, S1, P0..."""
    waiters = []
    for letter in lanes:
        lane = S if letter == "S" else P
        waiter = Waiter(f"{letter}{sum(w.name[0] == letter for w in waiters)}")
        queue.push(lane, waiter)
        waiters.append(waiter)
    return waiters


def drain(queue: LaneQueue[Waiter], count: int | None = None) -> str:
    """The lanes of the next `count` waiters popped (all of them by default), as letters."""
    out = []
    while count is None or len(out) < count:
        waiter = queue.pop()
        if waiter is None:
            break
        out.append(waiter.name[0])
    return "".join(out)


@pytest.mark.parametrize(("weights", "pushed", "expected"), [
    (W31, "SSSSSSSSPPPP", "SSSPSSSPSSPP"),  # both busy: 3 submits per poll, submits first on a tie
    (W31, "PPPPSSSSSSSS", "SSSPSSSPSSPP"),  # the order they queued in does not matter between lanes
    (W11, "SSSSPPPP", "SPSPSPSP"),          # equal weights alternate
    ({S: 1.0, P: 3.0}, "SSSSPPPP", "PPSPPSSS"),  # the weights are the queue's, not fixed
    (W31, "PPPP", "PPPP"),                  # a lone lane gets every slot
    (None, "SSSSPP", "SSSPSP"),             # no weights: 3 submits : 1 poll
])
def test_pop_order_follows_the_weights(weights: dict[Lane, float] | None, pushed: str, expected: str) -> None:
    """With both lanes waiting, slots go by weighted fair queuing; FIFO within a lane."""
    queue: LaneQueue[Waiter] = LaneQueue(weights)
    waiters = push_all(queue, pushed)
    order = []
    while (waiter := queue.pop()) is not None:
        order.append(waiter)
    assert "".join(w.name[0] for w in order) == expected
    for lane in "SP":  # FIFO within each lane
        names = [w.name for w in order if w.name[0] == lane]
        assert names == [w.name for w in waiters if w.name[0] == lane]


def test_a_lane_that_idled_gets_no_credit_for_it() -> None:
    """A lane that was idle while the other was served joins at the current virtual time: the
    busy lane keeps its share instead of the newcomer taking the next slots in a row."""
    queue: LaneQueue[Waiter] = LaneQueue(W31)
    push_all(queue, "S" * 30)
    assert drain(queue, 24) == "S" * 24  # the poll lane idles meanwhile
    push_all(queue, "PPPP")
    first = drain(queue, 8)
    assert first.count("P") == 2 and "PP" not in first, first  # with credit for idling: "PPPPSSSS"


def test_abandoned_waiters_are_skipped_uncounted_and_cost_nothing() -> None:
    """A waiter marked abandoned is not counted, never popped, and costs its lane no virtual time."""
    queue: LaneQueue[Waiter] = LaneQueue(W11)
    s0, s1, s2 = push_all(queue, "SSS")
    (p0,) = push_all(queue, "P")
    s0.abandoned = s1.abandoned = True
    assert (queue.waiting(S), queue.waiting(P)) == (1, 1)
    assert [queue.pop(), queue.pop(), queue.pop()] == [s2, p0, None]


def test_a_lane_of_abandoned_waiters_is_not_busy() -> None:
    """Only abandoned waiters left means nobody waits: not busy, and nothing to pop."""
    queue: LaneQueue[Waiter] = LaneQueue()
    (s0,) = push_all(queue, "S")
    assert queue.busy(S) and queue.any_busy()
    s0.abandoned = True
    assert not queue.busy(S) and not queue.any_busy()
    assert queue.pop() is None
    assert queue.waiting(S) == 0


@pytest.mark.parametrize(("back_to_front", "expected"), [(True, "SSSSSPSP"), (False, "SSSPSSSP")])
def test_a_waiter_pushed_back_to_the_front_goes_first_and_is_no_new_arrival(back_to_front: bool,
                                                                            expected: str) -> None:
    """`push_front` (a waiter that gave its slot up) puts it at the head of its lane and leaves the
    lane's virtual time as it was; `push` would treat it as a newcomer to an idle lane."""
    queue: LaneQueue[Waiter] = LaneQueue(W31)
    s0, p0 = push_all(queue, "SP")
    assert [queue.pop(), queue.pop()] == [s0, p0]  # the submit lane is now behind the last grant
    (queue.push_front if back_to_front else queue.push)(S, s0)
    push_all(queue, "SSSSSPP")
    assert queue.pop() is s0
    assert "S" + drain(queue) == expected


async def test_arrival_returns_at_once_when_someone_waits() -> None:
    """The dispatcher's idle wait does not wait while a waiter is queued."""
    queue: LaneQueue[Waiter] = LaneQueue()
    push_all(queue, "P")
    with anyio.fail_after(5):
        await queue.arrival()


@pytest.mark.parametrize("back_to_front", [False, True])
async def test_arrival_waits_for_a_waiter(back_to_front: bool) -> None:
    """An idle dispatcher (nobody waiting, or only abandoned waiters) sleeps until a waiter is
    pushed, at the back or the front of a lane."""
    queue: LaneQueue[Waiter] = LaneQueue()
    (gone,) = push_all(queue, "S")
    gone.abandoned = True
    woke: list[int] = []

    async def dispatcher() -> None:
        await queue.arrival()
        woke.append(queue.waiting(S) + queue.waiting(P))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher)
            await wait_all_tasks_blocked()  # the dispatcher is parked in arrival()
            assert woke == []
            (queue.push_front if back_to_front else queue.push)(P, Waiter("P0"))
            while not woke:
                await anyio.lowlevel.checkpoint()
    assert woke == [1]
