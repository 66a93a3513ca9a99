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


async def test_grants_are_spaced_by_the_interval():
    """No two grants of one group are closer than 1/qps (less a small tolerance)."""
    qps = 500.0
    pacer = GroupPacer("g", qps)
    grants = await grant_times(pacer, ["submit"] * 60)
    times = [t for t, _ in grants]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) == 60
    assert min(gaps) >= 1 / qps - 2e-4, f"closest grants {min(gaps) * 1000:.3f} ms apart"
    assert pacer.granted == {"submit": 60, "poll": 0}


async def test_no_start_up_burst():
    """At start, only the first grant is immediate: not qps+1 requests at once, as AsyncLimiter(qps, 1) would allow."""
    qps = 200.0
    pacer = GroupPacer("g", qps)
    start = now()
    grants = await grant_times(pacer, ["submit"] * 6 + ["poll"] * 6)
    early = [t for t, _ in grants if t - start < 2 / qps]
    assert len(early) <= 2, f"{len(early)} grants in the first {2 / qps * 1000:.0f} ms"


async def test_busy_lanes_alternate():
    """When both lanes have many waiters, each gets 40-60% of the grants, even if one lane queued first."""
    pacer = GroupPacer("g", 1000.0)
    # Every submit waiter queues before any poll waiter: a plain FIFO would grant 40 submits first.
    grants = await grant_times(pacer, ["submit"] * 40 + ["poll"] * 40)
    first = [lane for _, lane in grants[:40]]
    share = first.count("submit") / len(first)
    assert 0.4 <= share <= 0.6, f"submit share {share:.2f} of the first 40 grants: {first}"
    assert pacer.granted == {"submit": 40, "poll": 40}


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


async def test_no_pause_means_no_sleep():
    """Without a pause, acquire never calls the injected sleep."""
    fake = FakeTime()
    pacer = GroupPacer("g", 1000.0, clock=fake.clock, sleep=fake.sleep)
    await pacer.acquire("submit")
    await pacer.acquire("poll")
    assert fake.sleeps == []


async def test_pause_that_starts_while_waiting_in_the_limiter_is_honoured():
    """An acquire already waiting in the limiter when a pause begins is held until the pause ends."""
    pacer = GroupPacer("g", 20.0)  # 50 ms between grants
    await pacer.acquire("submit")
    waiter = asyncio.ensure_future(pacer.acquire("submit"))
    await asyncio.sleep(0.01)  # now inside the limiter, ~40 ms from its slot
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
