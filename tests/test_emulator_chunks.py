"""Chained chunks: a summarization gets back exactly the chunks the emulator's segmentation returned.

The emulator runs on a frozen clock that the tests advance, so no test waits for a task.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator_http import KEY
from emulator_http import post as _post
from emulator_http import session as _session
from emulator_http import status as _status

from pipeline.emulator import EmulatorSettings, RunningEmulator, start_emulator
from pipeline.emulator.chunks import RESULTS_PER_SOURCE, SegmentLedger

SEG, SEG_SID = "video-segmentation", "ops-video-segment-001"
SUM, SUM_SID = "video-summarization", "ops-video-summarize-001"
VIDEO = "oss://media/v/launch.mp4"
OUT = {"type": "oss", "oss": "oss://media/out/"}
TASK_SECONDS = 1.0  # every task takes this long on the frozen clock


@pytest.fixture
async def emu_chain(emu_clock: Any) -> AsyncIterator[tuple[RunningEmulator, aiohttp.ClientSession]]:
    """An emulator whose tasks last TASK_SECONDS on ``emu_clock``, and a session for it."""
    durations = {c: (TASK_SECONDS, TASK_SECONDS) for c in (SEG, SUM, "image-analyze", "video-snapshot", "audio-asr")}
    settings = EmulatorSettings(api_key=KEY, seed=3, durations=durations)
    async with start_emulator(settings, clock=emu_clock) as emu, _session(emu.url) as http:
        yield emu, http


async def _segment(http: aiohttp.ClientSession, clock: Any, source: dict[str, str]) -> list[dict[str, Any]]:
    """Create a segmentation of ``source``, let it finish, poll it once: the chunks it returned."""
    code, _, created = await _post(http, SEG, SEG_SID, {"input": source, "output": OUT})
    assert code == 200, created
    clock.advance(TASK_SECONDS + 0.1)
    code, done = await _status(http, SEG, SEG_SID, created["result"]["task_id"])
    assert code == 200 and done["result"]["status"] == "SUCCESS", done
    chunks: list[dict[str, Any]] = done["result"]["data"]
    assert len(chunks) >= 2
    return chunks


async def _summarize(http: aiohttp.ClientSession, inp: dict[str, Any]) -> tuple[int, Any]:
    code, _, answer = await _post(http, SUM, SUM_SID, {"input": inp, "output": OUT})
    return code, answer


async def _chain_counts(http: aiohttp.ClientSession) -> dict[str, int]:
    """The chained_chunks_* counters, as GET /_emulator/counters serves them."""
    async with http.get("/_emulator/counters") as resp:
        counters = await resp.json()
    return {k: counters[f"chained_chunks_{k}"] for k in ("matched", "mismatched", "unchecked")}


async def test_segmentation_chunks_sent_back_unchanged_are_accepted_and_counted(emu_chain: Any, emu_clock: Any) -> None:
    """The segmentation's data as input.chunks, with the same source, passes and counts as matched."""
    emu, http = emu_chain
    chunks = await _segment(http, emu_clock, {"oss": VIDEO})
    code, created = await _summarize(http, {"oss": VIDEO, "chunks": chunks})
    assert code == 200, created
    assert await _chain_counts(http) == {"matched": 1, "mismatched": 0, "unchecked": 0}
    emu_clock.advance(TASK_SECONDS + 0.1)
    done = (await _status(http, SUM, SUM_SID, created["result"]["task_id"]))[1]
    enhanced = [c["enhanced_transcript"] for c in done["result"]["data"]["chunks"]]
    assert enhanced == [c["transcript"] for c in chunks]
    # Key order inside a chunk is not content: the comparison is of canonical JSON.
    reordered = [dict(reversed(list(c.items()))) for c in chunks]
    assert (await _summarize(http, {"oss": VIDEO, "chunks": reordered}))[0] == 200
    assert emu.counters()["chained_chunks_matched"] == 2


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda c: c[1].update(transcript="edited"), "got {n}; first difference at input.chunks[1]"),
        (lambda c: c.pop(0), "got {m}; first difference at input.chunks[0]"),
        (lambda c: c.pop(), "got {m}; the chunks from chunk_index {m} on are missing)"),
        (lambda c: c.append(copy.deepcopy(c[0])), "got {p}; input.chunks[{n}] and after are extra)"),
        (lambda c: c[0]["snapshots"].pop(), "first difference at input.chunks[0]"),
        (lambda c: c.reverse(), "first difference at input.chunks[0]"),
    ],
    ids=[
        "transcript-changed", "first-chunk-dropped", "last-chunk-dropped",
        "chunk-added", "snapshot-dropped", "reordered",
    ],
)
async def test_tampered_chunks_are_invalid_parameter(emu_chain: Any, emu_clock: Any, tamper: Any, problem: str) -> None:
    """Chunks that differ from what the segmentation returned for that source are answered 400."""
    emu, http = emu_chain
    chunks = await _segment(http, emu_clock, {"oss": VIDEO})
    tampered = copy.deepcopy(chunks)
    tamper(tampered)
    code, error = await _summarize(http, {"oss": VIDEO, "chunks": tampered})
    assert code == 400 and error["code"] == "InvalidParameter", error
    message = error["message"]
    assert message.startswith(f"input.chunks are not the chunks video-segmentation returned for {VIDEO} ")
    assert f"({len(chunks)} chunks expected, " in message
    assert problem.format(n=len(chunks), m=len(chunks) - 1, p=len(chunks) + 1) in message
    assert await _chain_counts(http) == {"matched": 0, "mismatched": 1, "unchecked": 0}
    counters = emu.counters()
    assert counters["tasks_created"].get(SUM, 0) == 0 and counters["requests"][f"POST {SUM} create"] == {"400": 1}


