"""How a request meets the QPS pacer, as both sides see it: the lane it waits in and the permit it
gets. The service client asks for a permit before each attempt; a pacer backend grants it."""

from __future__ import annotations

from enum import Enum
from typing import Protocol

__all__ = ["Lane", "PermitLike"]


class Lane(str, Enum):
    """Which queue of a group's pacer a request waits in."""

    SUBMIT = "submit"
    POLL = "poll"


class PermitLike(Protocol):
    """What a granted slot offers its holder, whichever backend granted it."""

    def answered(self) -> None: ...
