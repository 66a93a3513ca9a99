"""Scenario 6: the pipeline against two baselines, same manifest, same emulator settings.

(a) The loop from the service docs: the official SDK, one item at a time, submit then poll
    every 5 s. It is slow, so it runs on the first items of the manifest only (every
    capability equally) and its rate is extrapolated per item.
(b) `asyncio.gather` over raw aiohttp with a semaphore of 50 and no rate limiting; a 429 is
    retried after a fixed short sleep; polls every 5 s.

All three build the request bodies with the pipeline's own capability table, so they send
byte-for-byte the same work; each runs against a fresh emulator with the same seed, so every
task takes the same time in all three. Delays are time-scaled like the emulator.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from alibabacloud_searchplat20240529 import models as sdk_models
from alibabacloud_searchplat20240529.client import Client
from alibabacloud_tea_openapi.models import Config as SdkConfig
from Tea.exceptions import TeaException  # type: ignore[import-untyped]

from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.job import Job
from pipeline.emulator import api_path
from pipeline.manifest.reader import read_manifest

from .emulator_process import Emulator, emulator_settings
from .environment import KEY
from .figures import ScenarioResult
from .manifests import ALL_CAPS, write_manifest
from .processes import run_pipeline

TITLE = "Baselines in the same run"
POLL_EVERY = 5.0  # emulated seconds between polls, as the service docs recommend
SLEEP_ON_429 = 0.2  # emulated seconds baseline (b) sleeps before retrying a 429
CONCURRENCY = 50  # baseline (b)'s semaphore
WS = "default"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def jobs_of(manifest: Path) -> list[Job]:
    return [j for j in read_manifest(manifest) if isinstance(j, Job)]


# ---- (a) the official SDK, one item at a time -------------------------------------------------
def sdk_loop(endpoint: str, jobs: list[Job], scale: float) -> dict[str, Any]:
    client = Client(SdkConfig(bearer_token=KEY, endpoint=endpoint, protocol="http"))
    started = time.monotonic()
    done = throttled = 0

    def call(method: str, *args: Any) -> Any:
        nonlocal throttled
        while True:
            try:
                return getattr(client, method)(*args)
            except TeaException as exc:
                if (exc.data or {}).get("statusCode") != 429:
                    raise
                throttled += 1
                time.sleep(SLEEP_ON_429 / scale)

    for job in jobs:
        body = CAPABILITIES[job.capability].build_body(job, None)
        if job.capability == "object_detection":
            request = sdk_models.GetImageObjectDetectionRequest().from_map(body)
            call("get_image_object_detection", WS, job.service_id, request)
        else:
            camel = _camel(job.capability)
            request = getattr(sdk_models, f"Create{camel}TaskRequest")().from_map(body)
            task_id = call(f"create_{job.capability}_task", WS, job.service_id, request).body.result.task_id
            status_request = getattr(sdk_models, f"Get{camel}TaskStatusRequest")(task_id=task_id)
            while True:
                time.sleep(POLL_EVERY / scale)
                answer = call(f"get_{job.capability}_task_status", WS, job.service_id, status_request)
                if answer.body.result.status != "PENDING":
                    break
        done += 1
    return {"items": done, "seconds": time.monotonic() - started, "throttled_seen": throttled}


# ---- (b) asyncio.gather, a semaphore, no rate limiting ------------------------------------------
async def gather_baseline(url: str, jobs: list[Job], scale: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {KEY}"}
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def send(session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        while True:
            async with session.request(method, url + path, headers=headers, **kwargs) as response:
                if response.status == 429:
                    await asyncio.sleep(SLEEP_ON_429 / scale)
                    continue
                response.raise_for_status()
                answer: dict[str, Any] = await response.json()
                return answer

    async def one(session: aiohttp.ClientSession, job: Job) -> None:
        cap = CAPABILITIES[job.capability]
        body = cap.build_body(job, None)
        async with semaphore:
            if not cap.is_async:
                await send(session, "POST", api_path(cap.segment, job.service_id, "detect"), json=body)
                return
            created = await send(session, "POST", api_path(cap.segment, job.service_id, "create"), json=body)
            status_path = api_path(cap.segment, job.service_id, "status")
            while True:
                await asyncio.sleep(POLL_EVERY / scale)
                answer = await send(session, "GET", status_path, params={"task_id": created["result"]["task_id"]})
                if answer["result"]["status"] != "PENDING":
                    return

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        await asyncio.gather(*(one(session, job) for job in jobs))
    return {"items": len(jobs), "seconds": time.monotonic() - started}


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    items, sdk_items, scale = (60, 6, 20.0) if quick else (300, 12, 10.0)
    result = ScenarioResult("baselines", TITLE)
    settings = emulator_settings(time_scale=scale, polls_count=True)
    with tempfile.TemporaryDirectory(prefix="bench-baselines-") as tmp:
        work = Path(tmp)
        manifest = write_manifest(work / "manifest.jsonl", items)
        jobs = jobs_of(manifest)
        with Emulator(settings, work / "ours") as emu:
            ours_run = run_pipeline(manifest, work, emu.url, {"time_scale": scale}, name="ours", timeout=180)
            ours = {"items": ours_run.summary["succeeded"], "seconds": ours_run.run_seconds,
                    "throttled": emu.counters()["throttled_total"]}
        with Emulator(settings, work / "sdk") as emu:
            sdk = sdk_loop(emu.endpoint, jobs[:sdk_items], scale)  # the manifest cycles over all six
            sdk["throttled"] = emu.counters()["throttled_total"]
        with Emulator(settings, work / "gather") as emu:
            gathered = asyncio.run(gather_baseline(emu.url, jobs, scale))
            gathered["throttled"] = emu.counters()["throttled_total"]
    rate = {name: r["items"] / r["seconds"] for name, r in (("ours", ours), ("sdk", sdk), ("gather", gathered))}
    result.add("speedup over (a) the SDK loop (items/s ratio)", rate["ours"] / rate["sdk"], unit="×", digits=1)
    result.add("speedup over (b) gather + semaphore (items/s ratio)", rate["ours"] / rate["gather"], unit="×",
               digits=2)
    result.add("429s caused: pipeline", ours["throttled"])
    result.add("429s caused: (a) SDK loop", sdk["throttled"], note=f"over its {sdk_items} items")
    result.add("429s caused: (b) gather + semaphore", gathered["throttled"])
    result.add("429s per item: (b) gather + semaphore", gathered["throttled"] / items, digits=2)
    result.raw = {"items": items, "time_scale": scale, "ours": ours, "sdk_loop": sdk, "gather": gathered,
                  "items_per_s": rate, "capabilities": list(ALL_CAPS), "concurrency": CONCURRENCY,
                  "sleep_on_429_s": SLEEP_ON_429, "poll_every_s": POLL_EVERY}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw` (what `run` measured)."""
    items, caps = raw["items"], raw["capabilities"]
    ours, sdk, gathered, rate = raw["ours"], raw["sdk_loop"], raw["gather"], raw["items_per_s"]
    return [
        f"{items} items cycling over all {len(caps)} capabilities (every one of {', '.join(caps)}), emulator time "
        f"scale {raw['time_scale']:g} with the default limits and durations, polls count against the limits. "
        f"Pipeline: {ours['items']} items in {ours['seconds']:.2f} s (its summary's wall time), default config. "
        f"(a) ran only the first {sdk['items']} items ({sdk['items'] // len(caps)} per capability) in "
        f"{sdk['seconds']:.1f} s; its items/s is extrapolated from them ({items / rate['sdk']:.0f} s for all "
        f"{items} at that rate). (b) ran all {gathered['items']} in {gathered['seconds']:.2f} s: concurrency "
        f"{raw['concurrency']}, a 429 retried after {raw['sleep_on_429_s']:g} emulated s, polls every "
        f"{raw['poll_every_s']:g} emulated s."]
