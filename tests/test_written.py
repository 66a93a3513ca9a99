"""The stage after the sink: each durable line counted, its waiting children released, judged by
the failure watch (a trip asks for the threshold stop; the window saved every 50 lines), and the
spend cap checked."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import anyio
from engine_support import drain, job
from state_support import line_for, write_done

from pipeline.config.load import Config
from pipeline.config.pricing import item_cost_bound
from pipeline.core.outcome import StopReason
from pipeline.core.results import ResultLine
from pipeline.engine.chaining import Chain
from pipeline.engine.shutdown import FailureWatch
from pipeline.engine.spend import SpendLedger
from pipeline.engine.stopping import Stopping
from pipeline.engine.written import WATCH_SAVE_EVERY, WrittenLines
from pipeline.observe.report import RunStats


def stage(ckpt, tmp_path: Path, *, window: int = 0, config: Config | None = None) -> tuple[WrittenLines, Stopping,
                                                                                           RunStats, Chain]:
    stats, stops, chain = RunStats(), Stopping(), Chain(ckpt, tmp_path / "results.jsonl")
    written = WrittenLines(stats=stats, chain=chain, watch=FailureWatch(window, 0.5), stops=stops, checkpoint=ckpt,
                           ledger=SpendLedger(ckpt, config or Config(), item_cost_bound))
    return written, stops, stats, chain


async def test_every_written_line_is_counted_until_the_sink_closes(ckpt, tmp_path) -> None:
    """The stage counts each line the sink sends, and returns once the sink closes the stream."""
    written, stops, stats, chain = stage(ckpt, tmp_path)
    send, receive = anyio.create_memory_object_stream[ResultLine](math.inf)
    with send:
        for line in (line_for("a"), line_for("b", "FAILED", "InvalidParameter")):
            send.send_nowait(line)
    await written.run(receive)
    caps = stats.caps["image_analyze"]
    assert (caps.succeeded, caps.failed, dict(caps.errors)) == (1, 1, {"InvalidParameter": 1})
    assert written.seen == 2 and stops.stop is None
    chain.close()


async def test_a_durable_parent_releases_its_waiting_child(ckpt, tmp_path) -> None:
    """A child waiting for its parent goes on the chain's ready stream when the parent's line comes."""
    written, _, _, chain = stage(ckpt, tmp_path)
    child = job("v1", "video_snapshot", analysis="snap", after="image_analyze")
    assert chain.parent_line(child) is None  # the parent is not done: the child waits
    parent = line_for("v1")
    write_done(tmp_path / "results.jsonl", ckpt, ["v1"])  # the sink marks it done before sending it on
    written.take(parent)
    chain.reader_done()
    assert drain(chain.ready) == [(child, parent)]
    chain.close()


async def test_run_faults_past_the_threshold_ask_for_the_threshold_stop(ckpt, tmp_path) -> None:
    """More than half of a window of 4 failing for the service's fault trips the watch: the
    threshold stop is asked for; items failing for their own fault never trip it."""
    written, stops, _, chain = stage(ckpt, tmp_path, window=4)
    for i in range(4):
        written.take(line_for(f"bad-{i}", "FAILED", "InvalidParameter"))  # the item's fault
    assert stops.stop is None
    for i in range(3):
        written.take(dataclasses.replace(line_for(f"down-{i}", "FAILED", "InternalServerError"),
                                         error={"code": "InternalServerError", "message": "x", "http_status": 500}))
    assert stops.stop is not None and stops.stop.reason is StopReason.THRESHOLD
    chain.close()


async def test_the_failure_window_is_saved_every_so_many_lines(ckpt, tmp_path) -> None:
    """The watch's window reaches the checkpoint at every WATCH_SAVE_EVERY-th line, not before."""
    written, _, _, chain = stage(ckpt, tmp_path, window=1000)
    ckpt.set_meta("failure_window", "")
    for i in range(WATCH_SAVE_EVERY - 1):
        written.take(line_for(f"j{i}"))
    assert ckpt.get_meta("failure_window") == ""
    written.take(line_for("last"))
    assert ckpt.get_meta("failure_window") == "0" * WATCH_SAVE_EVERY
    chain.close()


async def test_a_settlement_past_the_cap_asks_for_the_spend_cap_stop(ckpt, tmp_path) -> None:
    """Once settled plus reserved is past the cap, the next line asks for the spend-cap stop."""
    written, stops, _, chain = stage(ckpt, tmp_path, config=dataclasses.replace(Config(), max_cost=0.001))
    assert ckpt.reserve("x", 0.002, None)  # reserved past the cap (as a settlement above its reservation leaves it)
    written.take(line_for("a"))
    assert stops.stop is not None and stops.stop.reason is StopReason.SPEND_CAP
    chain.close()
