"""Pure decisions of a run, kept out of the I/O shell and tested with tables.

- `judge_poll`: what one status answer (or error) means for a task.
- `next_poll_at`: where the next poll goes, given the task's deadline.
- `route_resumed`: what a resumed run does with a checkpoint row it finds unfinished.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..core.errors import (
    PermanentError,
    PollTimeout,
    RateLimited,
    RetryableError,
    ServiceError,
    TaskFailed,
    TaskNotExist,
)
from ..service.responses import ApiResponse
from ..state.checkpoint import PendingTask

__all__ = [
    "PollJudgement",
    "PollVerdict",
    "ResumeRoute",
    "judge_poll",
    "next_poll_at",
    "poll_timeout",
    "route_resumed",
]

#: Status values of a task still running (the protocol says PENDING; RUNNING is tolerated).
RUNNING_STATES = frozenset({"PENDING", "RUNNING"})


class PollVerdict(str, Enum):
    PENDING = "pending"  # poll again later
    RETRY = "retry"  # the poll itself failed transiently: poll again after a backoff
    SUCCESS = "success"  # write the result
    FAILED = "failed"  # write the failure (`error`)
    RESUBMIT = "resubmit"  # the service no longer knows the task: submit the item once more


@dataclass(frozen=True)
class PollJudgement:
    verdict: PollVerdict
    error: ServiceError | None = None
    #: After a 429 with Retry-After, the whole group should pause (the caller decides how long).
    pause_group: bool = False


def judge_poll(response: ApiResponse | None, error: ServiceError | None, *, resubmits: int) -> PollJudgement:
    """One status answer -> what to do. A task the service no longer knows is resubmitted once
    (`resubmits == 0`); a second time it fails with `BadRequest.TaskNotExist`."""
    if error is not None:
        if isinstance(error, TaskNotExist):
            return PollJudgement(PollVerdict.RESUBMIT if resubmits == 0 else PollVerdict.FAILED, error)
        if isinstance(error, RetryableError):
            return PollJudgement(PollVerdict.RETRY, error,
                                 pause_group=isinstance(error, RateLimited) and error.retry_after is not None)
        if isinstance(error, PermanentError):
            return PollJudgement(PollVerdict.FAILED, error)
        raise error  # fatal: not an outcome of this task
    assert response is not None
    status = str(response.result.get("status", "")).upper()
    if status in RUNNING_STATES:
        return PollJudgement(PollVerdict.PENDING)
    if status == "SUCCESS":
        return PollJudgement(PollVerdict.SUCCESS)
    message = response.result.get("error")
    if status != "FAILED":
        message = f"unknown task status {status!r}" + (f": {message}" if message else "")
    return PollJudgement(PollVerdict.FAILED, TaskFailed(
        "TaskFailed", str(message or "the service reported FAILED"), http_status=response.http_status,
        request_id=response.request_id))


def next_poll_at(now: float, delay: float, deadline: float) -> float | None:
    """When to poll next: `now + delay`, but never past the deadline — one last poll right at
    it — and None once the deadline has passed (the task timed out)."""
    if now >= deadline:
        return None
    return min(now + delay, deadline)


def poll_timeout(task_id: str) -> PollTimeout:
    return PollTimeout("PollTimeout", f"task {task_id} still PENDING after the poll timeout; "
                                      "`run --retry-failed` polls it again without resubmitting")


class ResumeRoute(str, Enum):
    POLL = "poll"  # the service accepted it: poll the recorded task, never submit again
    QUEUE = "queue"  # nothing accepted (or the task is gone): submit


def route_resumed(row: PendingTask) -> ResumeRoute:
    """A checkpoint row of an unfinished item -> what a resumed run does with it."""
    if row.task_id and (row.state == "submitted" or row.error_code == "PollTimeout"):
        return ResumeRoute.POLL
    return ResumeRoute.QUEUE

