"""QPS pacing (GroupPacer, Pacers) on a real loop with tiny intervals, and the adaptive first-poll tuner."""

from __future__ import annotations

import asyncio
import math
import random
import statistics

import pytest

from pipeline.limits import GroupPacer, Pacers
from pipeline.poller import FirstPollTuner


def now() -> float:
    return asyncio.get_running_loop().time()


async def grant_times(pacer: GroupPacer, lanes: list[str]) -> list[tuple[float, str]]:
    """Start one acquire per entry of `lanes` (in that order) and return (grant time, lane), in grant order."""
    grants: list[tuple[float, str]] = []

    async def one(lane: str) -> None:
        await pacer.acquire(lane)
        grants.append((now(), lane))

    await asyncio.gather(*(one(lane) for lane in lanes))
    return grants


class FakeTime:
    """A clock and a sleep that only move the clock: pauses cost no real time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


# ---- GroupPacer ---------------------------------------------------------------------------


async def test_grants_keep_the_asked_rate():
    """Grants sit on a 1/qps grid: 60 grants span about 59 intervals (a late wake-up is made up
    for, not lost), never more than one interval less."""
    qps = 500.0
    pacer = GroupPacer("g", qps)
    grants = await grant_times(pacer, ["submit"] * 60)
    times = [t for t, _ in grants]
    span = times[-1] - times[0]
    assert len(times) == 60
    assert span >= 58 / qps, f"60 grants in {span * 1000:.1f} ms: faster than the rate"
    assert span <= 59 / qps * 1.08, f"60 grants in {span * 1000:.1f} ms: time lost on wake-ups"
    assert pacer.granted == {"submit": 60, "poll": 0}


async def test_guard_keeps_the_sliding_window_even_when_wake_ups_are_late():
    """With a window guard, no (window * 1.01) span ever holds more than `limit` grants, even
    when every sleep oversleeps and the grid would catch up in bursts."""
    fake = FakeTime()

    async def late_sleep(seconds: float) -> None:
        await fake.sleep(seconds * 1.7)  # every wake-up 70 % late

    pacer = GroupPacer("g", 19.6, window=1.0, limit=20, clock=fake.clock, sleep=late_sleep)
    granted: list[float] = []

    async def one() -> None:
        await pacer.acquire("submit")
        granted.append(fake.now)

    await asyncio.gather(*(one() for _ in range(120)))
    assert len(granted) == 120
    for i in range(len(granted) - 20):
        assert granted[i + 20] - granted[i] >= 1.01 - 1e-9, f"21 grants within {granted[i + 20] - granted[i]:.3f} s"


async def test_no_start_up_burst():
    """At start, only the first grant is immediate: not qps+1 requests at once, as AsyncLimiter(qps, 1) would allow."""
    qps = 200.0
    pacer = GroupPacer("g", qps)
    start = now()
    grants = await grant_times(pacer, ["submit"] * 6 + ["poll"] * 6)
    early = [t for t, _ in grants if t - start < 2 / qps]
    assert len(early) <= 3, f"{len(early)} grants in the first {2 / qps * 1000:.0f} ms"


@pytest.mark.parametrize("weights, submit_share", [({"submit": 3.0, "poll": 1.0}, 0.75),
                                                   ({"submit": 1.0, "poll": 1.0}, 0.5)])
async def test_busy_lanes_share_by_weight(weights: dict[str, float], submit_share: float):
    """When both lanes have many waiters, each gets its weighted share of the grants, even if
    one lane queued first (a plain FIFO would serve every submit first)."""
    pacer = GroupPacer("g", 1000.0, weights=weights)
    grants = await grant_times(pacer, ["submit"] * 60 + ["poll"] * 60)
    first = [lane for _, lane in grants[:40]]
    share = first.count("submit") / len(first)
    assert abs(share - submit_share) <= 0.1, f"submit share {share:.2f} of the first 40 grants: {first}"
    assert pacer.granted == {"submit": 60, "poll": 60}


async def test_an_idle_lane_gets_no_credit_for_idling():
    """A lane that was idle while the other was served does not then take every slot."""
    pacer = GroupPacer("g", 1000.0)
    await grant_times(pacer, ["submit"] * 30)
    grants = await grant_times(pacer, ["poll"] * 20 + ["submit"] * 20)
    first = [lane for _, lane in grants[:20]]
    assert first.count("submit") >= 10, first


async def test_a_lone_lane_gets_the_full_rate():
    """When only one lane has waiters it is not held to half the rate."""
    qps = 250.0
    n = 30
    pacer = GroupPacer("g", qps)
    start = now()
    grants = await grant_times(pacer, ["poll"] * n)
    elapsed = grants[-1][0] - start
    expected = (n - 1) / qps
    assert expected * 0.95 <= elapsed <= expected * 1.5, f"{n} grants took {elapsed:.3f}s, expected ~{expected:.3f}s"
    assert pacer.granted["poll"] == n


async def test_pause_holds_every_acquire_until_it_ends():
    """After pause(s), acquires in both lanes are granted only once the pause is over."""
    fake = FakeTime()
    pacer = GroupPacer("g", 1000.0, clock=fake.clock, sleep=fake.sleep)
    pacer.pause(5.0)
    pause_end = fake.now + 5.0
    granted_at: list[float] = []

    async def one(lane: str) -> None:
        await pacer.acquire(lane)
        granted_at.append(fake.now)

    await asyncio.gather(one("submit"), one("poll"), one("submit"))
    assert len(granted_at) == 3
    assert min(granted_at) >= pause_end
    assert fake.sleeps and fake.sleeps[0] == pytest.approx(5.0)


async def test_pauses_do_not_shorten_each_other():
    """A shorter pause during a longer one does not cut the longer one short."""
    fake = FakeTime()
    pacer = GroupPacer("g", 1000.0, clock=fake.clock, sleep=fake.sleep)
    pacer.pause(5.0)
    pacer.pause(1.0)
    start = fake.now
    await pacer.acquire("submit")
    assert fake.now - start >= 5.0


async def test_no_pause_means_only_grid_sleeps():
    """Without a pause, the first acquire is immediate and later ones sleep one interval at most."""
    fake = FakeTime()
    pacer = GroupPacer("g", 1000.0, clock=fake.clock, sleep=fake.sleep)
    await pacer.acquire("submit")
    assert fake.sleeps == []
    await pacer.acquire("poll")
    assert fake.sleeps == [pytest.approx(0.001)]


async def test_pause_that_starts_while_waiting_is_honoured():
    """An acquire already waiting for its slot when a pause begins is held until the pause ends."""
    pacer = GroupPacer("g", 20.0)  # 50 ms between grants
    await pacer.acquire("submit")
    waiter = asyncio.ensure_future(pacer.acquire("submit"))
    await asyncio.sleep(0.01)  # now waiting, ~40 ms from its slot
    assert not waiter.done()
    paused_at = now()
    pacer.pause(0.1)
    await waiter
    assert now() - paused_at >= 0.1 - 1e-3


# ---- Pacers -------------------------------------------------------------------------------


async def test_unshared_polls_are_not_paced():
    """With polls_share=False, poll acquires go straight through even at 1 QPS; submits stay paced."""
    pacers = Pacers({"g": 1.0}, polls_share=False)
    start = now()
    for _ in range(50):
        await pacers.acquire("g", "poll")
    assert now() - start < 0.05
    assert pacers["g"].granted["poll"] == 50

    await pacers.acquire("g", "submit")
    with pytest.raises(asyncio.TimeoutError):  # the next submit is a whole second away
        await asyncio.wait_for(pacers.acquire("g", "submit"), 0.05)


async def test_shared_polls_are_paced():
    """With polls_share=True, polls draw from the group's rate like submits do."""
    pacers = Pacers({"g": 1.0}, polls_share=True)
    await pacers.acquire("g", "submit")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(pacers.acquire("g", "poll"), 0.05)


