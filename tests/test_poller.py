"""The Poller against a tiny scripted status server on 127.0.0.1 (millisecond poll delays), with and
without spare slots of the group's budget: every task's end leaves on its endings stream, a lost
task goes to the resubmitter it was given."""

from __future__ import annotations

import itertools
import math
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.core.backoff import PollPolicy
from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.errors import AuthError, PollTimeout, ServiceError, ServiceUnreachable, TaskFailed, TaskNotExist
from pipeline.core.job import Job
from pipeline.engine.poller import Poller
from pipeline.engine.work import Ending, TaskHandle, Token
from pipeline.service.client import ApiResponse, ServiceClient

KEY = "poller-test-key"
IMAGE = CAPABILITIES["image_analyze"]
SID = "ops-image-analyze-ocr-001"
JOB = Job(id="item-1", capability=IMAGE.name, service_id=SID, source_kind="url", source="https://example.com/a.jpg")

#: Polls every 5 ms, no jitter, a generous deadline.
FAST = PollPolicy(first_delay=0.005, growth=1.0, max_delay=0.005, jitter=0.0, timeout=5.0)
#: First poll after 10 ms, the next one 10 s later: so the second poll can only be the one the
#: deadline (300 ms) forces.
DEADLINE = PollPolicy(first_delay=0.01, growth=1000.0, max_delay=30.0, jitter=0.0, timeout=0.3)

Answer = tuple[int, dict[str, Any], dict[str, str]]


def status(task_id: str, state: str, **extra: Any) -> Answer:
    return 200, {"request_id": "r", "latency": 1, "result": {"task_id": task_id, "status": state, **extra}}, {}


def error(http_status: int, code: str, headers: dict[str, str] | None = None) -> Answer:
    return http_status, {"request_id": "r", "code": code, "message": f"{code} (scripted)"}, headers or {}


