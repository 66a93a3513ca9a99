"""The supervisor: what each kind of stop cancels, and when (a drain, a stop that waits for
creates on the wire, an immediate one), and the time limit."""

from __future__ import annotations

import anyio
import pytest

from pipeline.core.outcome import Stop, StopReason
from pipeline.engine.stopping import Stopping
from pipeline.engine.supervisor import Supervisor

R = StopReason


class Scopes:
    """The three scopes the supervisor cancels, as plain scopes the test can look at."""

    def __init__(self) -> None:
        self.work, self.reader, self.pollers = anyio.CancelScope(), anyio.CancelScope(), anyio.CancelScope()

    def cancelled(self) -> tuple[bool, bool, bool]:
        return self.work.cancel_called, self.reader.cancel_called, self.pollers.cancel_called


@pytest.mark.parametrize("reason", [R.AUTH, R.UNREACHABLE])
async def test_an_immediate_stop_cancels_everything_at_once(reason: StopReason) -> None:
    """A refused key or an unreachable service cancels the work at once, creates on the wire or not."""
    stops, scopes = Stopping(), Scopes()
    with stops.on_the_wire():
        stops.request(Stop(reason, "x"))
        with anyio.fail_after(10):
            await Supervisor(stops, request_timeout=30).watch(work=scopes.work, reader=scopes.reader,
                                                              pollers=scopes.pollers)
        assert scopes.cancelled() == (True, True, True)


@pytest.mark.parametrize("reason", [R.INTERRUPTED, R.THRESHOLD, R.OSS_AUTH])
async def test_a_stop_waits_for_the_creates_on_the_wire_then_cancels(reason: StopReason) -> None:
    """A signal, the threshold or OSS credentials refused: the reader and the pollers at once, the
    rest only once the create on the wire has its answer."""
    stops, scopes = Stopping(), Scopes()
    answered = anyio.Event()

    async def create() -> None:
        with stops.on_the_wire():
            await answered.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(create)
        await anyio.wait_all_tasks_blocked()
        stops.request(Stop(reason, "x"))
        tg.start_soon(lambda: Supervisor(stops, request_timeout=30).watch(
            work=scopes.work, reader=scopes.reader, pollers=scopes.pollers))
        await anyio.wait_all_tasks_blocked()
        assert scopes.cancelled() == (False, True, True)
        answered.set()
    assert scopes.cancelled() == (True, True, True)


async def test_the_wait_for_creates_is_bounded_by_the_request_timeout() -> None:
    """A create that never answers holds the stop up for the request timeout (plus a second), no more."""
    stops, scopes = Stopping(), Scopes()
    with stops.on_the_wire():
        stops.request(Stop(R.INTERRUPTED, "signal"))
        with anyio.fail_after(10):
            await Supervisor(stops, request_timeout=0.01).watch(work=scopes.work, reader=scopes.reader,
                                                                pollers=scopes.pollers)
    assert scopes.cancelled() == (True, True, True)


@pytest.mark.parametrize("reason", [R.SPEND_CAP, R.TIME_LIMIT])
async def test_a_drain_stops_the_reader_only_until_a_stronger_stop(reason: StopReason) -> None:
    """A spend cap or a time limit cancels the reader and lets the rest finish; a signal after it
    takes over and cancels the rest."""
    stops, scopes = Stopping(), Scopes()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: Supervisor(stops, request_timeout=30).watch(
            work=scopes.work, reader=scopes.reader, pollers=scopes.pollers))
        stops.request(Stop(reason, "drain"))
        await anyio.wait_all_tasks_blocked()
        assert scopes.cancelled() == (False, True, False)
        stops.request(Stop(R.INTERRUPTED, "signal"))
    assert scopes.cancelled() == (True, True, True)


async def test_the_time_limit_asks_for_a_draining_stop() -> None:
    """At the limit (scaled by the time scale), the time-limit stop is asked for, naming --max-duration."""
    stops = Stopping()
    with anyio.fail_after(10):
        await Supervisor(stops, request_timeout=30).time_limit(0.5, 100.0)
    assert stops.stop is not None and stops.stop.reason is R.TIME_LIMIT
    assert "--max-duration 0.5 s" in stops.stop.detail
