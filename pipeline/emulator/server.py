"""Running the emulator: in the current event loop, or in a background thread for sync code.

async with start_emulator(settings) as emu:      # emu.url, emu.state, emu.counters()
    ...

with EmulatorThread(settings) as emu:            # for the (synchronous) official SDK
    client = Client(Config(endpoint=f"127.0.0.1:{emu.port}", protocol="http", ...))
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from aiohttp import web

from .app import create_app
from .settings import EmulatorSettings, FaultSettings
from .state import STATE, Clock, EmulatorState

T = TypeVar("T")
SHUTDOWN_TIMEOUT = 1.0  # seconds in-flight requests get when the emulator stops
CALL_TIMEOUT = 10.0  # seconds a cross-thread call waits for the emulator's loop (it never blocks)


class RunningEmulator:
    """A started emulator: where it listens and its live state."""

    __slots__ = ("host", "port", "settings", "state")

    def __init__(self, host: str, port: int, state: EmulatorState) -> None:
        self.host = host
        self.port = port
        self.state = state
        self.settings = state.settings

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """``host:port``, the form the official SDK's ``Config.endpoint`` takes."""
        return f"{self.host}:{self.port}"

    def counters(self) -> dict[str, Any]:
        """A snapshot of the counters (call from the emulator's own loop)."""
        return self.state.counters_snapshot()

    def __repr__(self) -> str:
        return f"RunningEmulator(url={self.url!r})"


async def _start(
    settings: EmulatorSettings | None, host: str, port: int, clock: Clock | None
) -> tuple[web.AppRunner, RunningEmulator]:
    app = create_app(settings, clock=clock)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return runner, RunningEmulator(host, bound_port, app[STATE])


@asynccontextmanager
async def start_emulator(
    settings: EmulatorSettings | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator on ``host:port`` (0 = a free port) for the duration of the block."""
    runner, emulator = await _start(settings, host, port, clock)
    try:
        yield emulator
    finally:
        await runner.cleanup()


class EmulatorThread:
    """The emulator on its own event loop in a daemon thread; ``start``/``stop`` or ``with``.

    Methods that read or change state hop onto the emulator's loop, so they are safe to call
    from any thread. ``stop`` is safe to call twice.
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self._host, self._port, self._clock = host, port, clock
        self._loop: asyncio.AbstractEventLoop | None = None  # the emulator's loop, once running
        self._stop: asyncio.Event | None = None  # set on that loop to shut down
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()  # set once serving (or failed to start)
        self._error: BaseException | None = None  # why start failed
        self._emulator: RunningEmulator | None = None

    def start(self) -> EmulatorThread:
        """Start serving; returns once the port is bound (raises if it could not start)."""
        if self._thread is not None:
            raise RuntimeError("EmulatorThread already started")
        self._thread = threading.Thread(target=self._run, name="emulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"emulator failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        except BaseException as exc:  # reported to start()
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop = asyncio.Event()
        runner, self._emulator = await _start(self.settings, self._host, self._port, self._clock)
        self._loop = loop
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()
        self._loop = None

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> RunningEmulator:
        if self._emulator is None or self._loop is None:
            raise RuntimeError("EmulatorThread is not running: call start() first")
        return self._emulator

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def endpoint(self) -> str:
        return self.running.endpoint

    @property
    def state(self) -> EmulatorState:
        """The live state; prefer ``call``/``update_faults`` to change it from this thread."""
        return self.running.state

    def call(self, fn: Callable[[EmulatorState], T]) -> T:
        """Run ``fn(state)`` on the emulator's loop and return its result."""
        running, loop = self.running, self._loop
        assert loop is not None

        async def run() -> T:
            return fn(running.state)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=CALL_TIMEOUT)

    def counters(self) -> dict[str, Any]:
        """A snapshot of the counters."""
        return self.call(lambda s: s.counters_snapshot())

    def update_faults(self, **changes: Any) -> FaultSettings:
        """Change fault settings at run time."""
        return self.call(lambda s: s.update_faults(changes))

    def forget_tasks(self) -> int:
        """Forget every task, as if all had expired."""
        return self.call(lambda s: s.forget_tasks())

    def __repr__(self) -> str:
        where = self._emulator.url if self._emulator else "not started"
        return f"EmulatorThread({where})"
