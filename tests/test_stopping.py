"""`Stopping`: which stop takes over (table), what a fatal error means (table), and what a stop
does to the state the stages read, to waits in progress and to the creates on the wire."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from pipeline.core.errors import AuthError, FatalError, ServiceUnreachable, Stopped
from pipeline.core.outcome import Stop, StopReason
from pipeline.engine.stopping import Stopping, fatal_stop, takes_over
from pipeline.upload.errors import OssAuthError, OssUnavailable

R = StopReason


def stop(reason: StopReason) -> Stop:
    return Stop(reason, f"{reason.value} (test)")


@pytest.mark.parametrize(("current", "new", "expected"), [
    (None, R.SPEND_CAP, True),
    (None, R.INTERRUPTED, True),
    (R.SPEND_CAP, R.INTERRUPTED, True),  # an interrupt after a drain
    (R.TIME_LIMIT, R.AUTH, True),
    (R.INTERRUPTED, R.AUTH, True),  # a 401 after a signal
    (R.THRESHOLD, R.UNREACHABLE, True),
    (R.OSS_AUTH, R.AUTH, True),
    (R.INTERRUPTED, R.SPEND_CAP, False),  # weaker
    (R.INTERRUPTED, R.THRESHOLD, False),  # as strong
    (R.SPEND_CAP, R.TIME_LIMIT, False),
    (R.AUTH, R.UNREACHABLE, False),
    (R.AUTH, R.INTERRUPTED, False),
])
def test_which_stop_takes_over(current, new, expected) -> None:
    """The first stop always; later, only one that does not drain after one that does, or an
    immediate one after one that is not."""
    assert takes_over(stop(current) if current else None, stop(new)) is expected


@pytest.mark.parametrize(("error", "reason", "names"), [
    (AuthError("InvalidApiKey", "key refused", http_status=401), R.AUTH, "DASHSCOPE_API_KEY"),
    (OssAuthError("InvalidAccessKeyId", "pair refused", http_status=403), R.OSS_AUTH, "OSS_ACCESS_KEY_ID"),
    (ServiceUnreachable("ServiceUnreachable", "connection refused"), R.UNREACHABLE, "nothing was marked failed"),
    (OssUnavailable("OssUnavailable", "OSS down"), R.INTERRUPTED, "nothing was marked failed"),
])
def test_what_a_fatal_error_means(error: FatalError, reason: StopReason, names: str) -> None:
    """Each fatal error is its stop reason, with its code, message and what to do."""
    got = fatal_stop(error)
    assert got.reason is reason
    assert error.code in got.detail and error.message in got.detail and names in got.detail


async def test_a_stop_changes_what_the_stages_read_at_once() -> None:
    """A draining stop stops taking items without interrupting; a later signal interrupts too; a
    weaker stop after that changes nothing."""
    stops = Stopping()
    assert stops.taking and not stops.interrupted
    stops.request(stop(R.SPEND_CAP))
    assert (stops.taking, stops.interrupted, stops.stop.reason) == (False, False, R.SPEND_CAP)  # type: ignore[union-attr]
    stops.request(stop(R.INTERRUPTED))
    assert (stops.interrupted, stops.stop.reason) == (True, R.INTERRUPTED)  # type: ignore[union-attr]
    stops.request(stop(R.TIME_LIMIT))
    assert stops.stop.reason is R.INTERRUPTED  # type: ignore[union-attr]


async def test_a_stop_ends_the_waits_in_progress_and_refuses_new_ones() -> None:
    """An interruptible wait raises `Stopped` when the run stops; once stopped, one raises at once."""
    stops = Stopping()
    outcome: list[BaseException] = []

    async def wait() -> None:
        try:
            await stops.interruptible(anyio.Event().wait)  # would wait forever
        except Stopped as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        stops.request(stop(R.INTERRUPTED))
    assert len(outcome) == 1
    with pytest.raises(Stopped):
        await stops.interruptible(anyio.lowlevel.checkpoint)


async def test_an_interruptible_wait_returns_its_value_when_no_stop_comes() -> None:
    """Without a stop, the wait's own result comes back."""
    async def value() -> int:
        return 7

    assert await Stopping().interruptible(value) == 7


async def test_the_supervisor_sees_each_new_stop() -> None:
    """`changed` returns the stop asked for once it is not the one already seen."""
    stops = Stopping()
    first = stop(R.TIME_LIMIT)
    stops.request(first)
    assert await stops.changed(None) is first
    second = stop(R.AUTH)
    async with anyio.create_task_group() as tg:
        seen: list[Stop] = []

        async def watch() -> None:
            seen.append(await stops.changed(first))

        tg.start_soon(watch)
        await anyio.wait_all_tasks_blocked()
        assert seen == []
        stops.request(second)
    assert seen == [second]


async def test_the_wire_clears_when_the_last_create_answers() -> None:
    """`wire_clear` waits while a create is on the wire and returns when the last one ends."""
    stops = Stopping()
    cleared = anyio.Event()
    release = anyio.Event()

    async def create() -> None:
        with stops.on_the_wire():
            await release.wait()

    async def clear() -> None:
        await stops.wire_clear()
        cleared.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(create)
        tg.start_soon(create)
        await anyio.wait_all_tasks_blocked()
        assert stops.on_wire == 2
        tg.start_soon(clear)
        await anyio.wait_all_tasks_blocked()
        assert not cleared.is_set()
        release.set()
    assert cleared.is_set() and stops.on_wire == 0
    await stops.wire_clear()  # nothing on the wire: returns at once