class StatusScript:
    """Answers status polls as scripted per task id (the last answer repeats) and records each poll."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Answer]] = {}
        self.polls: list[tuple[str, float]] = []  # (task id, loop time the poll arrived)
        self.url = ""

    def script(self, task_id: str, *answers: Answer) -> None:
        self.answers[task_id] = list(answers)

    def times(self, task_id: str) -> list[float]:
        return [t for tid, t in self.polls if tid == task_id]

    async def handle(self, request: web.Request) -> web.Response:
        assert request.match_info["segment"] == IMAGE.segment
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        task_id = request.query["task_id"]
        self.polls.append((task_id, anyio.current_time()))
        queue = self.answers[task_id]
        code, body, headers = queue.pop(0) if len(queue) > 1 else queue[0]
        return web.json_response(body, status=code, headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[StatusScript]:
    script = StatusScript()
    app = web.Application()
    app.router.add_get("/v3/openapi/workspaces/default/{segment}/{sid}/async/task-status", script.handle)
    test_server = TestServer(app, host="127.0.0.1", port=0)
    await test_server.start_server()
    script.url = str(test_server.make_url("")).rstrip("/")
    try:
        yield script
    finally:
        await test_server.close()


@pytest.fixture
async def client(server: StatusScript) -> AsyncIterator[ServiceClient]:
    async with ServiceClient(server.url, "default", KEY, timeout=5.0) as c:
        yield c


@dataclass
class Calls:
    """What the poller handed on: its endings, the lost tasks it asked to resubmit, its pauses."""

    endings: list[Ending] = field(default_factory=list)
    lost: list[TaskHandle] = field(default_factory=list)
    pauses: list[float] = field(default_factory=list)
    replacements: dict[str, TaskHandle | Ending] = field(default_factory=dict)  # lost task id -> what again() gives

    async def again(self, lost: TaskHandle) -> TaskHandle | Ending | None:
        self.lost.append(lost)
        return self.replacements.get(lost.task_id)

    @property
    def finished(self) -> list[tuple[str | None, ApiResponse | None, ServiceError | None]]:
        """(task id, response, error) of every ending, in order."""
        return [(e.task_id, e.outcome if isinstance(e.outcome, ApiResponse) else None,
                 e.outcome if isinstance(e.outcome, ServiceError) else None) for e in self.endings]

    def by_task(self) -> dict[str | None, tuple[ApiResponse | None, ServiceError | None]]:
        return {task_id: (response, err) for task_id, response, err in self.finished}


def make_poller(client: ServiceClient, calls: Calls, policy: PollPolicy = FAST) -> Poller:
    return Poller(IMAGE, client, policy, resubmit=calls, pause=calls.pauses.append, rand=lambda: 0.5)


def handle(task_id: str, *, resubmits: int = 0) -> TaskHandle:
    return TaskHandle(job=JOB, task_id=task_id, submitted_at=0.0, started=anyio.current_time(), resubmits=resubmits,
                      token=Token(IMAGE.name))


async def run_to_end(poller: Poller, handles: Sequence[TaskHandle], calls: Calls) -> None:
    """Send `handles`, close the sending side, wait (a few seconds at most) for run() to return,
    and keep the endings it sent in `calls`."""
    send, receive = anyio.create_memory_object_stream[TaskHandle](len(handles) + 1)
    ending_send, endings = anyio.create_memory_object_stream[Ending](math.inf)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller.run, receive, ending_send)
            async with send:
                for h in handles:
                    await send.send(h)
    with endings:
        calls.endings.extend([ending async for ending in endings])  # ends: run() closed its side


# ---- outcomes -----------------------------------------------------------------------------


async def test_success_and_failed_end_on_the_endings_stream(server, client):
    """SUCCESS ends with the response, FAILED with a TaskFailed carrying the service's message, each
    with its handle's token; PENDING answers are polled again; run() returns once the stream is
    closed and both are done."""
    server.script("t-ok", status("t-ok", "PENDING"), status("t-ok", "PENDING"),
                  status("t-ok", "SUCCESS", data={"content": "a cat"}))
    server.script("t-bad", status("t-bad", "FAILED", error="unsupported image"))
    calls = Calls()
    poller = make_poller(client, calls)
    ok, bad = handle("t-ok"), handle("t-bad")
    await run_to_end(poller, [ok, bad], calls)

    outcomes = calls.by_task()
    assert set(outcomes) == {"t-ok", "t-bad"}
    response, err = outcomes["t-ok"]
    assert err is None and response is not None
    assert response.result["data"] == {"content": "a cat"}
    assert (ok.polls, ok.pending_polls) == (3, 2)
    response, err = outcomes["t-bad"]
    assert response is None
    assert isinstance(err, TaskFailed) and err.message == "unsupported image"
    assert (calls.lost, calls.pauses) == ([], [])
    assert poller.tasks == 0
    assert {ending.task_id: ending.token for ending in calls.endings} == {"t-ok": ok.token, "t-bad": bad.token}
    assert all(ending.polls == 3 for ending in calls.endings if ending.task_id == "t-ok")


async def test_deadline_brings_one_last_poll_then_poll_timeout(server, client):
    """A task still PENDING gets one last poll right at its deadline (not later, not skipped), and
    then it ends with a PollTimeout naming the task and no response."""
    server.script("t-slow", status("t-slow", "PENDING"))
    calls = Calls()
    slow = handle("t-slow")
    await run_to_end(make_poller(client, calls, DEADLINE), [slow], calls)

    assert slow.deadline == pytest.approx(slow.started + DEADLINE.timeout)
    first, last = server.times("t-slow")  # exactly two polls: after 10 ms, then at the deadline
    assert first < slow.deadline
    assert slow.deadline <= last < slow.deadline + 5.0  # not 10 s later, where the schedule put it
    [(finished, response, err)] = calls.finished
    assert finished == slow.task_id and response is None
    assert isinstance(err, PollTimeout)
    assert err.code == "PollTimeout" and "t-slow" in err.message


async def test_success_at_the_deadline_poll_is_a_success(server, client):
    """The poll at the deadline counts: a task that finished by then is a SUCCESS, not a PollTimeout."""
    server.script("t-late", status("t-late", "PENDING"), status("t-late", "SUCCESS", data={"n": 1}))
    calls = Calls()
    late = handle("t-late")
    await run_to_end(make_poller(client, calls, DEADLINE), [late], calls)
    assert server.times("t-late")[-1] >= late.deadline
    [(_, response, err)] = calls.finished
    assert err is None and response is not None and response.result["data"] == {"n": 1}


async def test_failing_polls_are_retried_and_a_429_pauses_the_group(server, client):
    """A 429 (with Retry-After) or a 5xx on a poll only delays that poll: the task still ends in
    SUCCESS, and the 429 pauses the group for its Retry-After."""
    server.script("t-busy", error(429, "Throttling", {"Retry-After": "0.004"}),
                  error(500, "InternalServerError"), status("t-busy", "SUCCESS", data={}))
    calls = Calls()
    busy = handle("t-busy")
    await run_to_end(make_poller(client, calls), [busy], calls)
    assert calls.pauses == [pytest.approx(0.004)]
    [(_, response, err)] = calls.finished
    assert err is None and response is not None
    assert busy.polls == 3


async def test_429s_past_the_deadline_never_time_a_task_out(server, client):
    """Polls answered 429 for longer than the poll timeout do not end the task in PollTimeout: the
    deadline judges the task's own answers, so it ends SUCCESS once the service answers again."""
    throttled = error(429, "Throttling.RateQuota", {"Retry-After": "0.02"})
    server.script("t-throttled", *[throttled] * 25, status("t-throttled", "SUCCESS", data={"n": 2}))
    calls = Calls()
    task = handle("t-throttled")
    await run_to_end(make_poller(client, calls, DEADLINE), [task], calls)
    assert server.times("t-throttled")[-1] > task.deadline  # the 429s outlasted the deadline
    [(_, response, err)] = calls.finished
    assert err is None and response is not None and response.result["data"] == {"n": 2}
    assert task.polls == 26


