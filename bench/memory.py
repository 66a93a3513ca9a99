"""Scenario 4: a 1,000,000-line manifest streamed through `validate` and through `run`.

`validate` reads every line. A full million-item `run` does not fit the suite's time budget,
so `run` goes for a bounded time against a fast emulator (limits off, tasks done at once) and
is then stopped with SIGTERM (a clean stop, exit 3; if it has not exited GRACE seconds
later, a second SIGTERM makes it exit at once, and that is reported); its RSS is sampled throughout, so the
figures at 25 %, 50 % and 100 % of that time show whether memory grows with the items done.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .common import (
    PYTHON,
    Emulator,
    ScenarioResult,
    fast_client,
    fast_emulator,
    measure,
    rss_at,
    run_pipeline,
    thin,
    write_manifest,
)

TITLE = "Memory with a 1,000,000-line manifest"
GRACE = 5.0  # seconds the first SIGTERM gets before a second one (the CLI's immediate exit)


def run(quick: bool = False) -> ScenarioResult:
    lines, run_for = (20_000, 4.0) if quick else (1_000_000, 30.0)
    result = ScenarioResult("memory", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        manifest = write_manifest(work / "manifest.jsonl", lines)
        size_mb = manifest.stat().st_size / 1e6
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
    bounded = stopped is not None
    result.add("validate: peak RSS", validate.peak_rss_mb, unit="MB", target=("<=", 200), digits=1)
    result.add("validate: lines per second", lines / validate.wall, unit="lines/s", digits=0)
    result.add("run: peak RSS" + (" (bounded run)" if bounded else ""), run_.proc.peak_rss_mb, unit="MB",
               target=("<=", 200), digits=1)
    result.add("run: items processed" + (f" in {run_for:g} s (bounded run)" if bounded else ""), processed)
    result.add("run: items per second", processed / (stopped or run_.proc.wall), unit="items/s", digits=0)
    points = {}
    if bounded:
        for pct in (25, 50, 100):
            points[pct] = rss_at(samples, stopped * pct / 100)
            result.add(f"run: RSS at {pct}% of the bounded time", points[pct], unit="MB", digits=1)
        result.add("run: RSS growth 50% → 100% of the time", points[100] / points[50], unit="×", digits=3)
        clean = run_.proc.forced_at is None
        result.add(f"run: exited on the first SIGTERM within {GRACE:g} s (1 = yes)", int(clean), target=(">=", 1),
                   note="DESIGN.md invariant 7: a run always ends")
        if not clean:
            result.notes.append(
                f"MISS: the first SIGTERM did NOT end the run: it was still running {GRACE:g} s later, having used "
                f"{run_.proc.cpu_after_stop or 0:.2f} CPU s since the signal (so it was stuck waiting, not busy), and "
                f"exited only on a second SIGTERM (the CLI's immediate exit, code {run_.proc.exit_code}). "
                "Its stderr ends: "
                + " | ".join(line for line in run_.proc.stderr.strip().splitlines()[-3:] if "progress:" not in line))
    result.notes.append(
        f"Manifest: {lines:,} lines ({size_mb:.0f} MB) cycling over all six capabilities. `validate` "
        f"read all of it in {validate.wall:.1f} s. "
        + (f"`run` is a BOUNDED run: stopped with SIGTERM after {stopped:.1f} s (exit code "
           f"{run_.proc.exit_code}), having finished {processed:,} of {lines:,} items; the full "
           "run would take about "
           f"{lines / max(processed / stopped, 1) / 60:.0f} min at that rate."
           if bounded else f"`run` finished all items in {run_.proc.wall:.1f} s.")
        + " Emulator limits off and task durations 0; client limits 100,000 QPS, first poll after 5 ms.")
    result.raw = {"lines": lines, "manifest_mb": size_mb,
                  "validate": {"wall_s": validate.wall, "cpu_s": validate.cpu, "peak_rss_mb": validate.peak_rss_mb},
                  "run": {"bounded_s": stopped, "exit_code": run_.proc.exit_code, "processed": processed,
                          "peak_rss_mb": run_.proc.peak_rss_mb, "cpu_s": run_.proc.cpu,
                          "rss_at_pct": points, "rss_samples_every_1s": thin(samples)}}
    return result
