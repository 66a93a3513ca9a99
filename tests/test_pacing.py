"""QPS pacing (GroupPacer, Pacers) on a fake clock: the dispatcher's `run()` sleeps through an
injected sleep that only moves the clock, so every grant time is exact and nothing really waits."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.lowlevel
import pytest

from pipeline.core.lanes import Lane
from pipeline.pacing import memory
from pipeline.pacing.memory import GroupPacer, Pacers

SUBMIT, POLL = Lane.SUBMIT, Lane.POLL
#: QPS groups (the table's `qps_group`) and a capability of each: Pacers is keyed by group but
#: reached through capability names.
IMAGE_GROUP, IMAGE = "image-analyze", "image_analyze"
DETECT_GROUP, DETECT = "image-object-detection", "object_detection"


class FakeTime:
    """A clock and a sleep that only move the clock: pauses cost no real time.

    The sleep first yields a few times, so a waiter the dispatcher has just granted runs (and
    reads the clock) before time moves on.
    """

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        self.now += seconds


async def until(condition: Callable[[], bool]) -> None:
    """Yield until `condition()` holds (a few real seconds at most, so a bug fails instead of hanging)."""
    with anyio.fail_after(5):
        while not condition():
            await anyio.lowlevel.checkpoint()


async def grants_of(pacer: GroupPacer, lanes: Sequence[Lane], fake: FakeTime) -> list[tuple[float, Lane]]:
    """Queue one acquire per entry of `lanes` (in that order), then run the dispatcher until all
    are granted; returns (fake grant time, lane) in grant order."""
    grants: list[tuple[float, Lane]] = []
    queued = sum(pacer.waiting(lane) for lane in Lane)

    async def one(lane: Lane) -> None:
        await pacer.acquire(lane)
        grants.append((fake.now, lane))

    async with anyio.create_task_group() as tg:
        for lane in lanes:
            tg.start_soon(one, lane)
        await until(lambda: sum(pacer.waiting(lane) for lane in Lane) == queued + len(lanes))
        tg.start_soon(pacer.run)
        await until(lambda: len(grants) == len(lanes))
        tg.cancel_scope.cancel()
    return grants


async def with_dispatcher(pacers: GroupPacer | Pacers, body: Callable[[], Awaitable[None]]) -> None:
    """Run `body` while the dispatcher(s) run, then cancel them."""
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pacers.run)
            await body()
            tg.cancel_scope.cancel()


# ---- GroupPacer: the grid -----------------------------------------------------------------


async def test_grants_sit_exactly_on_the_grid():
    """With punctual wake-ups, grant k comes exactly k/qps after the first."""
    fake = FakeTime()
    qps = 500.0
    pacer = GroupPacer("g", qps, clock=fake.clock, sleep=fake.sleep)
    grants = await grants_of(pacer, [SUBMIT] * 60, fake)
    times = [t for t, _ in grants]
    assert times == pytest.approx([100.0 + k / qps for k in range(60)])
    assert pacer.granted == {SUBMIT: 60, POLL: 0}


async def test_late_wake_ups_are_made_up_for_not_lost():
    """When every wake-up is 40 % of an interval late, 60 grants still span about 59 intervals
    (timing each wait from the previous grant, as aiolimiter does, would take 59 * 1.4)."""
    fake = FakeTime()
    qps = 500.0
    interval = 1 / qps

    async def late_sleep(seconds: float) -> None:
        await fake.sleep(seconds + 0.4 * interval)

    pacer = GroupPacer("g", qps, clock=fake.clock, sleep=late_sleep)
    grants = await grants_of(pacer, [SUBMIT] * 60, fake)
    times = [t for t, _ in grants]
    span = times[-1] - times[0]
    assert span >= 58 * interval, f"60 grants in {span * 1000:.1f} ms: faster than the rate"
    assert span <= 59 * interval * 1.08, f"60 grants in {span * 1000:.1f} ms: time lost on wake-ups"
    assert all(later > earlier for earlier, later in itertools.pairwise(times))


async def test_guard_keeps_the_sliding_window_even_when_wake_ups_are_late():
    """With a window guard, no (window * 1.01) span ever holds more than `limit` grants, even
    when every sleep oversleeps and the grid would catch up in bursts."""
    fake = FakeTime()

    async def late_sleep(seconds: float) -> None:
        await fake.sleep(seconds * 1.7)  # every wake-up 70 % late

    pacer = GroupPacer("g", 19.6, window=1.0, limit=20, clock=fake.clock, sleep=late_sleep)
    granted = [t for t, _ in await grants_of(pacer, [SUBMIT] * 120, fake)]
    assert len(granted) == 120
    for i in range(len(granted) - 20):
        assert granted[i + 20] - granted[i] >= 1.01 - 1e-9, f"21 grants within {granted[i + 20] - granted[i]:.3f} s"


async def test_a_guard_for_a_very_high_limit_keeps_a_bounded_sample_and_the_window(monkeypatch):
    """With a limit far above GUARD_MAX (here shrunk to 8 to keep the test quick), the guard keeps
    at most GUARD_MAX grants (every k-th), and still no (window * 1.01) span holds more than
    `limit` grants: memory bounded by a constant, not by qps."""
    monkeypatch.setattr(memory, "GUARD_MAX", 8)
    fake = FakeTime()

    async def late_sleep(seconds: float) -> None:
        await fake.sleep(seconds * 1.7)

    pacer = GroupPacer("g", 98.0, window=1.0, limit=100, clock=fake.clock, sleep=late_sleep)
    granted = [t for t, _ in await grants_of(pacer, [SUBMIT] * 400, fake)]
    assert len(granted) == 400 and pacer._sent is not None and pacer._sent.maxlen <= 8
    for i in range(len(granted) - 100):
        assert granted[i + 100] - granted[i] >= 1.01 - 1e-9, f"101 grants within {granted[i + 100] - granted[i]:.3f} s"


async def test_without_a_guard_late_wake_ups_do_burst():
    """The guard is what keeps the window: the same late sleeps without it let 21 grants into
    1.01 s (so the test above can fail)."""
    fake = FakeTime()

    async def late_sleep(seconds: float) -> None:
        await fake.sleep(seconds * 1.7)

    pacer = GroupPacer("g", 19.6, clock=fake.clock, sleep=late_sleep)
    granted = [t for t, _ in await grants_of(pacer, [SUBMIT] * 120, fake)]
    assert min(granted[i + 20] - granted[i] for i in range(len(granted) - 20)) < 1.01


async def test_no_start_up_burst():
    """At start only the first grant is immediate; the rest follow one interval apart (not qps+1
    at once, as AsyncLimiter(qps, 1) would allow), whichever lane they wait in."""
    fake = FakeTime()
    qps = 200.0
    pacer = GroupPacer("g", qps, clock=fake.clock, sleep=fake.sleep)
    grants = await grants_of(pacer, [SUBMIT] * 6 + [POLL] * 6, fake)
    times = [t for t, _ in grants]
    assert [t for t in times if t < 100.0 + 1 / qps] == [100.0]
    assert times == pytest.approx([100.0 + k / qps for k in range(12)])


async def test_after_idling_the_grid_restarts_at_now():
    """After an idle spell the next grant is immediate, but the one after it is a full interval
    later: idle time is not banked as a burst."""
    fake = FakeTime()
    pacer = GroupPacer("g", 10.0, clock=fake.clock, sleep=fake.sleep)
    await grants_of(pacer, [SUBMIT] * 3, fake)
    fake.now += 60.0  # idle for a minute
    start = fake.now
    times = [t for t, _ in await grants_of(pacer, [SUBMIT] * 3, fake)]
    assert times == pytest.approx([start, start + 0.1, start + 0.2])


# ---- GroupPacer: lanes (weighted fair queuing) --------------------------------------------


@pytest.mark.parametrize(("weights", "submit_share"), [({SUBMIT: 3.0, POLL: 1.0}, 0.75),
                                                       ({SUBMIT: 1.0, POLL: 1.0}, 0.5)])
async def test_busy_lanes_share_by_weight(weights: dict[Lane, float], submit_share: float):
    """When both lanes have many waiters, each gets its weighted share of the grants, even if
    one lane queued first (a plain FIFO would serve every submit first)."""
    fake = FakeTime()
    pacer = GroupPacer("g", 1000.0, weights=weights, clock=fake.clock, sleep=fake.sleep)
    grants = await grants_of(pacer, [SUBMIT] * 60 + [POLL] * 60, fake)
    first = [lane for _, lane in grants[:40]]
    share = first.count(SUBMIT) / len(first)
    assert abs(share - submit_share) <= 0.1, f"submit share {share:.2f} of the first 40 grants: {first}"
    assert pacer.granted == {SUBMIT: 60, POLL: 60}


async def test_an_idle_lane_gets_no_credit_for_idling():
    """A lane that was idle while the other was served does not then take every slot."""
    fake = FakeTime()
    pacer = GroupPacer("g", 1000.0, clock=fake.clock, sleep=fake.sleep)
    await grants_of(pacer, [SUBMIT] * 30, fake)
    grants = await grants_of(pacer, [POLL] * 20 + [SUBMIT] * 20, fake)
    first = [lane for _, lane in grants[:20]]
    assert first.count(SUBMIT) >= 10, first


async def test_a_lone_lane_gets_the_full_rate():
    """When only one lane has waiters it is not held to its weighted share: n polls take n-1 intervals."""
    fake = FakeTime()
    qps, n = 250.0, 30
    pacer = GroupPacer("g", qps, clock=fake.clock, sleep=fake.sleep)
    grants = await grants_of(pacer, [POLL] * n, fake)
    assert grants[-1][0] - 100.0 == pytest.approx((n - 1) / qps)
    assert pacer.granted == {SUBMIT: 0, POLL: n}


async def test_spare_at_says_when_a_slot_is_unused():
    """`spare_at()` is None while a submit or a poll waits, and otherwise the grid's next free
    slot: one interval after the last grant, or now once the grid has idled."""
    fake = FakeTime()
    pacer = GroupPacer("g", 5.0, clock=fake.clock, sleep=fake.sleep)
    assert pacer.spare_at() == 100.0  # never used: free now
    grants = await grants_of(pacer, [SUBMIT] * 3, fake)
    assert pacer.spare_at() == pytest.approx(grants[-1][0] + 0.2)

    async def waiter(lane: Lane) -> None:
        await pacer.acquire(lane)

    for lane in Lane:
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, lane)
            await until(lambda lane=lane: pacer.waiting(lane) == 1)
            assert pacer.spare_at() is None, lane
            tg.cancel_scope.cancel()
    fake.now += 1.0  # idle for longer than an interval: the grid restarts at now
    assert pacer.spare_at() == fake.now


async def test_spare_at_respects_a_pause():
    """A 429 pause moves the next spare slot to the pause's end."""
    fake = FakeTime()
    pacer = GroupPacer("g", 5.0, clock=fake.clock, sleep=fake.sleep)
    pacer.pause(3.0)
    assert pacer.spare_at() == pytest.approx(103.0)