async def test_a_pending_answer_after_429s_past_the_deadline_is_a_poll_timeout(server, client):
    """Once the service answers PENDING again after the deadline, the task times out as usual."""
    throttled = error(429, "Throttling.RateQuota", {"Retry-After": "0.02"})
    server.script("t-late", *[throttled] * 25, status("t-late", "PENDING"))
    calls = Calls()
    await run_to_end(make_poller(client, calls, DEADLINE), [handle("t-late")], calls)
    [(_, response, err)] = calls.finished
    assert response is None and isinstance(err, PollTimeout)


# ---- a lost task --------------------------------------------------------------------------


async def test_task_not_exist_is_resubmitted_and_the_replacement_polled(server, client):
    """BadRequest.TaskNotExist hands the task to the resubmitter, and the handle it returns (a new
    submission) is polled to its end instead."""
    server.script("t-lost", error(400, "BadRequest.TaskNotExist"))
    server.script("t-new", status("t-new", "SUCCESS", data={"again": True}))
    calls = Calls()
    lost, new = handle("t-lost"), handle("t-new", resubmits=1)
    calls.replacements["t-lost"] = new
    await run_to_end(make_poller(client, calls), [lost], calls)

    assert calls.lost == [lost]
    [(finished, response, err)] = calls.finished
    assert finished == new.task_id and err is None
    assert response is not None and response.result["data"] == {"again": True}
    assert len(server.times("t-lost")) == 1
    assert len(server.times("t-new")) == 1


async def test_a_second_loss_is_a_failure(server, client):
    """A replacement that is lost too (resubmits=1) is not resubmitted again: it ends with TaskNotExist."""
    server.script("t-lost", error(400, "BadRequest.TaskNotExist"))
    server.script("t-new", error(400, "BadRequest.TaskNotExist"))
    calls = Calls()
    new = handle("t-new", resubmits=1)
    calls.replacements["t-lost"] = new
    await run_to_end(make_poller(client, calls), [handle("t-lost")], calls)
    assert [h.task_id for h in calls.lost] == ["t-lost"]
    [(finished, response, err)] = calls.finished
    assert finished == new.task_id and response is None
    assert isinstance(err, TaskNotExist)


async def test_a_resubmission_that_ends_at_once_is_handed_on(server, client):
    """When the resubmission itself ends (its create failed), that ending, with the lost task's
    token, leaves on the endings stream and nothing more is polled."""
    server.script("t-lost", error(400, "BadRequest.TaskNotExist"))
    calls = Calls()
    lost = handle("t-lost")
    failed = Ending(JOB, lost.token, TaskFailed("InvalidParameter", "refused on resubmit"), attempts=1)
    calls.replacements["t-lost"] = failed
    poller = make_poller(client, calls)
    await run_to_end(poller, [lost], calls)
    assert calls.endings == [failed] and calls.endings[0].token is lost.token
    assert len(server.times("t-lost")) == 1 and poller.tasks == 0


async def test_lost_task_without_replacement_just_ends(server, client):
    """When the resubmitter returns None (the run stops) the task is dropped: no ending, and run()
    still returns."""
    server.script("t-lost", error(400, "BadRequest.TaskNotExist"))
    calls = Calls()
    poller = make_poller(client, calls)
    await run_to_end(poller, [handle("t-lost")], calls)
    assert len(calls.lost) == 1
    assert calls.finished == []
    assert poller.tasks == 0


# ---- fatal errors end the run -------------------------------------------------------------


async def test_fatal_error_from_a_poll_ends_run_with_it(server, client):
    """A 401 on any poll ends run() with the AuthError, even while the stream is still open and
    other tasks are still pending; nothing ends, and run() closes its endings stream."""
    server.script("t-slow", status("t-slow", "PENDING"))
    server.script("t-auth", error(401, "Unauthorized"))
    calls = Calls()
    send, receive = anyio.create_memory_object_stream[TaskHandle](4)
    ending_send, endings = anyio.create_memory_object_stream[Ending](math.inf)
    async with send:  # stays open: run() must not wait for it
        await send.send(handle("t-slow"))
        await send.send(handle("t-auth"))
        with anyio.fail_after(10), pytest.raises(AuthError) as info:
            await make_poller(client, calls).run(receive, ending_send)
    assert info.value.http_status == 401
    with endings:
        assert [ending async for ending in endings] == []


