"""`Submission` against a fake client: every way one create can end (an accepted task recorded
before its handle exists, a synchronous answer, a failure, a fatal error or the cap stopping the
run, work dropped by a stop), and a lost task submitted once more under the token it holds."""

from __future__ import annotations

import dataclasses

import pytest
from engine_support import FakeClient, answer, job, parts

from pipeline.config.load import Config
from pipeline.core.errors import (
    AuthError,
    BadResponse,
    InvalidParameter,
    ServiceError,
    ServiceUnreachable,
    Stopped,
)
from pipeline.core.job import Job
from pipeline.core.outcome import Stop, StopReason
from pipeline.engine.work import Ending, TaskHandle, Token
from pipeline.upload.errors import OssAuthError


async def test_an_accepted_task_is_recorded_before_its_handle_is_returned(ckpt):
    """An async create's task id is in the checkpoint (state submitted) when the handle comes back,
    with the token, attempts and a clock start at the submit; the submit is counted."""
    p = parts(ckpt, FakeClient(answer({"task_id": "t-9"}, attempts=2)))
    token = Token("image_analyze")
    handle = await p.submission.submit(job("a"), token)
    assert isinstance(handle, TaskHandle)
    assert (handle.task_id, handle.token, handle.attempts, handle.resubmits) == ("t-9", token, 2, 0)
    row = ckpt.pending()[job("a").key]
    assert (row.state, row.task_id, row.attempts) == ("submitted", "t-9", 2)
    assert handle.submitted_at == pytest.approx(row.submitted_at)
    assert p.stats.caps["image_analyze"].submits == 1
    assert p.stops.on_wire == 0


async def test_a_synchronous_answer_is_the_ending(ckpt):
    """Object detection answers at once: the ending carries the response, nothing is recorded."""
    p = parts(ckpt, FakeClient(answer({"objects": [{"label": "cat"}]})))
    token = Token("object_detection")
    ending = await p.submission.submit(job("d", "object_detection"), token)
    assert isinstance(ending, Ending) and not ending.abandoned
    assert ending.token is token and ending.outcome.result == {"objects": [{"label": "cat"}]}  # type: ignore[union-attr]
    assert ending.submitted_at is not None and ckpt.pending() == {}


@pytest.mark.parametrize(("script", "code"), [
    (InvalidParameter("InvalidParameter", "bad url", http_status=400, attempts=1), "InvalidParameter"),
    (ServiceError("InternalServerError", "500 after every retry", http_status=500, attempts=5),
     "InternalServerError"),
    (answer({"no": "task id"}), "BadResponse"),
])
async def test_a_failed_create_ends_failed_with_its_error(ckpt, script, code):
    """A refused create, one failing past its retries, or an answer without a task id end FAILED
    with that error and its attempts; nothing is recorded and no stop is asked for."""
    p = parts(ckpt, FakeClient(script))
    ending = await p.submission.submit(job("a"), Token("image_analyze"))
    assert isinstance(ending, Ending) and isinstance(ending.outcome, ServiceError)
    assert ending.outcome.code == code
    if isinstance(script, ServiceError):
        assert ending.attempts == script.attempts
    assert isinstance(ending.outcome, BadResponse) == (code == "BadResponse")
    assert ckpt.pending() == {} and p.stops.stop is None


@pytest.mark.parametrize(("error", "reason"), [
    (AuthError("InvalidApiKey", "refused", http_status=401), StopReason.AUTH),
    (ServiceUnreachable("ServiceUnreachable", "connection refused"), StopReason.UNREACHABLE),
])
async def test_a_fatal_create_stops_the_run_and_drops_the_job(ckpt, error, reason):
    """A 401 or an unreachable service asks for its stop, and the job is abandoned (no line)."""
    p = parts(ckpt, FakeClient(error))
    token = Token("image_analyze")
    ending = await p.submission.submit(job("a"), token)
    assert ending == Ending.dropped(job("a"), token)
    assert p.stops.stop is not None and p.stops.stop.reason is reason
    assert not p.stops.taking


async def test_a_create_stopped_before_it_went_out_is_dropped(ckpt):
    """The pacer's wait ended by a stop (`Stopped`): abandoned, no stop asked for by the submission."""
    p = parts(ckpt, FakeClient(Stopped("stopping")))
    ending = await p.submission.submit(job("a"), None)
    assert isinstance(ending, Ending) and ending.abandoned and p.stops.stop is None


