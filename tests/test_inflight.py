"""The in-flight cap: tokens per capability, the gauge beside them, and a token given back once."""

from __future__ import annotations

import anyio
import pytest

from pipeline.engine.inflight import InFlight
from pipeline.observe.report import RunStats


async def test_taking_and_giving_back_moves_the_gauge() -> None:
    """Each token taken counts in its capability's in-flight gauge until it is given back."""
    stats = RunStats()
    inflight = InFlight(2, stats)
    a = await inflight.take("image_analyze")
    b = await inflight.take("audio_asr")
    assert (stats.caps["image_analyze"].in_flight, stats.caps["audio_asr"].in_flight) == (1, 1)
    inflight.release(a)
    inflight.release(b)
    assert (stats.caps["image_analyze"].in_flight, stats.caps["audio_asr"].in_flight) == (0, 0)
    assert not a.held and a.capability == "image_analyze"


async def test_a_full_capability_waits_for_a_token_back_and_others_do_not() -> None:
    """At the cap, a take waits until a token of that capability is given back; another
    capability's take does not wait."""
    stats = RunStats()
    inflight = InFlight(1, stats)
    first = await inflight.take("image_analyze")
    taken = []

    async def second() -> None:
        taken.append(await inflight.take("image_analyze"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await inflight.take("video_snapshot")  # its own slots: no wait
        await anyio.wait_all_tasks_blocked()
        assert taken == []  # the second take is blocked on its slot
        inflight.release(first)
    assert len(taken) == 1 and stats.caps["image_analyze"].in_flight == 1


async def test_a_token_given_back_twice_is_a_bug() -> None:
    """Giving a token back a second time raises instead of freeing a slot nobody holds."""
    inflight = InFlight(1, RunStats())
    token = await inflight.take("image_analyze")
    inflight.release(token)
    with pytest.raises(RuntimeError, match="twice"):
        inflight.release(token)
