"""Scenario 4: a 1,000,000-line manifest streamed through `validate` and through `run`.

`validate` reads every line. A full million-item `run` does not fit the suite's time budget,
so `run` goes for a bounded time against a fast emulator (limits off, tasks done at once) and
is then stopped with SIGTERM (a clean stop, exit 3; if it has not exited GRACE seconds later,
a second SIGTERM makes it exit at once, and that is reported); its RSS is sampled throughout,
so the figures at 25 %, 50 % and 100 % of that time show whether memory grows with the items done.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .emulator_process import Emulator, fast_client, fast_emulator, fast_settings_raw
from .environment import PYTHON
from .figures import ScenarioResult
from .manifests import ALL_CAPS, write_manifest
from .processes import measure, rss_at, run_pipeline, thin

TITLE = "Memory with a 1,000,000-line manifest"
GRACE = 5.0  # seconds the first SIGTERM gets before a second one (the CLI's immediate exit)
TARGET_PEAK_MB = 200  # peak RSS of `validate` and of `run`, at most
POINTS_PCT = (25, 50, 100)  # RSS read at these shares of the bounded run's time
STDERR_LINES = 3  # lines of a stuck run's stderr quoted in the MISS note
SECONDS_PER_MINUTE = 60
BYTES_PER_MB = 1e6


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    lines, run_for = (20_000, 4.0) if quick else (1_000_000, 30.0)
    result = ScenarioResult("memory", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        manifest = write_manifest(work / "manifest.jsonl", lines)
        size_mb = manifest.stat().st_size / BYTES_PER_MB
        validate = measure([PYTHON, "-m", "pipeline", "validate", str(manifest), "--json"], work, "validate",
                           timeout=300)
        if validate.exit_code != 0:
            raise RuntimeError(f"validate failed (exit {validate.exit_code}): {validate.stderr[-2000:]}")
        with Emulator(fast_emulator(), work / "emulator") as emu:
            run_ = run_pipeline(manifest, work, emu.url, fast_client(), name="run", stop_after=run_for,
                                grace=GRACE, timeout=run_for + 120)
        processed = run_.lines()
        samples = [s for s in run_.proc.samples if s[0] <= (run_.proc.stopped_at or run_.proc.wall)]
    stopped = run_.proc.stopped_at
    result.add("validate: peak RSS", validate.peak_rss_mb, unit="MB", target=("<=", TARGET_PEAK_MB), digits=1)
    result.add("validate: lines per second", lines / validate.wall, unit="lines/s", digits=0)
    result.add("run: peak RSS" + (" (bounded run)" if stopped is not None else ""), run_.proc.peak_rss_mb,
               unit="MB", target=("<=", TARGET_PEAK_MB), digits=1)
    result.add("run: items processed" + (f" in {run_for:g} s (bounded run)" if stopped is not None else ""),
               processed)
    result.add("run: items per second", processed / (stopped or run_.proc.wall), unit="items/s", digits=0)
    points: dict[int, float] = {}
    if stopped is not None:
        for pct in POINTS_PCT:
            points[pct] = rss_at(samples, stopped * pct / 100)
            result.add(f"run: RSS at {pct}% of the bounded time", points[pct], unit="MB", digits=1)
        result.add("run: RSS growth 50% → 100% of the time", points[100] / points[50], unit="×", digits=3)
        result.add(f"run: exited on the first SIGTERM within {GRACE:g} s (1 = yes)", int(run_.proc.forced_at is None),
                   target=(">=", 1), note="docs/design.md invariant 7: a run always ends")
    stderr_tail = [line for line in run_.proc.stderr.strip().splitlines() if "progress:" not in line]
    result.raw = {"lines": lines, "manifest_mb": size_mb, "capabilities": list(ALL_CAPS), "grace_s": GRACE,
                  **fast_settings_raw(),
                  "validate": {"wall_s": validate.wall, "cpu_s": validate.cpu, "peak_rss_mb": validate.peak_rss_mb},
                  "run": {"bounded_s": stopped, "exit_code": run_.proc.exit_code, "processed": processed,
                          "wall_s": run_.proc.wall, "forced": run_.proc.forced_at is not None,
                          "cpu_after_stop_s": run_.proc.cpu_after_stop, "stderr_tail": stderr_tail[-STDERR_LINES:],
                          "peak_rss_mb": run_.proc.peak_rss_mb, "cpu_s": run_.proc.cpu,
                          "rss_at_pct": points, "rss_samples_every_1s": thin(samples)}}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw` (what `run` measured)."""
    lines, run, validate = raw["lines"], raw["run"], raw["validate"]
    out = []
    if run.get("forced"):
        out.append(
            f"MISS: the first SIGTERM did NOT end the run: it was still running {raw['grace_s']:g} s later, having "
            f"used {run['cpu_after_stop_s'] or 0:.2f} CPU s since the signal (so it was stuck waiting, not busy), "
            f"and exited only on a second SIGTERM (the CLI's immediate exit, code {run['exit_code']}). Its stderr "
            "ends: " + " | ".join(run["stderr_tail"]))
    bounded = run["bounded_s"]
    if bounded is not None:
        rate = max(run["processed"] / bounded, 1)
        how = (f"`run` is a BOUNDED run: stopped with SIGTERM after {bounded:.1f} s (exit code {run['exit_code']}), "
               f"having finished {run['processed']:,} of {lines:,} items; the full run would take about "
               f"{lines / rate / SECONDS_PER_MINUTE:.0f} min at that rate.")
    else:
        how = f"`run` finished all items in {run['wall_s']:.1f} s."
    out.append(
        f"Manifest: {lines:,} lines ({raw['manifest_mb']:.0f} MB) cycling over all {len(raw['capabilities'])} "
        f"capabilities. `validate` read all of it in {validate['wall_s']:.1f} s. {how} Emulator limits off and "
        f"task durations {raw['task_duration_s']:g}; client limits {raw['limit_qps']:,} QPS, first poll after "
        f"{1000 * raw['first_poll_s']:g} ms.")
    return out
