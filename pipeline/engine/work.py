"""What moves between the stages: a unit's in-flight `Token`, the `TaskHandle` of an accepted
async task, and the `Ending` every unit of work comes to.

An `Ending` is how one (item, analysis) ended in this session, as the stage that saw it end
tells the finisher: a response (SUCCESS), an error (FAILED), or neither (abandoned: dropped by a
stop before the service accepted anything, so no line is written and the item stays to do).
The finisher turns it into the item's one result line and gives back its token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.errors import ServiceError
from ..core.job import Job
from ..service.responses import ApiResponse

__all__ = ["Ending", "TaskHandle", "Token"]


class Token:
    """One in-flight slot of a capability, carried with its unit of work from the moment it is
    taken (`InFlight.take`) to its ending, where the finisher gives it back. A token is given
    back once: a second time is a bug, and raises."""

    __slots__ = ("capability", "held")

    def __init__(self, capability: str) -> None:
        self.capability = capability
        self.held = True

    def __repr__(self) -> str:
        return f"Token({self.capability!r}, held={self.held})"


@dataclass
class TaskHandle:
    """An accepted async task being carried to its end, with the token its unit holds."""

    job: Job
    task_id: str
    submitted_at: float  # wall clock, for the result line
    started: float  # the poller's clock, for delays and the deadline
    token: Token | None = None
    attempts: int = 1
    resubmits: int = 0
    polls: int = 0
    pending_polls: int = 0  # PENDING answers so far
    errors: int = 0  # retryable poll failures in a row
    deadline: float = math.inf
    last_look: float = -math.inf  # the poller's clock at its last answer (its start before any)
    due: int = -1  # sequence number of its live heap entry (-1: none, e.g. being polled)

    def __post_init__(self) -> None:
        if self.last_look == -math.inf:
            self.last_look = self.started

    @classmethod
    def recorded(cls, job: Job, task_id: str, submitted_at: float | None, *, token: Token | None, attempts: int,
                 resubmits: int, wall_now: float, clock_now: float) -> TaskHandle:
        """The handle of a task recorded at wall time `submitted_at` (just now, or by an earlier
        session): its clock start is as long ago as the task was submitted, so its first poll and
        its deadline count from the submit, not from when this session found it."""
        age = max(0.0, wall_now - submitted_at) if submitted_at else 0.0
        return cls(job, task_id, submitted_at or wall_now, clock_now - age, token, attempts, resubmits)


@dataclass(frozen=True, slots=True)
class Ending:
    """How one unit of work ended (see the module docstring); `token` is the in-flight slot it
    held (None: it never took one, e.g. a chained analysis whose parent failed)."""

    job: Job
    token: Token | None
    outcome: ApiResponse | ServiceError | None
    task_id: str | None = None
    attempts: int = 1
    polls: int = 0
    submitted_at: float | None = None

    @property
    def abandoned(self) -> bool:
        """Dropped by a stop before anything was accepted: no line, the item stays to do."""
        return self.outcome is None

    @classmethod
    def of_task(cls, handle: TaskHandle, outcome: ApiResponse | ServiceError) -> Ending:
        """A polled task's end: its final answer (SUCCESS) or why it failed."""
        return cls(handle.job, handle.token, outcome, handle.task_id, handle.attempts, handle.polls,
                   handle.submitted_at)

    @classmethod
    def dropped(cls, job: Job, token: Token | None) -> Ending:
        """Abandoned: the stop came before the service accepted anything of it."""
        return cls(job, token, None)
