"""Pure decisions, as tables: poll verdicts, the poll deadline, resume routing, the run's outcome and
exit code, which failures are the run's fault, and the failure watch."""

from __future__ import annotations

import math

import pytest

from pipeline.core.errors import (
    AuthError,
    BadResponse,
    EndpointError,
    InvalidParameter,
    PollTimeout,
    RateLimited,
    ServerError,
    ServiceError,
    ServiceUnreachable,
    TaskFailed,
    TaskNotExist,
    TransportError,
)
from pipeline.core.exit_codes import ExitCode
from pipeline.core.outcome import RunOutcome, Stop, StopReason, decide, is_run_fault
from pipeline.engine.decisions import (
    PollJudgement,
    PollVerdict,
    ResumeRoute,
    judge_poll,
    next_poll_at,
    poll_timeout,
    route_resumed,
)
from pipeline.engine.shutdown import FailureWatch
from pipeline.service.client import ApiResponse
from pipeline.state.checkpoint import PendingTask


def answer(status: str, **result: object) -> ApiResponse:
    return ApiResponse(http_status=200, request_id="req-7", latency=3,
                       result={"task_id": "t", "status": status, **result}, usage=None)


# ---- judge_poll ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        ("PENDING", PollVerdict.PENDING),
        ("RUNNING", PollVerdict.PENDING),
        ("pending", PollVerdict.PENDING),
        ("SUCCESS", PollVerdict.SUCCESS),
        ("success", PollVerdict.SUCCESS),
    ],
)
def test_running_and_success_answers(status, verdict):
    """PENDING/RUNNING (any case) means poll again; SUCCESS means write the result; neither carries an error."""
    judgement = judge_poll(answer(status), None, resubmits=0)
    assert judgement == PollJudgement(verdict)


def test_failed_answer_carries_the_services_message():
    """FAILED becomes a TaskFailed with the service's message, HTTP status and request id."""
    judgement = judge_poll(answer("FAILED", error="corrupt image"), None, resubmits=0)
    assert judgement.verdict is PollVerdict.FAILED
    err = judgement.error
    assert isinstance(err, TaskFailed)
    assert (err.code, err.message, err.http_status, err.request_id) == ("TaskFailed", "corrupt image", 200, "req-7")


def test_failed_answer_without_a_message_still_says_why():
    """A FAILED answer with no error text gets a message saying the service reported FAILED."""
    err = judge_poll(answer("FAILED"), None, resubmits=0).error
    assert isinstance(err, TaskFailed) and "FAILED" in err.message


@pytest.mark.parametrize(("status", "extra"), [("CANCELLED", {}), ("", {}), ("WEIRD", {"error": "huh"})])
def test_unknown_status_is_a_failure_naming_it(status, extra):
    """A status the protocol does not know ends the task as FAILED, and the message names the status."""
    judgement = judge_poll(answer(status, **extra), None, resubmits=0)
    assert judgement.verdict is PollVerdict.FAILED
    assert isinstance(judgement.error, TaskFailed)
    assert f"unknown task status {status!r}" in judgement.error.message
    if extra:
        assert "huh" in judgement.error.message


def test_missing_status_field_is_a_failure():
    """A result with no status at all is not mistaken for PENDING or SUCCESS."""
    response = ApiResponse(http_status=200, request_id=None, latency=None, result={"task_id": "t"}, usage=None)
    assert judge_poll(response, None, resubmits=0).verdict is PollVerdict.FAILED


@pytest.mark.parametrize(
    ("error", "verdict", "pause_group"),
    [
        (RateLimited("Throttling", "slow down", http_status=429, retry_after=2.0), PollVerdict.RETRY, True),
        (RateLimited("Throttling", "slow down", http_status=429), PollVerdict.RETRY, False),
        (ServerError("InternalServerError", "oops", http_status=500), PollVerdict.RETRY, False),
        (ServerError("InternalServerError", "busy", http_status=503, retry_after=1.0), PollVerdict.RETRY, False),
        (TransportError("Timeout", "no answer"), PollVerdict.RETRY, False),
        (TransportError("ConnectionError", "reset"), PollVerdict.RETRY, False),
        (InvalidParameter("InvalidParameter", "bad", http_status=400), PollVerdict.FAILED, False),
        (BadResponse("BadResponse", "no task id"), PollVerdict.FAILED, False),
    ],
)
def test_poll_errors(error, verdict, pause_group):
    """A transient poll error means poll again (only a 429 with Retry-After pauses the group); a
    permanent one fails the task with that error."""
    judgement = judge_poll(None, error, resubmits=0)
    assert judgement == PollJudgement(verdict, error, pause_group=pause_group)


@pytest.mark.parametrize(("resubmits", "verdict"), [(0, PollVerdict.RESUBMIT), (1, PollVerdict.FAILED),
                                                    (2, PollVerdict.FAILED)])