async def test_chunks_of_sources_not_segmented_here_are_accepted(emu_chain: Any, emu_clock: Any) -> None:
    """A user's own chunks -- another source, no source, or a segmentation not yet returned -- pass unchecked."""
    _, http = emu_chain
    chunks = await _segment(http, emu_clock, {"oss": VIDEO})
    edited = copy.deepcopy(chunks)
    edited[0]["transcript"] = "my own words"
    assert (await _summarize(http, {"oss": "oss://media/v/other.mp4", "chunks": edited}))[0] == 200
    assert (await _summarize(http, {"url": "https://v.example.com/launch.mp4", "chunks": edited}))[0] == 200
    assert (await _summarize(http, {"chunks": edited}))[0] == 200
    # Created but not yet polled to SUCCESS: the client has not been sent any chunks for it.
    pending = {"input": {"url": "https://v.example.com/late.mp4"}, "output": OUT}
    assert (await _post(http, SEG, SEG_SID, pending))[0] == 200
    assert (await _summarize(http, {"url": "https://v.example.com/late.mp4", "chunks": edited}))[0] == 200
    # A summarization without chunks is not a chained one at all.
    assert (await _summarize(http, {"oss": VIDEO}))[0] == 200
    assert await _chain_counts(http) == {"matched": 0, "mismatched": 0, "unchecked": 4}


async def test_source_identity_ignores_service_ids_and_outlives_tasks(emu_chain: Any, emu_clock: Any) -> None:
    """The check keys on the source alone: another segmentation service id, a url source, and
    forgotten tasks or reset counters do not change what was returned."""
    emu, http = emu_chain
    url = "https://v.example.com/keynote.mp4"
    code, _, created = await _post(http, SEG, "ops-video-segment-002", {"input": {"url": url}, "output": OUT})
    assert code == 200, created
    emu_clock.advance(TASK_SECONDS + 0.1)
    done = (await _status(http, SEG, "ops-video-segment-002", created["result"]["task_id"]))[1]
    chunks = done["result"]["data"]
    async with http.post("/_emulator/forget-tasks") as resp:
        assert (await resp.json())["forgotten"] == 1
    async with http.post("/_emulator/counters/reset") as resp:
        assert resp.status == 200
    body = {"input": {"url": url, "chunks": chunks}, "output": OUT}
    code, _, created = await _post(http, SUM, "ops-video-summarize-002", body)
    assert code == 200, created
    code, error = await _summarize(http, {"url": url, "chunks": chunks[:-1]})
    assert code == 400 and url in error["message"]
    assert await _chain_counts(http) == {"matched": 1, "mismatched": 1, "unchecked": 0}
    assert len(emu.state.segments) == 1


async def test_a_source_segmented_twice_accepts_either_result(emu_chain: Any, emu_clock: Any) -> None:
    """Two segmentations of one video (other output prefixes, other chunks) are both valid to chain."""
    _, http = emu_chain
    first = await _segment(http, emu_clock, {"oss": VIDEO})
    code, _, created = await _post(http, SEG, SEG_SID, {"input": {"oss": VIDEO}, "output": {"type": "oss", "oss": "oss://media/again/"}})
    assert code == 200
    emu_clock.advance(TASK_SECONDS + 0.1)
    second = (await _status(http, SEG, SEG_SID, created["result"]["task_id"]))[1]["result"]["data"]
    assert second != first
    for chunks in (first, second):
        assert (await _summarize(http, {"oss": VIDEO, "chunks": chunks}))[0] == 200
    assert (await _chain_counts(http))["matched"] == 2


def test_ledger_is_bounded() -> None:
    """The least recently used source goes first, and a source keeps its last few results."""
    ledger = SegmentLedger(capacity=2)
    chunk = {"chunk_index": 0, "start_time": 0.0, "end_time": 1.0, "transcript": "t", "snapshots": []}
    ledger.remember("a", [chunk])
    ledger.remember("b", [chunk])
    assert ledger.check("a", [chunk]) == ("matched", None)  # "a" is now the most recently used
    ledger.remember("c", [chunk])
    assert len(ledger) == 2
    assert ledger.check("b", [chunk]) == ("unchecked", None)
    results = [[{**chunk, "transcript": f"take {i}"}] for i in range(RESULTS_PER_SOURCE + 1)]
    for result in results:
        ledger.remember("a", result)
    assert ledger.check("a", results[0])[0] == "mismatched"
    assert all(ledger.check("a", r)[0] == "matched" for r in results[1:])
    with pytest.raises(ValueError):
        SegmentLedger(capacity=0)