async def test_unshared_polls_still_honour_a_pause():
    """With polls_share=False a 429 pause still holds polls."""
    pacers = Pacers({"g": 1.0, "other": 1.0}, polls_share=False)
    pacers.pause("g", 0.1)
    start = now()
    await pacers.acquire("other", "poll")  # other groups are not paused
    assert now() - start < 0.05
    await pacers.acquire("g", "poll")
    assert now() - start >= 0.1 - 1e-3


async def test_pacers_build_one_pacer_per_group():
    """Each group gets its own pacer with its own rate; pausing one leaves the others alone."""
    pacers = Pacers({"a": 5.0, "b": 20.0}, polls_share=True)
    assert (pacers["a"].qps, pacers["b"].qps) == (5.0, 20.0)
    assert pacers["a"] is not pacers["b"]
    pacers.pause("a", 10.0)
    start = now()
    await pacers.acquire("b", "submit")
    assert now() - start < 0.05


# ---- FirstPollTuner -----------------------------------------------------------------------

LOW, HIGH, TARGET = 2.0, 8.0, 0.85
QUANTILE = LOW + TARGET * (HIGH - LOW)  # 7.1 s for U(2, 8)


def feed(tuner: FirstPollTuner, rng: random.Random, n: int) -> list[float]:
    """Observe n tasks with U(LOW, HIGH) durations; a task is pending at its first poll iff it outlasts the delay."""
    history = []
    for _ in range(n):
        duration = rng.uniform(LOW, HIGH)
        tuner.observe(pending=duration > tuner.delay)
        history.append(tuner.delay)
    return history


