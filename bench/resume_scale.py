"""Scenario: resume cost against the done count (issue 21): a real state dir grown by 1,000 items.

For each done count N: the state of a run that finished N items is built the quick way
(`resume.build_state`: results file and checkpoint rows, no fingerprints), then one real run
reads the whole catalog once (it adopts every fingerprint and, from this version on, records
where it read to: the state a finished nightly run leaves). The manifest then grows by 1,000
items at its end (the nightly append) and the run is started again: that start is measured,
process spawn to the emulator's first accepted request, with its peak RSS and CPU.

The done counts come from `BENCH_RESUME_SIZES` (comma-separated, default 100k,300k,1M,3M), so
the same file measures an older checkout for the "before" figures.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .emulator_process import Emulator, fast_client, fast_emulator, submissions
from .figures import ScenarioResult
from .manifests import write_manifest
from .processes import rss_at, run_pipeline
from .resume import build_state

TITLE = "Resume cost against the done count (manifest grown by 1,000 items)"
SIZES = (100_000, 300_000, 1_000_000, 3_000_000)
QUICK_SIZES = (5_000, 20_000)
GROWN = 1_000
TARGET_RATIO = 1.5  # time to the first submission, largest ÷ smallest done count
TARGET_LARGEST_S = 2.0
TARGET_RSS_MB = 120.0
TIMEOUT_S = 3600.0


def sizes(quick: bool) -> tuple[int, ...]:
    """The done counts to measure (`BENCH_RESUME_SIZES` overrides the default)."""
    given = os.environ.get("BENCH_RESUME_SIZES")
    if given:
        return tuple(int(float(s)) for s in given.split(","))
    return QUICK_SIZES if quick else SIZES


def one(done: int, work: Path) -> dict[str, Any]:
    """Build, read once in full, grow, resume: the figures of the measured resume."""
    t0 = time.monotonic()
    manifest, out, state_dir = build_state(work, done, 0)
    build_s = time.monotonic() - t0
    with Emulator(fast_emulator(), work / "emulator") as emu:
        first = run_pipeline(manifest, work, emu.url, fast_client(), name="full", out=out, state_dir=state_dir,
                             timeout=TIMEOUT_S)
        write_manifest(manifest, GROWN, start=done, mode="a")
        grown = run_pipeline(manifest, work, emu.url, fast_client(), name="grown", out=out, state_dir=state_dir,
                             timeout=TIMEOUT_S)
        counters = emu.counters()
    at = counters["first_offered_at"]
    to_first = None if at is None else at - grown.proc.started_at
    return {"done": done, "build_s": build_s, "full_read_wall_s": first.proc.wall, "full_read_cpu_s": first.proc.cpu,
            "full_read_peak_rss_mb": first.proc.peak_rss_mb, "to_first_submission_s": to_first,
            "rss_at_first_mb": rss_at(grown.proc.samples, to_first) if to_first and grown.proc.samples else None,
            "peak_rss_mb": grown.proc.peak_rss_mb, "wall_s": grown.proc.wall, "cpu_s": grown.proc.cpu,
            "accepted": submissions(counters), "exit_code": grown.proc.exit_code,
            "catalog": grown.summary.get("catalog")}


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    points = []
    for done in sizes(quick):
        with tempfile.TemporaryDirectory(prefix="bench-resume-scale-") as tmp:
            points.append(one(done, Path(tmp)))
    return result_of({"points": points, "grown": GROWN})


def result_of(raw: Mapping[str, Any]) -> ScenarioResult:
    """The figures of measured `raw` (`run`'s, or one saved from it)."""
    result = ScenarioResult("resume_scale", TITLE)
    points = raw["points"]
    for p in points:
        result.add(f"{p['done']:,} done: to the first new submission", p["to_first_submission_s"], unit="s", digits=2)
        result.add(f"{p['done']:,} done: peak RSS of the grown run", p["peak_rss_mb"], unit="MB", digits=1,
                   target=("<=", TARGET_RSS_MB))
        result.add(f"{p['done']:,} done: CPU of the grown run (whole process)", p["cpu_s"], unit="s", digits=2)
    low, high = points[0], points[-1]
    if low["to_first_submission_s"] and high["to_first_submission_s"]:
        result.add(f"to the first submission, {high['done']:,} ÷ {low['done']:,} done",
                   high["to_first_submission_s"] / low["to_first_submission_s"], unit="×", digits=2,
                   target=("<=", TARGET_RATIO))
        result.add(f"peak RSS, {high['done']:,} ÷ {low['done']:,} done", high["peak_rss_mb"] / low["peak_rss_mb"],
                   unit="×", digits=2)
    result.raw = dict(raw)
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw`."""
    points = raw["points"]
    out = [f"Each done count: the state built the quick way, one full read of the catalog (which adopts the "
           f"fingerprints and records the read position), then {raw['grown']:,} items appended to the manifest and "
           "the run started again; measured from the spawn (interpreter start-up included) to the emulator's first "
           "accepted request."]
    for p in points:
        out.append(f"{p['done']:,} done: the full read took {p['full_read_wall_s']:.1f} s wall, "
                   f"{p['full_read_cpu_s']:.1f} s CPU, peak {p['full_read_peak_rss_mb']:.0f} MB; the grown run "
                   f"reached its first submission in {p['to_first_submission_s'] or 0:.2f} s, whole run "
                   f"{p['wall_s']:.1f} s wall / {p['cpu_s']:.1f} s CPU, peak {p['peak_rss_mb']:.0f} MB; "
                   f"{p['accepted']:,} accepted submissions; catalog {p['catalog']}.")
    for line in raw.get("measured_with", []):
        out.append(line)
    if len(points) >= 2:
        a, b = points[-2], points[-1]
        ta, tb = a["to_first_submission_s"] or 0, b["to_first_submission_s"] or 0
        slope = (tb - ta) / (b["done"] - a["done"]) if b["done"] != a["done"] else 0.0
        rslope = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["done"] - a["done"]) if b["done"] != a["done"] else 0.0
        ten = 10_000_000
        out.append(f"10M extrapolation, from the slope between the two largest points "
                   f"({slope * 1e6:.3f} µs and {rslope * 1e6:.1f} B of RSS per done item): "
                   f"{tb + slope * (ten - b['done']):.2f} s to the first submission and "
                   f"{b['peak_rss_mb'] + rslope * (ten - b['done']):.0f} MB peak RSS.")
    return out