def test_spare_slots_only_when_polls_share_the_budget():
    """Pacers hands a poller its group's spare-slot signal only when polls are paced."""
    limits = {IMAGE_GROUP: 10.0, DETECT_GROUP: 20.0}
    assert Pacers(limits, polls_share=False, clock=lambda: 0.0).spare_slots(IMAGE) is None
    shared = Pacers(limits, polls_share=True, clock=lambda: 0.0)
    assert shared.spare_slots(IMAGE) is shared[IMAGE_GROUP]


async def test_a_cancelled_waiter_gives_its_turn_away():
    """An acquire cancelled while it waits takes no slot: the next waiter gets it, and it is not counted."""
    fake = FakeTime()
    pacer = GroupPacer("g", 10.0, clock=fake.clock, sleep=fake.sleep)
    granted: list[str] = []
    scopes: list[anyio.CancelScope] = []

    async def one(name: str) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await pacer.acquire(SUBMIT)
            granted.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "cancelled")
        tg.start_soon(one, "next")
        await until(lambda: pacer.waiting(SUBMIT) == 2)
        scopes[0].cancel()
        await until(lambda: pacer.waiting(SUBMIT) == 1)
        tg.start_soon(pacer.run)
        await until(lambda: granted == ["next"])
        tg.cancel_scope.cancel()
    assert pacer.granted == {SUBMIT: 1, POLL: 0}
    assert fake.now == 100.0  # the one grant was the first slot


