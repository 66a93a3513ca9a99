"""The emulator measures how late clients see finished tasks: per-task detection lag and the last real end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import EMU_KEY, FakeClock

from pipeline.emulator import EmulatorSettings, RunningEmulator, api_path, start_emulator
from pipeline.emulator.counters import lag_summary, percentile

SID = "ops-image-analyze-ocr-001"
SCALE = 10.0
DURATION = 2.0  # emulated seconds every task takes: 0.2 s on the emulator's (fake) clock
REAL_DURATION = DURATION / SCALE


@pytest.fixture
async def clocked(emu_clock: FakeClock) -> AsyncIterator[RunningEmulator]:
    """An emulator on a random port whose clock moves only when the test says so."""
    settings = EmulatorSettings(api_key=EMU_KEY, seed=3, time_scale=SCALE,
                                durations={"image-analyze": (DURATION, DURATION)},
                                qps={"image-analyze": 1000})  # the clock is frozen: no window ever passes
    async with start_emulator(settings, clock=emu_clock) as running:
        yield running


@pytest.fixture
async def http(clocked: RunningEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A session on the clocked emulator with the right key."""
    async with aiohttp.ClientSession(base_url=clocked.url,
                                     headers={"Authorization": f"Bearer {EMU_KEY}"}) as session:
        yield session


async def _create(http: aiohttp.ClientSession, n: int) -> str:
    body = {"document": {"url": f"https://img.example.com/{n}.png"}}
    async with http.post(api_path("image-analyze", SID), json=body) as resp:
        assert resp.status == 200
        task_id: str = (await resp.json())["result"]["task_id"]
    return task_id


async def _poll(http: aiohttp.ClientSession, task_id: str) -> str:
    async with http.get(api_path("image-analyze", SID, "status"), params={"task_id": task_id}) as resp:
        assert resp.status == 200
        status: str = (await resp.json())["result"]["status"]
    return status


async def _counters(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get("/_emulator/counters") as resp:
        data: dict[str, Any] = await resp.json()
    return data


async def test_lag_is_first_final_poll_minus_real_end(http: aiohttp.ClientSession, emu_clock: FakeClock) -> None:
    """The lag is the time of the first poll that saw SUCCESS minus the task's real end; later polls add nothing."""
    created_at = emu_clock.now
    task_id = await _create(http, 1)
    emu_clock.advance(REAL_DURATION / 2)
    assert await _poll(http, task_id) == "PENDING"
    assert (await _counters(http))["detection_lag"] == {"count": 0, "p50": None, "p95": None, "max": None}
    emu_clock.advance(REAL_DURATION / 2 + 0.15)
    assert await _poll(http, task_id) == "SUCCESS"
    emu_clock.advance(1.0)
    assert await _poll(http, task_id) == "SUCCESS"  # seen again: not a second detection
    counters = await _counters(http)
    lag = counters["detection_lag"]
    assert lag["count"] == 1
    assert lag["p50"] == pytest.approx(0.15) and lag["max"] == pytest.approx(0.15)
    assert counters["last_task_end_at"] == pytest.approx(created_at + REAL_DURATION)


async def test_percentiles_over_many_tasks(http: aiohttp.ClientSession, emu_clock: FakeClock) -> None:
    """p50, p95 and max are nearest-rank figures over every detected task's lag."""
    tasks = [await _create(http, n) for n in range(20)]  # all end at the same real time
    emu_clock.advance(REAL_DURATION)
    for i, task_id in enumerate(tasks):  # task i is first seen done i * 10 ms after its end
        assert await _poll(http, task_id) == "SUCCESS"
        if i < len(tasks) - 1:
            emu_clock.advance(0.01)
    lag = (await _counters(http))["detection_lag"]
    assert lag["count"] == 20
    assert lag["p50"] == pytest.approx(0.09)  # rank 10 of 20
    assert lag["p95"] == pytest.approx(0.18)  # rank 19 of 20
    assert lag["max"] == pytest.approx(0.19)


async def test_last_task_end_counts_only_ends_already_past(
    http: aiohttp.ClientSession, emu_clock: FakeClock
) -> None:
    """last_task_end_at is null until a task has really ended, then the latest end in the past, polled or not."""
    first = emu_clock.now
    await _create(http, 1)
    emu_clock.advance(0.5)
    await _create(http, 2)  # ends at first + 0.5 + REAL_DURATION
    assert (await _counters(http))["last_task_end_at"] == pytest.approx(first + REAL_DURATION)
    emu_clock.advance(REAL_DURATION)
    counters = await _counters(http)
    assert counters["last_task_end_at"] == pytest.approx(first + 0.5 + REAL_DURATION)
    assert counters["detection_lag"]["count"] == 0  # nobody polled: ends are known, detections are not


async def test_no_task_ended_yet_reports_null(http: aiohttp.ClientSession) -> None:
    """Before any task has ended, last_task_end_at is null even with tasks in flight."""
    await _create(http, 1)
    assert (await _counters(http))["last_task_end_at"] is None


async def test_dropped_answer_is_not_a_detection(
    clocked: RunningEmulator, http: aiohttp.ClientSession, emu_clock: FakeClock
) -> None:
    """A status answer lost to a dropped connection does not count: the lag runs to the first answer received."""
    task_id = await _create(http, 1)
    emu_clock.advance(REAL_DURATION)
    clocked.state.update_faults(drop_rate=1.0, routes=["image-analyze:status"])
    with pytest.raises(aiohttp.ClientError):
        await _poll(http, task_id)
    clocked.state.update_faults(drop_rate=0.0)
    emu_clock.advance(0.3)
    assert await _poll(http, task_id) == "SUCCESS"
    lag = (await _counters(http))["detection_lag"]
    assert lag["count"] == 1 and lag["max"] == pytest.approx(0.3)


async def test_reset_clears_lags_and_ends(http: aiohttp.ClientSession, emu_clock: FakeClock) -> None:
    """Resetting the counters forgets detection lags and real ends recorded before it."""
    task_id = await _create(http, 1)
    emu_clock.advance(REAL_DURATION)
    assert await _poll(http, task_id) == "SUCCESS"
    async with http.post("/_emulator/counters/reset") as resp:
        assert resp.status == 200
    counters = await _counters(http)
    assert counters["detection_lag"]["count"] == 0 and counters["last_task_end_at"] is None


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [([1.0], 50, 1.0), ([1.0], 95, 1.0), ([1.0, 2.0], 50, 1.0), ([1.0, 2.0, 3.0, 4.0], 95, 4.0),
     ([float(i) for i in range(1, 101)], 95, 95.0), ([float(i) for i in range(1, 101)], 50, 50.0)],
)
def test_percentile_is_nearest_rank(values: list[float], pct: float, expected: float) -> None:
    """The percentile is the observed value at rank ceil(pct% of n), never an interpolation."""
    assert percentile(values, pct) == expected


def test_lag_summary_of_unsorted_lags() -> None:
    """lag_summary sorts its input and reports count, p50, p95 and max."""
    assert lag_summary([0.3, 0.1, 0.2]) == {"count": 3, "p50": 0.2, "p95": 0.3, "max": 0.3}
