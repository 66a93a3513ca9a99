"""Serving the emulator's OSS app on its own port, in the current event loop.

async with start_oss(OssSettings(key_id=..., key_secret=...)) as oss:   # oss.url, oss.store
    ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from .oss import OSS_STATE, OssSettings, OssState, create_oss_app
from .oss_store import ObjectStore

__all__ = ["RunningOss", "start_oss"]

SHUTDOWN_TIMEOUT = 1.0  # seconds in-flight requests get when the server stops


class RunningOss:
    """A started OSS emulator: where it listens, its store and its live state."""

    __slots__ = ("host", "port", "state")

    def __init__(self, host: str, port: int, state: OssState) -> None:
        self.host = host
        self.port = port
        self.state = state

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``: the SDK's endpoint, with path-style addressing."""
        return f"http://{self.host}:{self.port}"

    @property
    def store(self) -> ObjectStore:
        """The objects it holds (``store.get(bucket, key) -> Path | None``)."""
        return self.state.store

    @property
    def settings(self) -> OssSettings:
        return self.state.settings

    def __repr__(self) -> str:
        return f"RunningOss(url={self.url!r})"


@asynccontextmanager
async def start_oss(
    settings: OssSettings | None = None, host: str = "127.0.0.1", port: int = 0, *, store: ObjectStore | None = None
) -> AsyncIterator[RunningOss]:
    """Serve the OSS subset on ``host:port`` (0 = a free port) for the duration of the block.

    Pass ``store`` to share one :class:`ObjectStore` with the service routes; otherwise the
    app makes its own, in a temp dir removed on exit.
    """
    app = create_oss_app(settings, store)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
        yield RunningOss(host, bound, app[OSS_STATE])
    finally:
        await runner.cleanup()