# ---- GroupPacer: pauses -------------------------------------------------------------------


async def test_pause_holds_every_acquire_until_it_ends():
    """After pause(s), acquires in both lanes are granted only once the pause is over."""
    fake = FakeTime()
    pacer = GroupPacer("g", 1000.0, clock=fake.clock, sleep=fake.sleep)
    pacer.pause(5.0)
    pause_end = fake.now + 5.0
    grants = await grants_of(pacer, [SUBMIT, POLL, SUBMIT], fake)
    assert len(grants) == 3
    assert min(t for t, _ in grants) >= pause_end
    assert fake.sleeps[0] == pytest.approx(5.0)


async def test_pauses_do_not_shorten_each_other():
    """A shorter pause during a longer one does not cut the longer one short."""
    fake = FakeTime()
    pacer = GroupPacer("g", 1000.0, clock=fake.clock, sleep=fake.sleep)
    pacer.pause(5.0)
    pacer.pause(1.0)
    [(granted_at, _)] = await grants_of(pacer, [SUBMIT], fake)
    assert granted_at - 100.0 >= 5.0


async def test_no_pause_means_only_grid_sleeps():
    """Without a pause, the first acquire is immediate and the next sleeps exactly one interval."""
    fake = FakeTime()
    pacer = GroupPacer("g", 1000.0, clock=fake.clock, sleep=fake.sleep)

    async def body() -> None:
        await pacer.acquire(SUBMIT)
        assert fake.sleeps == []
        await pacer.acquire(POLL)

    await with_dispatcher(pacer, body)
    assert fake.sleeps == [pytest.approx(0.001)]