async def test_unreachable_service_ends_run_with_service_unreachable():
    """A poll that cannot connect at all (a closed port on 127.0.0.1) ends run() with ServiceUnreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    calls = Calls()
    ending_send, endings = anyio.create_memory_object_stream[Ending](math.inf)
    async with ServiceClient(f"http://127.0.0.1:{port}", "default", KEY) as dead:
        send, receive = anyio.create_memory_object_stream[TaskHandle](1)
        async with send:
            await send.send(handle("t-1"))
            with anyio.fail_after(10), pytest.raises(ServiceUnreachable):
                await make_poller(dead, calls).run(receive, ending_send)
    with endings:
        assert [ending async for ending in endings] == []


# ---- spare slots (work-conserving polling) --------------------------------------------------

#: The scheduled first poll is 10 s away: any poll within the test's first second is a spare one.
SLOW = PollPolicy(first_delay=10.0, growth=1.0, max_delay=10.0, jitter=0.0, timeout=30.0)
SPARE_FLOOR = 0.02


class Spare:
    """A group whose budget is idle (`spare_at` now) or busy (None), with a 1 ms grid."""

    interval = 0.001

    def __init__(self, idle: bool) -> None:
        self.idle = idle

    def spare_at(self) -> float | None:
        return anyio.current_time() if self.idle else None


def spare_poller(client: ServiceClient, calls: Calls, idle: bool) -> Poller:
    return Poller(IMAGE, client, SLOW, resubmit=calls, pause=calls.pauses.append, rand=lambda: 0.5,
                  spare=Spare(idle), spare_floor=SPARE_FLOOR)


async def test_idle_budget_is_spent_on_polls_no_faster_than_the_floor(server, client):
    """With the budget idle, a task is polled in spare slots long before its scheduled poll, found
    done, and no two of its polls arrive within the floor."""
    server.script("t-1", status("t-1", "PENDING"), status("t-1", "PENDING"), status("t-1", "PENDING"),
                  status("t-1", "SUCCESS", data={}))
    calls = Calls()
    poller = spare_poller(client, calls, idle=True)
    task = handle("t-1")
    with anyio.fail_after(2):
        await run_to_end(poller, [task], calls)
    times = server.times("t-1")
    assert len(times) == 4 and times[-1] - task.started < 1.0
    assert min(b - a for a, b in itertools.pairwise(times)) >= SPARE_FLOOR
    assert poller.spare_polls == 4 and calls.finished[0][2] is None


async def test_busy_budget_leaves_polls_to_the_schedule(server, client):
    """While the budget is busy, no spare poll is made: nothing is polled before the scheduled time."""
    server.script("t-1", status("t-1", "SUCCESS", data={}))
    calls = Calls()
    poller = spare_poller(client, calls, idle=False)
    send, receive = anyio.create_memory_object_stream[TaskHandle](1)
    ending_send, endings = anyio.create_memory_object_stream[Ending](math.inf)
    async with anyio.create_task_group() as tg, send, endings:
        tg.start_soon(poller.run, receive, ending_send)
        await send.send(handle("t-1"))
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()
    assert server.times("t-1") == [] and poller.spare_polls == 0


async def test_detection_lag_is_the_time_from_the_last_pending_answer_to_the_end(server, client):
    """on_lag gets, per task that was seen PENDING and then ended (SUCCESS or FAILED), the time
    between those two answers; a task that ended at its first poll gives none."""
    server.script("t-ok", status("t-ok", "PENDING"), status("t-ok", "PENDING"), status("t-ok", "SUCCESS", data={}))
    server.script("t-bad", status("t-bad", "PENDING"), status("t-bad", "FAILED", error="no"))
    server.script("t-now", status("t-now", "SUCCESS", data={}))
    calls, lags = Calls(), []
    poller = Poller(IMAGE, client, FAST, resubmit=calls, pause=calls.pauses.append, rand=lambda: 0.5,
                    on_lag=lags.append)
    await run_to_end(poller, [handle("t-ok"), handle("t-bad"), handle("t-now")], calls)
    assert len(calls.endings) == 3
    assert len(lags) == 2
    assert all(FAST.max_delay * 0.5 <= lag < 5.0 for lag in lags), lags  # at least a poll interval apart
