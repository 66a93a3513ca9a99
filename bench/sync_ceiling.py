"""Scenario 1: synchronous object detection held at its 20 QPS ceiling.

The achieved rate is measured by the emulator: accepted requests minus one, over the time
from the first to the last accepted request (`accepted_span` in its counters), divided by
the limit in real requests per second (20 × time scale). A short reference run at time
scale 1 (the real service's pace) shows how the ratio depends on the request interval, and
the pipeline's own pacer (`pipeline.pacing.memory.GroupPacer`), driven alone in this process with
no network at both rates, shows how much of any shortfall is the pacer's.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
from aiolimiter import AsyncLimiter

from pipeline.config.load import Config
from pipeline.core.lanes import Lane
from pipeline.pacing.memory import GroupPacer

from .emulator_process import Emulator, emulator_settings, request_rate
from .figures import ScenarioResult
from .manifests import LIMITS, write_manifest
from .processes import run_pipeline

TITLE = "Synchronous detection at the QPS ceiling"
LIMIT = LIMITS["object_detection"]
HEADROOM = 0.98  # the client's qps_headroom in this scenario (notes say whether it is the default)
TARGET_RATIO = 0.95  # achieved rate ÷ limit the scenario must reach
PACER_SECONDS = 2.0  # how long each pacer runs alone
SUBMITTERS = 8  # concurrent submitters driving a pacer alone (the default submit_workers)


def _one(work: Path, name: str, items: int, scale: float) -> dict[str, float]:
    manifest = write_manifest(work / f"{name}.jsonl", items, ["object_detection"])
    with Emulator(emulator_settings(time_scale=scale), work / name) as emu:
        run_ = run_pipeline(manifest, work, emu.url, {"time_scale": scale, "qps_headroom": HEADROOM},
                            name=name, timeout=items / (LIMIT * scale) * 3 + 30)
        counters = emu.counters()
    rate, count, span = request_rate(counters, "object_detection")
    return {"items": items, "time_scale": scale, "succeeded": run_.summary["succeeded"],
            "rate_per_s": rate, "ratio": rate / (LIMIT * scale), "accepted": count, "span_s": span,
            "throttled": counters["throttled_total"],
            "max_window_offered": counters["max_window_offered"]["image-object-detection"],
            "client_cpu_s": run_.proc.cpu, "client_peak_rss_mb": run_.proc.peak_rss_mb}


async def _pacer_alone(qps: float, seconds: float, kind: str = "pipeline") -> float:
    """Achieved ÷ asked rate of a pacer alone: SUBMITTERS submitters, no requests made. kind "pipeline"
    is ours; "aiolimiter" is `AsyncLimiter(1, 1/qps)`, the no-burst setting the design notes measured."""
    if kind == "pipeline":
        pacer = GroupPacer("bench", qps)

        async def acquire() -> None:
            await pacer.acquire(Lane.SUBMIT)

        async with anyio.create_task_group() as tg:  # the pacer's dispatcher runs beside its users
            tg.start_soon(pacer.run)
            rate = await _measure(acquire, qps, seconds)
            tg.cancel_scope.cancel()
        return rate
    else:
        limiter = AsyncLimiter(1, 1.0 / qps)

        async def acquire() -> None:
            await limiter.acquire()
    return await _measure(acquire, qps, seconds)


async def _measure(acquire: Callable[[], Awaitable[None]], qps: float, seconds: float) -> float:
    stamps: list[float] = []
    wanted = max(int(qps * seconds), 10)

    async def submitter() -> None:
        while len(stamps) < wanted:
            await acquire()
            stamps.append(time.monotonic())

    await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) / qps


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    items, scale, ref_items = (200, 4.0, 40) if quick else (2000, 4.0, 150)
    result = ScenarioResult("sync_ceiling", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        main = _one(Path(tmp), "scaled", items, scale)
        ref = _one(Path(tmp), "scale1", ref_items, 1.0)
    pacer = {scale: asyncio.run(_pacer_alone(LIMIT * scale * HEADROOM, PACER_SECONDS)) for scale in (scale, 1.0)}
    plain = {scale: asyncio.run(_pacer_alone(LIMIT * scale * HEADROOM, PACER_SECONDS, "aiolimiter"))
             for scale in (scale, 1.0)}
    result.add(f"achieved rate ÷ limit ({items:,} items, time scale {scale:g})", main["ratio"],
               target=(">=", TARGET_RATIO))
    result.add("429s", main["throttled"], target=("<=", 0))
    result.add(f"busiest window, requests offered (limit {LIMIT})", main["max_window_offered"])
    result.add(f"reference: rate ÷ limit at time scale 1 ({ref_items} items)", ref["ratio"])
    result.add("reference: 429s at time scale 1", ref["throttled"])
    result.add(f"pacer alone, no network: achieved ÷ asked at {LIMIT * scale * HEADROOM:g}/s", pacer[scale])
    result.add(f"pacer alone, no network: achieved ÷ asked at {LIMIT * HEADROOM:g}/s", pacer[1.0])
    result.add(f"aiolimiter AsyncLimiter(1, 1/qps) alone: achieved ÷ asked at {LIMIT * scale * HEADROOM:g}/s",
               plain[scale])
    result.add(f"aiolimiter AsyncLimiter(1, 1/qps) alone: achieved ÷ asked at {LIMIT * HEADROOM:g}/s", plain[1.0])
    result.add("client CPU ms per item", 1000 * main["client_cpu_s"] / items, unit="ms", digits=2)
    result.raw = {"scaled": main, "scale1": ref, "qps_headroom": HEADROOM, "limit": LIMIT,
                  "default_qps_headroom": Config().qps_headroom, "target_ratio": TARGET_RATIO,
                  "pacer_alone_ratio": {f"{LIMIT * s * HEADROOM:g}/s": r for s, r in pacer.items()},
                  "aiolimiter_alone_ratio": {f"{LIMIT * s * HEADROOM:g}/s": r for s, r in plain.items()}}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw` (what `run` measured)."""
    main, ref = raw["scaled"], raw["scale1"]
    scale, limit, headroom = main["time_scale"], raw["limit"], raw["qps_headroom"]
    default = " (the default)" if headroom == raw["default_qps_headroom"] else ""
    out = [
        f"{main['items']:,} object_detection items, emulator and client time scale {scale:g} (window "
        f"{1000 / scale:.0f} ms, limit {limit * scale:g} real req/s), client qps_headroom {headroom:g}{default}, "
        f"so the client aims at {headroom * limit * scale:.1f} req/s. Measured: {main['rate_per_s']:.1f} req/s "
        f"over {main['span_s']:.2f} s. Reference at time scale 1: {ref['rate_per_s']:.2f} req/s."]
    if main["ratio"] < raw["target_ratio"]:
        fast, slow = f"{limit * scale * headroom:g}/s", f"{limit * headroom:g}/s"
        pacer = raw["pacer_alone_ratio"]
        out.append(
            f"MISS: {main['ratio']:.3f} of the limit at time scale {scale:g} is {main['ratio'] / headroom:.3f} of "
            f"the rate the client aims at. The pacer alone, with no network, reaches {pacer[fast]:.3f} of the "
            f"rate it is asked for at {fast} and {pacer[slow]:.3f} at {slow}. At time scale 1 the whole pipeline "
            f"reached {ref['ratio']:.3f} of the limit.")
    return out
