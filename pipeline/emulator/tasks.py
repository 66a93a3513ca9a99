"""The async task life cycle: PENDING until its ready time, then SUCCESS or FAILED.

A task's outcome (data and usage, or an error) is fixed when it is created; the store only
decides, from the clock, whether it is still PENDING. Lookups are scoped: a task id is known
only on the capability, service id and workspace that created it. With a TTL, a task is
forgotten ``ttl`` after it finished, exactly like an expired id on the real service.
"""

from __future__ import annotations

import heapq
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any


class TaskStatus(str, Enum):
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


@dataclass(slots=True)
class Task:
    """One submitted task and its predetermined outcome."""

    task_id: str
    capability: str
    service_id: str
    workspace: str
    created_at: float  # clock time of the create
    ready_at: float  # clock time it stops being PENDING: when the task really ends
    outcome: TaskStatus  # SUCCESS or FAILED, reached at ready_at
    data: Any = None  # result.data on SUCCESS
    usage: dict[str, Any] | None = None  # usage on SUCCESS
    error: str | None = None  # result.error on FAILED
    delivered: bool = False  # a client has been sent the final status
    seen_done_at: float | None = None  # clock time of the first answer that carried the final status
    source: str | None = None  # input.oss or input.url of the create, when it had one

    def status(self, now: float) -> TaskStatus:
        return TaskStatus.PENDING if now < self.ready_at else self.outcome

    def result(self, now: float) -> dict[str, Any]:
        """The ``result`` object of a task-status response."""
        status = self.status(now)
        result: dict[str, Any] = {"task_id": self.task_id, "status": status.value}
        if status is TaskStatus.SUCCESS:
            result["data"] = self.data
        elif status is TaskStatus.FAILED:
            result["error"] = self.error
        return result


class TaskStore:
    """Tasks by id, with optional expiry ``ttl`` (real seconds) after they finish."""

    __slots__ = ("_expiry", "_tasks", "ttl")

    def __init__(self, ttl: float | None = None) -> None:
        self.ttl = ttl  # real seconds a finished task stays known; None = forever
        self._tasks: dict[str, Task] = {}  # task id -> task
        self._expiry: list[tuple[float, str]] = []  # heap of (expires_at, task id) when ttl set

    def __len__(self) -> int:
        return len(self._tasks)

    def add(
        self,
        *,
        capability: str,
        service_id: str,
        workspace: str,
        now: float,
        duration: float,
        outcome: TaskStatus,
        data: Any = None,
        usage: dict[str, Any] | None = None,
        error: str | None = None,
        source: str | None = None,
    ) -> Task:
        """Create a task that finishes ``duration`` real seconds from ``now``."""
        self.expire(now)
        task = Task(
            task_id=str(uuid.uuid4()),
            capability=capability,
            service_id=service_id,
            workspace=workspace,
            created_at=now,
            ready_at=now + duration,
            outcome=outcome,
            data=data,
            usage=usage,
            error=error,
            source=source,
        )
        self._tasks[task.task_id] = task
        if self.ttl is not None:
            heapq.heappush(self._expiry, (task.ready_at + self.ttl, task.task_id))
        return task

    def get(
        self, task_id: str, *, capability: str, service_id: str, workspace: str, now: float
    ) -> Task | None:
        """The task, or None when unknown, expired, or created on another route."""
        self.expire(now)
        task = self._tasks.get(task_id)
        if task is None or (task.capability, task.service_id, task.workspace) != (
            capability,
            service_id,
            workspace,
        ):
            return None
        return task

    def expire(self, now: float) -> int:
        """Drop tasks whose TTL has run out; returns how many."""
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, task_id = heapq.heappop(self._expiry)
            if self._tasks.pop(task_id, None) is not None:
                dropped += 1
        return dropped

    def forget(self, task_ids: list[str] | None = None) -> int:
        """Forget the given tasks (all when None); returns how many were known."""
        if task_ids is None:
            count = len(self._tasks)
            self._tasks.clear()
            self._expiry.clear()
            return count
        return sum(self._tasks.pop(t, None) is not None for t in task_ids)

    def status_counts(self, now: float) -> dict[str, int]:
        """Known tasks by their status at ``now``."""
        self.expire(now)
        counts = {s.value: 0 for s in TaskStatus}
        for task in self._tasks.values():
            counts[task.status(now).value] += 1
        return counts
