"""Scenario 3: how fast the client itself can go, with the limits effectively off.

The emulator allows 100,000 QPS per capability and finishes every task at once; the client
is told the same limits and polls almost immediately. Whatever rate comes out is the
client's ceiling, unless the emulator (one Python process, one core) runs out first: its
CPU time over the same interval says which. Items per second use the run's own wall time
(from its summary); CPU per item is the whole client process, interpreter start-up included.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .emulator_process import Emulator, fast_client, fast_emulator, fast_settings_raw
from .figures import ScenarioResult
from .manifests import ALL_CAPS, ASYNC_CAPS, LIMITS, write_manifest
from .processes import run_pipeline

TITLE = "Client ceiling (limits off, zero task duration)"
WORKERS = 8  # submit_workers per capability: the default
TARGET_ITEMS_PER_S = 1000  # the client's ceiling must reach this, in both runs
#: Emulator CPU use (cores) from which it counts as a co-bottleneck of the measurement.
BUSY_CORES = 0.85


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
    """Measure the scenario; `quick` is a tiny smoke variant."""
    sync_items, async_items = (600, 600) if quick else (12_000, 10_000)
    result = ScenarioResult("client_ceiling", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        sync = _one(Path(tmp), "sync", sync_items, ["object_detection"])
        mix = _one(Path(tmp), "async", async_items, ASYNC_CAPS)
    for label, r in (("sync object_detection", sync), ("async mix", mix)):
        result.add(f"items per second, {label}", r["items_per_s"], unit="items/s",
                   target=(">=", TARGET_ITEMS_PER_S), digits=0)
        result.add(f"client CPU ms per item, {label}", r["client_cpu_ms_per_item"], unit="ms", digits=3)
        result.add(f"client CPU use, {label} (cores)", r["client_cores"], digits=2)
        result.add(f"emulator CPU use, {label} (cores)", r["emulator_cores"], digits=2)
    result.add("requests per item, async mix", mix["requests_per_item"], digits=2)
    result.raw = {"sync": sync, "async": mix, "all_caps": list(ALL_CAPS), "async_caps": list(ASYNC_CAPS),
                  "limits": dict(LIMITS), "submit_workers": WORKERS, "busy_emulator_cores": BUSY_CORES,
                  **fast_settings_raw()}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw` (what `run` measured)."""
    sync, mix = raw["sync"], raw["async"]
    all_limits = sum(raw["limits"].values())
    slower = min(sync["items_per_s"], mix["items_per_s"])
    out = [
        f"{sync['items']:,} object_detection items, then {mix['items']:,} items spread over "
        f"{', '.join(raw['async_caps'])}; emulator and client limits {raw['limit_qps']:,} QPS per capability, "
        f"task durations {raw['task_duration_s']:g}, client submit_workers {raw['submit_workers']} per "
        f"capability, first poll after {1000 * raw['first_poll_s']:g} ms. The slower of the two ceilings, "
        f"{slower:,.0f} items/s, is {slower / all_limits:.0f}× the {all_limits} requests/s that all "
        f"{len(raw['limits'])} real limits allow together (and every item needs at least one request)."]
    busy = [label for label, r in (("sync", sync), ("async mix", mix))
            if r["emulator_cores"] >= raw["busy_emulator_cores"]]
    if busy:
        out.append(
            f"The emulator used ≥ {raw['busy_emulator_cores']:g} of a core during the {' and '.join(busy)} run(s): "
            f"on this {machine['cores']}-core machine it is at least a co-bottleneck, so the client's true "
            "ceiling is higher than shown.")
    out.extend(raw.get("measured_with", []))  # later before/after comparisons, said how they were made
    return out