@pytest.mark.parametrize("initial", [5.0, 0.5, 60.0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tuner_settles_on_the_target_quantile(initial, seed):
    """After ~2000 first polls the tuner's delay (averaged over its last 500 steps) is within ±10% of the 0.85 quantile."""
    tuner = FirstPollTuner(initial, target=TARGET)
    history = feed(tuner, random.Random(seed), 2000)
    settled = statistics.mean(history[-500:])
    assert abs(settled - QUANTILE) <= 0.10 * QUANTILE, f"settled at {settled:.2f}s, target {QUANTILE:.2f}s"
    assert tuner.observations == 2000


def test_tuner_hits_the_target_share_of_finished_tasks():
    """Once settled, about `target` of the tasks are already finished at their first poll."""
    tuner = FirstPollTuner(5.0, target=TARGET)
    rng = random.Random(11)
    feed(tuner, rng, 1000)
    finished = 0
    for _ in range(2000):
        duration = rng.uniform(LOW, HIGH)
        pending = duration > tuner.delay
        finished += not pending
        tuner.observe(pending=pending)
    assert finished / 2000 == pytest.approx(TARGET, abs=0.03)


def test_tuner_final_delay_is_within_ten_percent():
    """The delay after 2000 observations (not just its average) is within ±10% of the target quantile for almost every seed."""
    misses = []
    for seed in range(20):
        tuner = FirstPollTuner(5.0, target=TARGET)
        feed(tuner, random.Random(seed), 2000)
        if abs(tuner.delay - QUANTILE) > 0.10 * QUANTILE:
            misses.append((seed, round(tuner.delay, 2)))
    assert len(misses) <= 1, f"final delay off by more than 10% for seeds {misses}"


def test_tuner_moves_up_on_pending_and_down_on_finished():
    """A pending first poll lengthens the delay; a finished one shortens it."""
    tuner = FirstPollTuner(4.0, target=TARGET)
    tuner.observe(pending=True)
    longer = tuner.delay
    assert longer > 4.0
    tuner.observe(pending=False)
    assert tuner.delay < longer


def test_tuner_respects_floor_and_ceiling():
    """However one-sided the answers, the delay stays within [floor, ceiling]."""
    tuner = FirstPollTuner(1.0, target=TARGET, floor=0.5, ceiling=2.0)
    for _ in range(200):
        tuner.observe(pending=True)
    assert tuner.delay == 2.0
    for _ in range(2000):
        tuner.observe(pending=False)
    assert tuner.delay == 0.5
    assert math.isfinite(tuner.delay)
