"""A TCP gate for outage tests: a forwarder on a fixed 127.0.0.1 port in front of a local
server, which can refuse connections (and cut those through it) and open again on the same
port, so "the same command" reaches the server once it is back."""

from __future__ import annotations

import asyncio
import contextlib


class Gate:
    """A TCP forwarder on a fixed 127.0.0.1 port in front of the emulator: open, or shut (the
    port refuses connections and the connections through it are cut), and open again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._forwards: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Gate:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Shut, and wait until every connection through the gate is closed (none is left to the GC)."""
        self.shut()
        if self._forwards:
            await asyncio.wait(self._forwards, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def shut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._forwards.add(task)
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                if end is not None:
                    end.close()
                    with contextlib.suppress(OSError):
                        await end.wait_closed()
                    self._writers.discard(end)
            self._forwards.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()
