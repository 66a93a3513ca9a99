"""The submit workers against a fake client: an accepted task's handle to the poller, every other
ending to the finisher, each under an in-flight token; after a stop, jobs drained untaken; the
streams closed when the job stream ends."""

from __future__ import annotations

import math

import anyio
from engine_support import FakeClient, answer, drain, in_flight, job, parts

from pipeline.core.errors import InvalidParameter
from pipeline.core.job import Job
from pipeline.core.outcome import Stop, StopReason
from pipeline.engine.stopping import Stopping
from pipeline.engine.submitter import Submitter
from pipeline.engine.work import Ending, TaskHandle


async def work(p, capability: str, jobs: list[Job], *, sync: bool = False) -> tuple[list[TaskHandle], list[Ending]]:
    """One worker over `jobs` (the stream closed after them) until it returns; what it sent on."""
    job_send, job_receive = anyio.create_memory_object_stream[Job](math.inf)
    handle_send, handles = anyio.create_memory_object_stream[TaskHandle](math.inf)
    ending_send, endings = anyio.create_memory_object_stream[Ending](math.inf)
    with job_send:
        for j in jobs:
            p.stats.caps[j.capability].queued += 1
            job_send.send_nowait(j)
    submitter = Submitter(submission=p.submission, inflight=p.inflight, stops=p.stops, stats=p.stats)
    if sync:
        handle_send.close()
    with anyio.fail_after(10):
        await submitter.work(capability, job_receive, None if sync else handle_send, ending_send)
    return drain(handles), drain(endings)


async def test_accepted_tasks_go_to_the_poller_and_failures_to_the_finisher(ckpt) -> None:
    """Two accepted tasks leave as handles holding tokens, a refused create as a FAILED ending with
    its token; the queued gauge is back to 0 and both out-streams are closed."""
    p = parts(ckpt, FakeClient(answer({"task_id": "t-1"}), InvalidParameter("InvalidParameter", "bad"),
                               answer({"task_id": "t-3"})))
    handles, endings = await work(p, "image_analyze", [job("a"), job("b"), job("c")])
    assert [h.task_id for h in handles] == ["t-1", "t-3"]
    assert all(h.token is not None and h.token.held for h in handles)
    [failed] = endings
    assert failed.job.id == "b" and isinstance(failed.outcome, InvalidParameter) and failed.token is not None
    assert in_flight(p.stats) == {"image_analyze": 3}  # the finisher gives them back, not the worker
    assert p.stats.caps["image_analyze"].queued == 0


async def test_a_synchronous_capability_sends_endings_only(ckpt) -> None:
    """Object detection's answers are endings: nothing goes to a poller."""
    p = parts(ckpt)
    handles, endings = await work(p, "object_detection", [job("d1", "object_detection"),
                                                          job("d2", "object_detection")], sync=True)
    assert handles == [] and [e.job.id for e in endings] == ["d1", "d2"]
    assert all(not e.abandoned for e in endings)


async def test_after_a_stop_the_jobs_are_drained_untouched(ckpt) -> None:
    """Once the run stops taking items, the worker empties its stream without taking a token or
    sending anything, so the reader is never stuck on a full stream."""
    p = parts(ckpt)
    p.stops.request(Stop(StopReason.TIME_LIMIT, "time"))
    handles, endings = await work(p, "image_analyze", [job("a"), job("b")])
    assert (handles, endings, p.client.creates) == ([], [], [])
    assert in_flight(p.stats) == {} and p.stats.caps["image_analyze"].queued == 0


async def test_an_accepted_task_is_kept_in_flight_when_the_stop_interrupts(ckpt) -> None:
    """A create that answers after an interrupting stop: its task is recorded, not handed to the
    (cancelled) poller, and stays in flight for the summary and the next run."""
    class Interrupting(FakeClient):
        stops: Stopping

        async def submit(self, capability, service_id, body):  # type: ignore[no-untyped-def]
            self.stops.request(Stop(StopReason.INTERRUPTED, "signal"))  # arrives while the create is on the wire
            return await super().submit(capability, service_id, body)

    client = Interrupting()
    p = parts(ckpt, client)
    client.stops = p.stops
    handles, endings = await work(p, "image_analyze", [job("a"), job("b")])
    assert (handles, endings) == ([], [])
    assert ckpt.pending()[job("a").key].task_id == "t-1" and job("b").key not in ckpt.pending()
    assert in_flight(p.stats) == {"image_analyze": 1}


async def test_the_in_flight_cap_holds_the_next_job_until_a_token_comes_back(ckpt) -> None:
    """With one token per capability, the second job waits until the first unit's token is given back."""
    p = parts(ckpt, max_in_flight=1)
    job_send, job_receive = anyio.create_memory_object_stream[Job](math.inf)
    handle_send, handles = anyio.create_memory_object_stream[TaskHandle](math.inf)
    ending_send, endings = anyio.create_memory_object_stream[Ending](math.inf)
    submitter = Submitter(submission=p.submission, inflight=p.inflight, stops=p.stops, stats=p.stats)
    async with anyio.create_task_group() as tg, handles, endings:
        tg.start_soon(submitter.work, "image_analyze", job_receive, handle_send, ending_send)
        async with job_send:
            await job_send.send(job("a"))
            await job_send.send(job("b"))
            first = await handles.receive()
            await anyio.wait_all_tasks_blocked()
            assert len(p.client.creates) == 1  # the second waits for a token
            assert first.token is not None
            p.inflight.release(first.token)  # as the finisher does at its ending
            second = await handles.receive()
    assert (first.task_id, second.task_id) == ("t-1", "t-2")
