"""Shared helpers for the unit tests of the engine's stages: a fake service client, jobs, and the
collaborators a stage needs (a spend ledger without a cap, the stop, the in-flight cap)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from pipeline.config.load import Config
from pipeline.config.pricing import item_cost_bound
from pipeline.core.capabilities import Capability
from pipeline.core.job import Job
from pipeline.engine.inflight import InFlight
from pipeline.engine.spend import SpendLedger
from pipeline.engine.stopping import Stopping
from pipeline.engine.submission import Submission
from pipeline.observe.report import RunStats
from pipeline.service.responses import ApiResponse
from pipeline.state.checkpoint import Checkpoint

T = TypeVar("T")

OCR = "ops-image-analyze-ocr-001"
DETECT = "ops-object-detect-001"


def job(item_id: str = "a", capability: str = "image_analyze", **extra: Any) -> Job:
    """A valid job of `capability` with a URL source (its default service id unless given)."""
    service_id = extra.pop("service_id", {"image_analyze": OCR, "object_detection": DETECT}.get(capability, "ops-x"))
    return Job(id=item_id, capability=capability, service_id=service_id, source_kind="url",
               source=f"https://example.com/{item_id}.jpg", **extra)


def answer(result: Mapping[str, Any], *, usage: Mapping[str, Any] | None = None, attempts: int = 1) -> ApiResponse:
    """A 200 answer carrying `result`."""
    return ApiResponse(http_status=200, request_id="r-1", latency=1, result=dict(result),
                       usage=dict(usage) if usage is not None else None, attempts=attempts)


class FakeClient:
    """The service client as the stages see it: creates answered from a script (an `ApiResponse`
    or an exception to raise, the last entry repeating), async tasks numbered t-1, t-2, ... by
    default; every create is recorded."""

    def __init__(self, *script: ApiResponse | BaseException) -> None:
        self.script = list(script)
        self.creates: list[tuple[str, str, Mapping[str, Any]]] = []

    async def submit(self, capability: Capability, service_id: str, body: Mapping[str, Any]) -> ApiResponse:
        self.creates.append((capability.name, service_id, body))
        if not self.script:
            result = {"task_id": f"t-{len(self.creates)}"} if capability.is_async else {"objects": []}
            return answer(result)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        return step


@dataclasses.dataclass
class Parts:
    """The collaborators of the submit side of a run, over one checkpoint."""

    client: FakeClient
    ckpt: Checkpoint
    stats: RunStats
    stops: Stopping
    inflight: InFlight
    ledger: SpendLedger
    submission: Submission


def parts(ckpt: Checkpoint, client: FakeClient | None = None, *, max_in_flight: int = 10,
          config: Config | None = None, uploads: Any = None) -> Parts:
    """A submission over `ckpt` and a fake client (inside a running loop: it reads the loop's clock)."""
    client = client or FakeClient()
    stats, stops = RunStats(), Stopping()
    ledger = SpendLedger(ckpt, config or Config(), item_cost_bound)
    submission = Submission(client=client, checkpoint=ckpt, ledger=ledger, stops=stops, stats=stats,
                            clock=anyio.current_time, uploads=uploads)
    return Parts(client, ckpt, stats, stops, InFlight(max_in_flight, stats), ledger, submission)


def drain(receive: MemoryObjectReceiveStream[T]) -> list[T]:
    """What is in `receive` now, without waiting; the stream is closed after."""
    got = []
    with receive:
        while True:
            try:
                got.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                return got


def in_flight(stats: RunStats) -> dict[str, int]:
    """The in-flight gauge of every capability that has one."""
    return {name: s.in_flight for name, s in stats.caps.items() if s.in_flight}


__all__ = ["DETECT", "OCR", "FakeClient", "Parts", "answer", "drain", "in_flight", "job", "parts"]
