"""Scenario 3: how fast the client itself can go, with the limits effectively off.

The emulator allows 100,000 QPS per capability and finishes every task at once; the client
is told the same limits and polls almost immediately. Whatever rate comes out is the
client's ceiling, unless the emulator (one Python process, one core) runs out first: its
CPU time over the same interval says which. Items per second use the run's own wall time
(from its summary); CPU per item is the whole client process, interpreter start-up included.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import (
    ALL_CAPS,
    ASYNC_CAPS,
    LIMITS,
    Emulator,
    ScenarioResult,
    fast_client,
    fast_emulator,
    run_pipeline,
    write_manifest,
)

TITLE = "Client ceiling (limits off, zero task duration)"
WORKERS = 8  # submit_workers per capability: the default


def _one(work: Path, name: str, items: int, caps: Sequence[str]) -> dict[str, Any]:
    manifest = write_manifest(work / f"{name}.jsonl", items, caps)
    with Emulator(fast_emulator(), work / name) as emu:
        before = emu.cpu()
        run_ = run_pipeline(manifest, work, emu.url, fast_client(submit_workers=WORKERS), name=name, timeout=120)
        emulator_cpu = emu.cpu() - before
        counters = emu.counters()
    seconds = run_.run_seconds
    return {"items": items, "succeeded": run_.summary["succeeded"], "run_s": seconds,
            "process_wall_s": run_.proc.wall, "items_per_s": run_.summary["succeeded"] / seconds,
            "client_cpu_s": run_.proc.cpu, "client_cpu_ms_per_item": 1000 * run_.proc.cpu / items,
            "client_cores": run_.proc.cpu / run_.proc.wall, "client_peak_rss_mb": run_.proc.peak_rss_mb,
            "emulator_cpu_s": emulator_cpu, "emulator_cores": emulator_cpu / run_.proc.wall,
            "requests": counters["requests_total"], "requests_per_item": counters["requests_total"] / items}


def run(quick: bool = False) -> ScenarioResult:
    sync_items, async_items = (600, 600) if quick else (12_000, 10_000)
    result = ScenarioResult("client_ceiling", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        sync = _one(Path(tmp), "sync", sync_items, ["object_detection"])
        mix = _one(Path(tmp), "async", async_items, ASYNC_CAPS)
    for label, r in (("sync object_detection", sync), ("async mix", mix)):
        result.add(f"items per second, {label}", r["items_per_s"], unit="items/s", target=(">=", 1000), digits=0)
        result.add(f"client CPU ms per item, {label}", r["client_cpu_ms_per_item"], unit="ms", digits=3)
        result.add(f"client CPU use, {label} (cores)", r["client_cores"], digits=2)
        result.add(f"emulator CPU use, {label} (cores)", r["emulator_cores"], digits=2)
    result.add("requests per item, async mix", mix["requests_per_item"], digits=2)
    all_limits = sum(LIMITS.values())
    busy = [label for label, r in (("sync", sync), ("async mix", mix)) if r["emulator_cores"] >= 0.85]
    result.notes.append(
        f"{sync_items:,} object_detection items, then {async_items:,} items spread over {', '.join(ASYNC_CAPS)}; "
        f"emulator and client limits {100_000:,} QPS per capability, task durations 0, client "
        f"submit_workers {WORKERS} per capability, first poll after 5 ms. The slower of the two ceilings, "
        f"{min(sync['items_per_s'], mix['items_per_s']):,.0f} items/s, is "
        f"{min(sync['items_per_s'], mix['items_per_s']) / all_limits:.0f}× the {all_limits} requests/s that all "
        "six real limits allow together (and every item needs at least one request).")
    if busy:
        result.notes.append(
            f"The emulator used ≥ 0.85 of a core during the {' and '.join(busy)} run(s): on this 2-core "
            "machine it is at least a co-bottleneck, so the client's true ceiling is higher than shown.")
    result.raw = {"sync": sync, "async": mix, "all_caps": list(ALL_CAPS)}
    return result
