"""Small local endpoints that misbehave on demand, one way at a time, for the endpoint-fault tests.

`HttpEndpoint` stands in for a Healthchecks ping URL or a Pushgateway; `RedisProxy` sits in front
of a real redis-server. Both listen on one fixed 127.0.0.1 port for their whole life, so a run
given their URL meets whatever `fault` is set, and meets the healthy endpoint again after `heal()`.
Faults are raw socket behaviours (a refused port, no byte back, a trickle, a dropped connection)
or protocol answers (HTTP 500 / 401 / a 200 that is no answer; Redis -ERR / -NOAUTH / bytes that
are not RESP), the same table for every endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from enum import Enum

__all__ = ["Fault", "FaultyEndpoint", "HttpEndpoint", "HttpRequest", "RedisProxy"]

#: Seconds between two bytes of a slow answer: each byte comes well within any per-read timeout,
#: the answer far past any total one (an HTTP answer never ends; a Redis reply takes seconds).
TRICKLE = 0.5


class Fault(str, Enum):
    """One way an endpoint misbehaves."""

    REFUSED = "refused"  # nothing listens on the port
    HANG = "hang"  # the request is read and no byte ever comes back
    SLOW = "slow"  # the answer trickles in, one byte every TRICKLE seconds
    DROPPED = "dropped"  # the request is read, then the connection is closed without an answer
    ERROR = "error"  # a server error: HTTP 500, a Redis -ERR reply
    GARBAGE = "garbage"  # HTTP: a 200 whose body is no answer; Redis: bytes that are not its protocol
    AUTH = "auth"  # the credentials are refused: HTTP 401, Redis NOAUTH


class FaultyEndpoint:
    """A TCP endpoint on a fixed 127.0.0.1 port; subclasses say what healthy and faulty mean."""

    def __init__(self) -> None:
        self.port = 0
        self.fault: Fault | None = None
        self.faulty_connections = 0  # connections that met a fault: proof the fault bit
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FaultyEndpoint:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._shut()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    async def open(self) -> None:
        """Listen (again) on the endpoint's port."""
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def set_fault(self, fault: Fault) -> None:
        """Misbehave from now on. Live connections meet a hang, a trickle or a drop where they
        are; for a refused port or a protocol answer they are cut, so the client reconnects into it."""
        self.fault = fault
        if fault is Fault.REFUSED:
            self._shut()
        elif fault not in (Fault.HANG, Fault.SLOW, Fault.DROPPED):
            self._cut()

    async def heal(self) -> None:
        """Behave again, on the same port; connections that met the fault are cut."""
        self.fault = None
        self._cut()
        await self.open()

    def _shut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._cut()

    def _cut(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            fault = self.fault
            if fault is None:
                await self.serve(reader, writer)
            else:
                self.faulty_connections += 1
                await self.misbehave(fault, reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client gave up, or the connection was cut: what these endpoints are for
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def misbehave(self, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Read and ignore until the client closes: no byte goes back."""
    while await reader.read(65536):
        pass


async def _trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(TRICKLE)  # the fault itself: a byte at a time


@dataclass(frozen=True)
class HttpRequest:
    """One request an HttpEndpoint answered while healthy."""

    method: str
    path: str
    query: str
    authorization: str | None
    body: bytes


class HttpEndpoint(FaultyEndpoint):
    """A Healthchecks ping URL or Pushgateway stand-in: 200 to every request while healthy."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[HttpRequest] = []

    def url(self, path: str = "", userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"

    @staticmethod
    async def _request(reader: asyncio.StreamReader) -> HttpRequest:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        path, _, query = target.partition("?")
        return HttpRequest(method, path, query, headers.get("authorization"), body)

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: str, body: bytes = b"OK", *extra: str) -> None:
        head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *extra]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.received.append(await self._request(reader))
        await self._answer(writer, "200 OK")

    async def misbehave(self, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._request(reader)
        if fault is Fault.HANG:
            await _until_closed(reader)
        elif fault is Fault.SLOW:  # a status line, then headers that never end
            await _trickle(writer, b"HTTP/1.1 200 OK\r\n" + b"X-Pad: 0\r\n" * 10_000)
        elif fault is Fault.ERROR:
            await self._answer(writer, "500 Internal Server Error", b"internal error")
        elif fault is Fault.GARBAGE:
            await self._answer(writer, "200 OK", b"\x00\xff<html>not what you asked for", "Content-Type: text/html")
        elif fault is Fault.AUTH:
            await self._answer(writer, "401 Unauthorized", b"unauthorized", 'WWW-Authenticate: Basic realm="x"')
        # DROPPED: the request was read; closing now is the fault


#: What Redis (or whatever took its port) answers each command under a protocol fault.
REDIS_ANSWERS = {Fault.ERROR: b"-ERR injected fault: internal error\r\n",
                 Fault.AUTH: b"-NOAUTH Authentication required.\r\n",
                 Fault.GARBAGE: b"HTTP/1.1 400 Bad Request\r\n\r\n"}


class RedisProxy(FaultyEndpoint):
    """A relay to a real redis-server, command by command, that counts the bookings (EVALSHA)
    it forwards. Replies go back in command order, whether Redis or a fault gives them."""

    def __init__(self, upstream: int) -> None:
        super().__init__()
        self.upstream = upstream
        self.bookings = 0  # EVALSHA commands relayed to Redis

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def set_fault(self, fault: Fault) -> None:
        """As `FaultyEndpoint.set_fault`, but a server error reaches live connections too (Redis
        answers -ERR on a connection it already has, e.g. out of memory or loading)."""
        self.fault = fault
        if fault is Fault.REFUSED:
            self._shut()
        elif fault in (Fault.AUTH, Fault.GARBAGE):  # a restart with a password, or another server on the port
            self._cut()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers.add(up_writer)
        order: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: Redis answers; bytes: the fault does
        tasks = [asyncio.create_task(self._upward(reader, up_writer, writer, order)),
                 asyncio.create_task(self._downward(up_reader, writer, order))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up_writer.close()
            self._writers.discard(up_writer)

    async def _upward(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, down: asyncio.StreamWriter,
                      order: asyncio.Queue[bytes | None]) -> None:
        while True:
            command = await _command(reader)
            if command.split(b"\r\n", 3)[2:3] == [b"EVALSHA"]:
                self.bookings += 1
            fault = self.fault
            if fault in REDIS_ANSWERS:
                self.faulty_connections += 1
                order.put_nowait(REDIS_ANSWERS[fault])
                continue
            up.write(command)
            await up.drain()
            if fault is Fault.DROPPED:  # the request went through; its answer never comes back
                self.faulty_connections += 1
                down.close()
                return
            order.put_nowait(None)

    async def _downward(self, up: asyncio.StreamReader, down: asyncio.StreamWriter,
                        order: asyncio.Queue[bytes | None]) -> None:
        while True:
            answer = await order.get()
            data = await _reply(up) if answer is None else answer
            if self.fault is Fault.HANG:
                self.faulty_connections += 1
                continue  # the answer is swallowed: the client waits for a byte that never comes
            if self.fault is Fault.SLOW:
                await _trickle(down, data)
            else:
                down.write(data)
                await down.drain()

    async def misbehave(self, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if fault is Fault.HANG:
            await _until_closed(reader)
        elif fault is Fault.DROPPED:
            await _command(reader)
        else:  # SLOW trickles every answer, the others answer every command themselves
            await self.serve(reader, writer)


async def _command(reader: asyncio.StreamReader) -> bytes:
    """One RESP command: an array of bulk strings, or an inline command line."""
    line = await reader.readuntil(b"\r\n")
    if not line.startswith(b"*"):
        return line
    parts = [line]
    for _ in range(int(line[1:-2])):
        header = await reader.readuntil(b"\r\n")
        parts += [header, await reader.readexactly(int(header[1:-2]) + 2)]
    return b"".join(parts)


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One RESP2 or RESP3 reply (redis-py speaks RESP3 once HELLO 3 is answered)."""
    line = await reader.readuntil(b"\r\n")
    kind, size = line[:1], line[1:-2]
    if kind in (b"$", b"!", b"=") and int(size) >= 0:  # blob string, blob error, verbatim string
        return line + await reader.readexactly(int(size) + 2)
    if kind in (b"*", b"~", b">", b"%", b"|") and int(size) > 0:  # arrays, sets, pushes; maps in pairs
        count = int(size) * (2 if kind in (b"%", b"|") else 1)
        body = b"".join([await _reply(reader) for _ in range(count)])
        return line + body + (await _reply(reader) if kind == b"|" else b"")  # an attribute precedes its reply
    return line  # simple string, error, integer, null, double, boolean, big number