async def test_a_create_is_on_the_wire_until_its_answer(ckpt):
    """While the client works on a create, the stop counts it on the wire (a signal waits for it)."""
    seen = []

    class Watching(FakeClient):
        async def submit(self, capability, service_id, body):  # type: ignore[no-untyped-def]
            seen.append(p.stops.on_wire)
            return await super().submit(capability, service_id, body)

    p = parts(ckpt, Watching())
    await p.submission.submit(job("a"), None)
    assert seen == [1] and p.stops.on_wire == 0


async def test_no_room_under_the_cap_stops_the_run_and_sends_nothing(ckpt):
    """Under a cap that leaves no room (and nothing in flight to free any), the job is dropped, the
    spend cap stop is asked for, and no create is sent."""
    config = dataclasses.replace(Config(), max_cost=0.0)
    p = parts(ckpt, config=config)
    ending = await p.submission.submit(job("a"), Token("image_analyze"))
    assert isinstance(ending, Ending) and ending.abandoned
    assert p.stops.stop is not None and p.stops.stop.reason is StopReason.SPEND_CAP
    assert p.client.creates == []


class Uploads:
    """The upload stage as the submission sees it: every job wanted, `prepare` scripted."""

    def __init__(self, outcome: Job | BaseException) -> None:
        self.outcome = outcome

    def wanted(self, job: Job) -> bool:
        return True

    async def prepare(self, job: Job) -> Job:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


async def test_an_uploaded_job_is_submitted_rewritten_and_its_line_keeps_its_source(ckpt):
    """A job the upload stage rewrote goes to the service as rewritten, while the task handle (which
    the line is made from) keeps the item's own source and records the uploaded object: a rewritten
    source may be a presigned URL, a credential that must not reach a line."""
    original = job("a", "video_snapshot")
    uploaded = dataclasses.replace(original, source_kind="url", source="https://b.example/k.mp4?x-oss-signature=s",
                                   source_oss="oss://b/k.mp4")
    p = parts(ckpt, uploads=Uploads(uploaded))
    handle = await p.submission.submit(original, None)
    assert isinstance(handle, TaskHandle) and handle.job == dataclasses.replace(original, source_oss="oss://b/k.mp4")
    assert "x-oss-signature=s" in str(p.client.creates[0][2])


async def test_oss_refusing_its_key_pair_stops_the_run_and_sends_nothing(ckpt):
    """OSS refusing the key pair is its own stop (it waits for creates on the wire); the job is dropped."""
    p = parts(ckpt, uploads=Uploads(OssAuthError("InvalidAccessKeyId", "refused", http_status=403)))
    ending = await p.submission.submit(job("a", "video_snapshot"), None)
    assert isinstance(ending, Ending) and ending.abandoned
    assert p.stops.stop is not None and p.stops.stop.reason is StopReason.OSS_AUTH
    assert p.client.creates == []


async def test_an_unreadable_file_fails_the_item_only(ckpt):
    """An upload failing for the item's own file ends it FAILED; the run goes on."""
    p = parts(ckpt, uploads=Uploads(InvalidParameter("FileError", "cannot read x.mp4")))
    ending = await p.submission.submit(job("a", "video_snapshot"), None)
    assert isinstance(ending, Ending) and isinstance(ending.outcome, ServiceError)
    assert ending.outcome.code == "FileError" and p.stops.stop is None


async def test_a_lost_task_is_submitted_again_under_its_token(ckpt):
    """`again` sends the lost task's job once more, recorded with one more resubmit, keeping its token."""
    p = parts(ckpt, FakeClient(answer({"task_id": "t-1"}), answer({"task_id": "t-2"})))
    token = Token("image_analyze")
    first = await p.submission.submit(job("a"), token)
    assert isinstance(first, TaskHandle)
    second = await p.submission.again(first)
    assert isinstance(second, TaskHandle)
    assert (second.task_id, second.resubmits, second.token) == ("t-2", 1, token)
    assert ckpt.pending()[job("a").key].resubmits == 1


async def test_a_lost_task_is_left_to_the_next_run_once_the_run_stops(ckpt):
    """After a stop, `again` sends nothing and returns None: the task stays recorded as submitted."""
    p = parts(ckpt)
    first = await p.submission.submit(job("a"), None)
    assert isinstance(first, TaskHandle)
    p.stops.request(Stop(StopReason.TIME_LIMIT, "time"))
    assert await p.submission.again(first) is None
    assert len(p.client.creates) == 1 and ckpt.pending()[job("a").key].task_id == "t-1"