def test_a_lost_task_is_resubmitted_once(resubmits, verdict):
    """TaskNotExist resubmits a task that was never resubmitted; a second loss is a failure with that error."""
    lost = TaskNotExist("BadRequest.TaskNotExist", "no such task", http_status=400)
    judgement = judge_poll(None, lost, resubmits=resubmits)
    assert judgement.verdict is verdict
    assert judgement.error is lost
    assert not judgement.pause_group


@pytest.mark.parametrize("fatal", [AuthError("Unauthorized", "bad key", http_status=401),
                                   EndpointError("UnexpectedStatus", "redirect", http_status=301),
                                   ServiceUnreachable("ServiceUnreachable", "refused")])
def test_fatal_errors_are_not_a_verdict(fatal):
    """A fatal error is not an outcome of the task: judge_poll raises it for the run to stop."""
    with pytest.raises(type(fatal)) as info:
        judge_poll(None, fatal, resubmits=0)
    assert info.value is fatal


# ---- next_poll_at and poll_timeout --------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "delay", "deadline", "expected"),
    [
        (10.0, 2.0, 100.0, 12.0),  # well before the deadline: now + delay
        (10.0, 0.0, 100.0, 10.0),
        (10.0, 2.0, math.inf, 12.0),  # no deadline
        (99.0, 2.0, 100.0, 100.0),  # would pass it: one last poll right at it
        (98.0, 2.0, 100.0, 100.0),  # lands exactly on it
        (99.999, 30.0, 100.0, 100.0),
        (100.0, 2.0, 100.0, None),  # at the deadline: timed out
        (150.0, 2.0, 100.0, None),  # past it
    ],
)
def test_next_poll_at(now, delay, deadline, expected):
    """The next poll is now + delay, capped at the deadline, and None once the deadline is reached."""
    assert next_poll_at(now, delay, deadline) == expected


def test_poll_timeout_names_the_task_and_how_to_continue():
    """The timeout error is a PollTimeout with its code, naming the task id and `--retry-failed`."""
    err = poll_timeout("task-42")
    assert isinstance(err, PollTimeout)
    assert err.code == "PollTimeout" and err.http_status is None
    assert "task-42" in err.message and "--retry-failed" in err.message


# ---- route_resumed ------------------------------------------------------------------------


def row(state: str, task_id: str | None, error_code: str | None = None) -> PendingTask:
    return PendingTask(key="item-1", state=state, task_id=task_id, submitted_at=1.0 if task_id else None,
                       attempts=1, resubmits=0, error_code=error_code)


@pytest.mark.parametrize(
    ("pending", "route"),
    [
        (row("submitted", "t-1"), ResumeRoute.POLL),  # accepted and paid for: never submit again
        (row("retry", "t-1", "PollTimeout"), ResumeRoute.POLL),  # --retry-failed of a timed-out task
        (row("retry", None, "PollTimeout"), ResumeRoute.QUEUE),  # no task id: nothing to poll
        (row("retry", None, "InternalServerError"), ResumeRoute.QUEUE),
        (row("retry", "t-1", "TaskFailed"), ResumeRoute.QUEUE),  # the task ended: submit again
        (row("retry", "t-1", "BadRequest.TaskNotExist"), ResumeRoute.QUEUE),
        (row("retry", None), ResumeRoute.QUEUE),
        (row("queued", None), ResumeRoute.QUEUE),
        (row("submitted", None), ResumeRoute.QUEUE),
        (row("submitted", ""), ResumeRoute.QUEUE),
    ],
)
def test_route_resumed(pending, route):
    """A checkpoint row is polled only when it holds a task id that is still live (submitted, or
    retried after a PollTimeout); every other unfinished row is queued for submission."""
    assert route_resumed(pending) is route


# ---- outcome.decide -----------------------------------------------------------------------


STOP_CODES = {
    StopReason.INTERRUPTED: ExitCode.INTERRUPTED,
    StopReason.TIME_LIMIT: ExitCode.INTERRUPTED,
    StopReason.UNREACHABLE: ExitCode.INTERRUPTED,
    StopReason.AUTH: ExitCode.AUTH,
    StopReason.OSS_AUTH: ExitCode.AUTH,
    StopReason.THRESHOLD: ExitCode.THRESHOLD,
    StopReason.SPEND_CAP: ExitCode.SPEND_CAP,
}
#: The stops that cancel creates already on the wire: every further call would fail alike.
#: OSS refusing its key pair is not one: the service may still accept what was sent to it.
IMMEDIATE = {StopReason.AUTH, StopReason.UNREACHABLE}


@pytest.mark.parametrize(("reason", "code"), STOP_CODES.items())
def test_every_stop_reason_has_its_exit_code(reason, code):
    """A stop decides the outcome whatever the counts: STOPPED with the reason's exit code."""
    assert reason.exit_code is code
    for failed, rejected in ((0, 0), (3, 0), (0, 2)):
        assert decide(Stop(reason, "detail"), failed=failed, rejected=rejected) == (RunOutcome.STOPPED, code)