async def test_pause_that_starts_while_waiting_is_honoured():
    """An acquire already waiting for its slot when a pause begins is held until the pause ends."""
    fake = FakeTime()
    pause_end: list[float] = []

    async def sleep_then_429(seconds: float) -> None:
        # 10 ms into the dispatcher's wait for the next slot, a 429 pauses the group for 100 ms.
        if not pause_end:
            await fake.sleep(0.01)
            pacer.pause(0.1)
            pause_end.append(fake.now + 0.1)
            seconds -= 0.01
        await fake.sleep(seconds)

    pacer = GroupPacer("g", 20.0, clock=fake.clock, sleep=sleep_then_429)  # 50 ms between grants
    grants = await grants_of(pacer, [SUBMIT, SUBMIT], fake)
    assert grants[0][0] == 100.0
    assert pause_end == [pytest.approx(100.11)]
    assert grants[1][0] >= pause_end[0]


# ---- Pacers -------------------------------------------------------------------------------


async def test_unshared_polls_are_not_paced():
    """With polls_share=False, poll acquires go straight through even at 1 QPS; submits stay paced."""
    fake = FakeTime()
    pacers = Pacers({IMAGE_GROUP: 1.0}, polls_share=False, clock=fake.clock, sleep=fake.sleep)
    submits: list[float] = []

    async def body() -> None:
        for _ in range(50):
            await pacers.acquire(IMAGE, POLL)
        assert (fake.now, fake.sleeps) == (100.0, [])
        for _ in range(2):
            await pacers.acquire(IMAGE, SUBMIT)
            submits.append(fake.now)

    await with_dispatcher(pacers, body)
    assert pacers[IMAGE_GROUP].granted == {SUBMIT: 2, POLL: 50}
    assert submits == [100.0, 101.0]  # the next submit is a whole second away


async def test_shared_polls_are_paced():
    """With polls_share=True, polls draw from the group's rate like submits do."""
    fake = FakeTime()
    pacers = Pacers({IMAGE_GROUP: 1.0}, polls_share=True, clock=fake.clock, sleep=fake.sleep)
    times: list[float] = []

    async def body() -> None:
        await pacers.acquire(IMAGE, SUBMIT)
        times.append(fake.now)
        await pacers.acquire(IMAGE, POLL)
        times.append(fake.now)

    await with_dispatcher(pacers, body)
    assert times == [100.0, 101.0]
    assert pacers[IMAGE_GROUP].granted == {SUBMIT: 1, POLL: 1}


async def test_unshared_polls_still_honour_a_pause():
    """With polls_share=False a 429 pause still holds polls of the paused group, and only those."""
    fake = FakeTime()
    pacers = Pacers({IMAGE_GROUP: 1.0, DETECT_GROUP: 1.0}, polls_share=False, clock=fake.clock, sleep=fake.sleep)
    pacers.pause(IMAGE, 0.1)
    await pacers.acquire(DETECT, POLL)  # other groups are not paused
    assert fake.now == 100.0
    await pacers.acquire(IMAGE, POLL)
    assert fake.now >= 100.1


async def test_pacers_build_one_pacer_per_group():
    """Each QPS group gets its own pacer with its own rate, reached through its capabilities;
    pausing one leaves the others alone."""
    fake = FakeTime()
    pacers = Pacers({IMAGE_GROUP: 5.0, DETECT_GROUP: 20.0}, polls_share=True, clock=fake.clock, sleep=fake.sleep)
    assert (pacers[IMAGE_GROUP].qps, pacers[DETECT_GROUP].qps) == (5.0, 20.0)
    assert pacers.for_capability(IMAGE) is pacers[IMAGE_GROUP]
    assert pacers.for_capability(DETECT) is pacers[DETECT_GROUP]
    pacers.pause(IMAGE, 10.0)

    async def body() -> None:
        await pacers.acquire(DETECT, SUBMIT)
        assert fake.now == 100.0
        await pacers.acquire(IMAGE, SUBMIT)
        assert fake.now >= 110.0

    await with_dispatcher(pacers, body)


async def test_pacers_windows_reach_each_groups_guard():
    """`windows` gives a group the service's sliding-window rule: at 100 QPS paced but 5 per
    second allowed, the 6th grant waits until the first leaves the (slightly widened) window."""
    fake = FakeTime()
    pacers = Pacers({IMAGE_GROUP: 100.0}, polls_share=True, windows={IMAGE_GROUP: (1.0, 5)},
                    clock=fake.clock, sleep=fake.sleep)
    times = [t for t, _ in await grants_of(pacers[IMAGE_GROUP], [SUBMIT] * 6, fake)]
    assert times[:5] == pytest.approx([100.0, 100.01, 100.02, 100.03, 100.04])
    assert times[5] >= 101.01 - 1e-9
