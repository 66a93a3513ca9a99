"""The asyncio fast paths, in one place: everything else is anyio.

The pipeline is written against anyio (task groups, cancel scopes, memory streams) and runs on
asyncio (aiohttp needs it). On the per-request paths anyio's wrappers are not free: an
`anyio.Event` or `anyio.Semaphore` per request, `anyio.sleep` per timer and `anyio.current_time`
per clock read cost about a third of the client's CPU per item in the client-ceiling benchmark
(`make bench`, `client_ceiling`: 1,488 async results/s on one core with asyncio's own, where
anyio's lost the third). So the hot paths (a pacer's waiters and grid, a poller's heap and
timer, its slot count) use these names, which are asyncio's own objects; a module that is not on
a hot path uses anyio. Tasks are still owned by anyio task groups either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Event", "Semaphore", "Timer", "call_later", "in_daemon_thread", "loop_clock", "sleep"]

#: A waiter's event: set once, awaited once (asyncio's: no anyio wrapper per request).
Event = asyncio.Event
#: A counting semaphore (asyncio's: acquiring a free slot does not yield).
Semaphore = asyncio.Semaphore
#: A timer that can be cancelled (`call_later`'s handle).
Timer = asyncio.TimerHandle
#: Sleep without a cancel scope per call (cancellation still reaches it through its task).
sleep = asyncio.sleep


def loop_clock() -> Callable[[], float]:
    """The running loop's clock (`loop.time`): what the pacers and pollers schedule by."""
    return asyncio.get_running_loop().time


def call_later(delay: float, callback: Callable[[], object]) -> Timer:
    """Run `callback` after `delay` seconds on the running loop (a cancellable handle): cheaper than
    a cancel scope per wait in a loop that turns thousands of times a second."""
    return asyncio.get_running_loop().call_later(delay, callback)


async def in_daemon_thread(fn: Callable[[], T], name: str) -> T:
    """`fn()` in a daemon thread of its own, awaited. A cancel abandons the thread: unlike a
    worker thread's, it does not hold the process at its exit (a request hung on a silent
    server would keep a Ctrl-C'd run alive for its whole timeout). For a call that only reads."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():  # the awaiting task was cancelled: the thread is abandoned
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def target() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await done