def test_only_a_refused_api_key_or_an_unreachable_service_cancels_creates_on_the_wire():
    """An OSS key pair refused mid-run waits for the service's creates already sent (their task ids
    are recorded), unlike a refused API key or an unreachable service."""
    assert {reason for reason in StopReason if reason.immediate} == IMMEDIATE


def test_stop_reason_table_is_complete():
    """Every StopReason is in the table above, so a new reason cannot go without its exit code being pinned."""
    assert set(STOP_CODES) == set(StopReason)


@pytest.mark.parametrize(
    ("failed", "rejected", "expected"),
    [
        (0, 0, (RunOutcome.COMPLETED, ExitCode.OK)),
        (1, 0, (RunOutcome.COMPLETED_WITH_FAILURES, ExitCode.PARTIAL)),
        (0, 1, (RunOutcome.COMPLETED_WITH_FAILURES, ExitCode.PARTIAL)),
        (5, 7, (RunOutcome.COMPLETED_WITH_FAILURES, ExitCode.PARTIAL)),
    ],
)
def test_finished_run_outcome(failed, rejected, expected):
    """A run that was not stopped exits 0 only when nothing failed and no line was rejected, else 1."""
    outcome, code = decide(None, failed=failed, rejected=rejected)
    assert (outcome, code) == expected
    assert int(code) == (0 if expected[0] is RunOutcome.COMPLETED else 1)


# ---- outcome.is_run_fault -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (ServerError("InternalServerError", "oops", http_status=500), True),
        (ServerError("ServiceUnavailable", "busy", http_status=503), True),
        (RateLimited("Throttling", "slow", http_status=429), True),
        (TransportError("Timeout", "no answer"), True),
        (TransportError("ConnectionError", "reset"), True),
        (InvalidParameter("InvalidParameter", "bad field", http_status=400), False),
        (TaskNotExist("BadRequest.TaskNotExist", "gone", http_status=400), False),
        (TaskFailed("TaskFailed", "corrupt", http_status=200), False),
        (TaskFailed("TaskFailed", "corrupt"), False),
        (PollTimeout("PollTimeout", "still pending"), False),
        (InvalidParameter("FileError", "unreadable"), False),
        (ServerError("UnreadableResponse", "an HTML page", http_status=200), True),
        (BadResponse("BadResponse", "no task id", http_status=200), False),
    ],
)
def test_is_run_fault(error: ServiceError, fault: bool):
    """5xx, 429 and transport failures (no status) mean the run is broken; a bad item's own errors do not."""
    assert is_run_fault(error.code, error.http_status) is fault


# ---- shutdown.FailureWatch ----------------------------------------------------------------


def test_watch_trips_only_on_run_faults():
    """Bad items never trip the watch; more than max_ratio of the window being run faults does."""
    watch = FailureWatch(window=10, max_ratio=0.5)
    for _ in range(50):
        assert watch.record(False) is None
    results = [watch.record(True) for _ in range(6)]
    assert results[:5] == [None] * 5  # 5 of 10 is not more than half
    assert results[5] is not None
    assert "6 of the last 10" in results[5]


def test_watch_counts_only_the_last_window():
    """Old run faults slide out of the window: alternating faults at 50 % never trip a 0.5 watch."""
    watch = FailureWatch(window=4, max_ratio=0.5)
    assert all(watch.record(i % 2 == 0) is None for i in range(100))


def test_watch_state_survives_a_resume():
    """state() restores the window in a new watch: the next session trips where one long session would have."""
    first = FailureWatch(window=10, max_ratio=0.5)
    for fault in [False, True, True, True, True, True]:
        assert first.record(fault) is None
    saved = first.state()
    assert saved == "011111"
    resumed = FailureWatch(window=10, max_ratio=0.5, state=saved)
    assert resumed.state() == saved
    assert resumed.record(True) is not None  # 6 of 10: trips at once
    fresh = FailureWatch(window=10, max_ratio=0.5)
    assert fresh.record(True) is None  # without the state it would not have


def test_watch_state_keeps_only_the_window():
    """A saved state longer than the window (e.g. the window was made smaller) keeps only its newest entries."""
    watch = FailureWatch(window=3, max_ratio=0.5, state="1111000")
    assert watch.state() == "000"
    assert watch.record(True) is None
    assert watch.record(True) is not None


def test_a_window_raised_after_zero_starts_empty():
    """A watch that was off (window 0) saves nothing that a later, larger window would inherit."""
    off = FailureWatch(window=0, max_ratio=0.5, state="1111")
    assert off.state() == ""


def test_window_zero_never_trips():
    """window 0 turns the watch off: even every item failing for run faults never trips it."""
    watch = FailureWatch(window=0, max_ratio=0.5)
    assert all(watch.record(True) is None for _ in range(1000))
    resumed = FailureWatch(window=0, max_ratio=0.5, state="1" * 50)
    assert resumed.record(True) is None

