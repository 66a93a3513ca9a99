"""The run's stages on their streams, under one set of task groups.

Data moves one way: reader -> (jobs, by capability) -> submitters -> (task handles, by
capability) -> pollers; reader, submitters and pollers -> (endings) -> finisher -> (result lines)
-> sink -> (durable lines) -> written lines (counts, chain, failure watch, spend cap) -> (ready
children, through the chain) -> reader. Stops go to the supervisor through `Stopping`.

    outer group:       pacer dispatchers
      writing group:   finisher, sink, written lines
        supervision:   supervisor, time limit
          work scope:  reader, submitters, pollers

How it ends, by streams closing: the reader closes its streams once the manifest is read and no
chained child waits; each submitter then closes its handles and endings; each poller returns
once its handle stream is closed and its last task has ended, closing its endings. The work
scope ends, the supervision is cancelled; once every sender of endings has closed, the finisher
closes the line stream, the sink writes the rest and closes the durable stream, and the written
lines stage returns. A stop cancels the work scope (or parts of it, see `supervisor`), which
closes the same streams the same way. The only stream that runs back up, the chain's, cannot
keep this from ending: its children wait for parents in flight, and the reader stops waiting
for them when it is cancelled.

Stream sizes: the job streams (`queue_size`) give the reader back-pressure; task handles are
unbounded by count and bounded in fact (each holds an in-flight token); endings are bounded and
sent shielded (`hand_over`: the finisher never waits on the work stages, so a sender is never
stuck); the durable lines stream is unbounded, read by a stage that never waits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..core.capabilities import CAPABILITIES
from ..core.errors import FatalError
from ..core.job import Job
from ..core.results import ResultLine
from ..pacing.memory import PacerBackend
from ..state.sink import Sink
from .finisher import Finisher
from .poller import Poller
from .reader import Reader, ReaderStreams
from .recording import Recorder
from .stopping import Stopping
from .submitter import Submitter
from .supervisor import Supervisor
from .work import Ending, TaskHandle
from .written import WrittenLines

__all__ = ["ENDINGS_BUFFER", "LINE_BUFFER", "Flow"]

#: Result lines buffered between the finisher and the sink.
LINE_BUFFER = 1024
#: Endings buffered between the work stages and the finisher.
ENDINGS_BUFFER = 1024


@dataclass
class Flow:
    """The stages of one run, ready to run (built by `runner`)."""

    reader: Reader
    submitter: Submitter
    pollers: dict[str, Poller]
    finisher: Finisher
    sink: Sink
    written: WrittenLines
    supervisor: Supervisor
    stops: Stopping
    pacers: PacerBackend
    queue_size: int
    submit_workers: int
    max_duration: float | None = None
    time_scale: float = 1.0
    recorder: Recorder | None = None  # the report's time series, sampled while the stages run

    async def run(self) -> None:
        """Run every stage to its end."""
        line_send, line_receive = anyio.create_memory_object_stream[ResultLine](LINE_BUFFER)
        durable_send, durable = anyio.create_memory_object_stream[ResultLine](math.inf)
        ending_send, ending_receive = anyio.create_memory_object_stream[Ending](ENDINGS_BUFFER)
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.pacers.run, name="pacers")
            if self.recorder is not None:
                outer.start_soon(self.recorder.run, name="recorder")
            async with anyio.create_task_group() as writing:
                writing.start_soon(self.sink.run, line_receive, durable_send, name="sink")
                writing.start_soon(self.written.run, durable, name="written-lines")
                writing.start_soon(self.finisher.run, ending_receive, line_send, name="finisher")
                senders: list[MemoryObjectSendStream[Ending]] = []
                try:
                    async with anyio.create_task_group() as supervision:
                        work, reading, polling = anyio.CancelScope(), anyio.CancelScope(), anyio.CancelScope()
                        supervision.start_soon(partial(self.supervisor.watch, work=work, reader=reading,
                                                       pollers=polling), name="supervisor")
                        if self.max_duration:
                            supervision.start_soon(self.supervisor.time_limit, self.max_duration, self.time_scale,
                                                   name="time-limit")
                        with work:
                            async with anyio.create_task_group() as tg:
                                self._start(tg, ending_send, senders, reading, polling)
                        supervision.cancel_scope.cancel()
                finally:
                    # However the work ended, every sender of endings is closed now: the finisher,
                    # then the sink and the written lines, finish what was sent and return.
                    ending_send.close()
                    for sender in senders:
                        sender.close()
            outer.cancel_scope.cancel()  # the pacers' dispatchers

    def _start(self, tg: anyio.abc.TaskGroup, endings: MemoryObjectSendStream[Ending],
               senders: list[MemoryObjectSendStream[Ending]], reader_scope: anyio.CancelScope,
               poller_scope: anyio.CancelScope) -> None:
        def ending_sender() -> MemoryObjectSendStream[Ending]:
            senders.append(endings.clone())
            return senders[-1]

        jobs: dict[str, MemoryObjectSendStream[Job]] = {}
        handles: dict[str, MemoryObjectSendStream[TaskHandle]] = {}
        to_poll: dict[str, MemoryObjectReceiveStream[TaskHandle]] = {}
        for name, cap in CAPABILITIES.items():
            job_send, job_receive = anyio.create_memory_object_stream[Job](self.queue_size)
            jobs[name] = job_send
            handle_send = None
            if cap.is_async:
                # Unbounded by count, bounded in fact: every handle holds an in-flight token.
                handle_send, to_poll[name] = anyio.create_memory_object_stream[TaskHandle](math.inf)
                handles[name] = handle_send
            with job_receive:
                for i in range(self.submit_workers):
                    tg.start_soon(self.submitter.work, name, job_receive.clone(),
                                  handle_send.clone() if handle_send is not None else None, ending_sender(),
                                  name=f"submit-{name}-{i}")
        tg.start_soon(self._read, reader_scope, ReaderStreams(jobs, handles, ending_sender()), name="reader")
        tg.start_soon(self._poll, poller_scope, to_poll, {name: ending_sender() for name in to_poll}, name="pollers")

    async def _read(self, scope: anyio.CancelScope, out: ReaderStreams) -> None:
        with scope:
            await self.reader.run(out)

    async def _poll(self, scope: anyio.CancelScope, streams: dict[str, MemoryObjectReceiveStream[TaskHandle]],
                    endings: dict[str, MemoryObjectSendStream[Ending]]) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                for name, stream in streams.items():
                    tg.start_soon(self._poll_one, self.pollers[name], stream, endings[name], name=f"poll-{name}")

    async def _poll_one(self, poller: Poller, stream: MemoryObjectReceiveStream[TaskHandle],
                        endings: MemoryObjectSendStream[Ending]) -> None:
        try:
            await poller.run(stream, endings)
        except FatalError as exc:  # a 401 or an unreachable service: the supervisor stops the run
            self.stops.fatal(exc)
