"""Scenario 12: `export --format parquet` of a state dir holding 1,000,000 (item, analysis) lines.

The state is `export_by_item`'s (400,000 items with 2 or 3 analyses, each block's lines shuffled,
so the export reads back and forth in the results file). Then
`python -m pipeline export --format parquet --state-dir D --out F` runs as a child process: its
lines per second, its peak RSS (VmHWM; target TARGET_PEAK_MB, flat with the run's size because
lines go out a row group at a time), and the Parquet file's size against the results file's
(the same lines as JSONL). DuckDB then counts the rows, so the figure is of a file a real
engine reads.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .environment import PYTHON
from .export_by_item import BLOCK, build_state
from .figures import ScenarioResult
from .processes import measure, rss_at, thin

TITLE = "export --format parquet of 1,000,000 (item, analysis) lines"
TARGET_PEAK_MB = 150  # peak RSS of the export, at most
BYTES_PER_MB = 1e6


def _rows(path: Path) -> int:
    import duckdb

    with duckdb.connect() as db:
        found = db.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()
    return int(found[0]) if found else 0


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    lines = 20_000 if quick else 1_000_000
    result = ScenarioResult("export_parquet", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-parquet-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        out, state_dir, items = build_state(work, lines)
        build_s = time.monotonic() - t0
        results_mb = out.stat().st_size / BYTES_PER_MB
        target = work / "results.parquet"
        proc = measure([PYTHON, "-m", "pipeline", "export", "--format", "parquet", "--state-dir", str(state_dir),
                        "--out", str(target)], work, "export", timeout=900)
        if proc.exit_code != 0:
            raise RuntimeError(f"export failed (exit {proc.exit_code}): {proc.stderr[-2000:]}")
        parquet_mb = target.stat().st_size / BYTES_PER_MB
        rows = _rows(target)
    result.add("export: peak RSS", proc.peak_rss_mb, unit="MB", target=("<=", TARGET_PEAK_MB), digits=1)
    half, end = (rss_at(proc.samples, proc.wall * pct / 100) if proc.samples else None for pct in (50, 100))
    if half and end:
        result.add("export: RSS growth 50% → 100% of the time", end / half, unit="×", digits=3)
    result.add("export: wall time", proc.wall, unit="s", digits=1)
    result.add("export: lines per second", lines / proc.wall, unit="lines/s", digits=0)
    result.add("Parquet size ÷ JSONL size", parquet_mb / results_mb, unit="×", digits=3)
    result.add("rows DuckDB reads", rows, note=f"expected {lines:,}")
    result.raw = {"lines": lines, "items": items, "rows": rows, "block": BLOCK, "build_s": build_s,
                  "results_mb": results_mb, "parquet_mb": parquet_mb, "wall_s": proc.wall, "cpu_s": proc.cpu,
                  "peak_rss_mb": proc.peak_rss_mb, "exit_code": proc.exit_code, "rss_at_50_pct_mb": half,
                  "rss_at_100_pct_mb": end, "rss_samples_every_1s": thin(proc.samples)}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw` (what `run` measured)."""
    growth = ""
    if raw.get("rss_at_50_pct_mb") and raw.get("rss_at_100_pct_mb"):
        growth = f" (RSS {raw['rss_at_50_pct_mb']:.1f} MB half-way, {raw['rss_at_100_pct_mb']:.1f} MB at the end)"
    return [
        f"The state of `export_by_item`: {raw['lines']:,} result lines of {raw['items']:,} items "
        f"({raw['results_mb']:.0f} MB of JSONL), built in {raw['build_s']:.0f} s.",
        f"`export --format parquet` wrote {raw['rows']:,} rows (counted by DuckDB) in {raw['wall_s']:.1f} s "
        f"({raw['lines'] / raw['wall_s']:,.0f} lines/s, {raw['cpu_s']:.1f} CPU s), peak RSS "
        f"{raw['peak_rss_mb']:.1f} MB{growth}: lines go out a row group at a time. The file is "
        f"{raw['parquet_mb']:.0f} MB, {raw['parquet_mb'] / raw['results_mb']:.2f} × the JSONL (zstd; usage, data "
        "and meta as JSON text).",
    ]
