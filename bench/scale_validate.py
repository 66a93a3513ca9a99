"""Scenario: `validate` memory against the manifest size, and what shards pay to read (issue 21).

- `python -m pipeline validate MANIFEST --json` on 300,000 and 3,000,000 lines (sizes from
  `BENCH_VALIDATE_SIZES`): peak RSS and CPU of the process. The duplicate-id check keeps its
  ids on disk, so the peak should not grow with the lines.
- 8 shards of a 1,000,000-line catalog (`BENCH_SHARD_LINES`): the reader's CPU over the 8 shards'
  reads (each decides a line's shard from its id before validating it) ÷ the CPU of one
  unsharded read, measured in this process with `time.process_time` around the manifest
  reader alone (what `run --shard K/8` pays to read, without the run around it).
  `BENCH_VALIDATE_SIZES=none` measures this part alone.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.job import Job
from pipeline.manifest.reader import read_manifest
from pipeline.state.shards import Shard

from .environment import PYTHON
from .figures import ScenarioResult
from .manifests import write_manifest
from .processes import measure

TITLE = "validate memory against the manifest size; 8 shards' reading CPU"
SIZES = (300_000, 3_000_000)
QUICK_SIZES = (20_000, 60_000)
SHARD_LINES = 1_000_000
SHARDS = 8
TARGET_RSS_MB = 100.0
TARGET_RSS_RATIO = 1.2
TARGET_SHARD_RATIO = 1.3


def _sizes(quick: bool) -> tuple[int, ...]:
    given = os.environ.get("BENCH_VALIDATE_SIZES")
    if given == "none":  # the shards' part alone (the validate runs take tens of minutes)
        return ()
    return tuple(int(float(s)) for s in given.split(",")) if given else (QUICK_SIZES if quick else SIZES)


def _read_cpu(manifest: Path, shard: Shard | None) -> tuple[float, int]:
    """CPU seconds to stream `manifest` through the reader (as `run --shard` does), and the
    valid jobs it gave."""
    started = time.process_time()
    jobs = 0
    for item in read_manifest(manifest, check_files=False, shard=shard):
        if isinstance(item, Job):
            jobs += shard is None or shard.owns(item.id)
    return time.process_time() - started, jobs


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    points = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-validate-") as tmp:
        work = Path(tmp)
        for lines in _sizes(quick):
            manifest = write_manifest(work / f"m{lines}.jsonl", lines)
            proc = measure([PYTHON, "-m", "pipeline", "validate", str(manifest), "--json"], work, f"validate{lines}",
                           timeout=7200)
            points.append({"lines": lines, "peak_rss_mb": proc.peak_rss_mb, "cpu_s": proc.cpu, "wall_s": proc.wall,
                           "exit_code": proc.exit_code})
            manifest.unlink()
        shard_lines = int(os.environ.get("BENCH_SHARD_LINES", 20_000 if quick else SHARD_LINES))
        manifest = write_manifest(work / "shards.jsonl", shard_lines)
        whole, whole_jobs = _read_cpu(manifest, None)
        parts = [_read_cpu(manifest, Shard(k, SHARDS)) for k in range(SHARDS)]
    return result_of({"validate": points, "shard_lines": shard_lines, "unsharded_cpu_s": whole,
                      "shard_cpu_s": [cpu for cpu, _ in parts], "unsharded_jobs": whole_jobs,
                      "shard_jobs": [n for _, n in parts]})


def result_of(raw: Mapping[str, Any]) -> ScenarioResult:
    """The figures of measured `raw` (`run`'s, or one saved from it)."""
    result = ScenarioResult("scale_validate", TITLE)
    points, whole, shard_lines = raw["validate"], raw["unsharded_cpu_s"], raw["shard_lines"]
    for p in points:
        result.add(f"validate {p['lines']:,} lines: peak RSS", p["peak_rss_mb"], unit="MB", digits=1,
                   target=("<=", TARGET_RSS_MB))
        result.add(f"validate {p['lines']:,} lines: CPU", p["cpu_s"], unit="s", digits=1)
    if len(points) >= 2:
        result.add(f"validate peak RSS, {points[-1]['lines']:,} ÷ {points[0]['lines']:,} lines",
                   points[-1]["peak_rss_mb"] / points[0]["peak_rss_mb"], unit="×", digits=2,
                   target=("<=", TARGET_RSS_RATIO))
    shard_cpu = sum(raw["shard_cpu_s"])
    result.add(f"{SHARDS} shards' reading CPU ÷ one unsharded read ({shard_lines:,} lines)", shard_cpu / whole,
               unit="×", digits=2, target=("<=", TARGET_SHARD_RATIO))
    result.add("jobs read by the shards together ÷ unsharded", sum(raw["shard_jobs"]) / max(raw["unsharded_jobs"], 1),
               unit="×", digits=3, target=("<=", 1.0))
    result.raw = dict(raw)
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw`."""
    out = [f"validate {p['lines']:,} lines: {p['wall_s']:.0f} s wall, {p['cpu_s']:.0f} s CPU, peak "
           f"{p['peak_rss_mb']:.0f} MB (exit {p['exit_code']})." for p in raw["validate"]]
    out.append(f"Shards: one unsharded read of {raw['shard_lines']:,} lines took {raw['unsharded_cpu_s']:.1f} s CPU; "
               f"the {len(raw['shard_cpu_s'])} shards' reads {sum(raw['shard_cpu_s']):.1f} s together "
               f"({', '.join(f'{c:.1f}' for c in raw['shard_cpu_s'])}); each passes over another shard's line "
               "from its bytes (the id that opens it, hashed), decodes the lines its line number gives it (the "
               "owner of a malformed line) and validates its own.")
    out.extend(raw.get("measured_with", []))
    return out
