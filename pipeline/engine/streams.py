"""Stream hand-offs without a needless trip through the event loop.

anyio's memory streams yield to the loop on every `send` and `receive`, even when the item can
move at once. At thousands of items a second that is most of the client's CPU (measured by the
client-ceiling benchmark), so the stages move items directly when they can, and wait only
when a stream is full or empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["hand_over", "items_of", "put"]

T = TypeVar("T")


async def put(stream: MemoryObjectSendStream[T], item: T) -> None:
    """Send `item`, waiting only when the stream is full (back-pressure)."""
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


async def hand_over(stream: MemoryObjectSendStream[T], item: T) -> None:
    """Send `item` even while the sender is being cancelled: an ending (a line the service may
    have been paid for) must reach the finisher whatever stops the stage that saw it. It waits
    only when the stream is full, for a finisher that never waits on the sender's stages."""
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        with anyio.CancelScope(shield=True):
            await stream.send(item)


async def items_of(stream: MemoryObjectReceiveStream[T]) -> AsyncIterator[T]:
    """Every item until the senders close, waiting only when the stream is empty."""
    while True:
        try:
            yield stream.receive_nowait()
        except anyio.WouldBlock:
            try:
                yield await stream.receive()
            except anyio.EndOfStream:
                return
        except anyio.EndOfStream:
            return
