"""The nightly diff of a 1,000,000-item catalog (part of the `nightly_delta` scenario).

Night 1 is built the way the sink leaves it, only faster: a manifest of N object-detection
items, one result line each (with its `source` and `fingerprint`, computed by the pipeline's
own `core.fingerprint` from the items as `read_manifest` makes them), marked done in the
checkpoint in big batches (`Checkpoint.mark_done`). Night 2 rewrites the manifest in place:
1% of the items get a new URL (changed), 0.1% are removed (vanished), 0.1% are new.

Measured, each in its own process (`catalog_diff_io`, so peak RSS is its own):
- reading night 2's catalog alone (parsed and validated, as a run reads it);
- deciding its delta against night 1's state (the same read, plus fingerprints, one checkpoint
  query per batch, the decisions, the keys seen, the vanished count): the ratio of the two is
  the cost of the catalog over a plain read;
- the real night-2 `run` against the emulator (limits off): what the emulator counted as
  submitted must be exactly the changed and new items; its wall time and peak RSS.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.core.fingerprint import fingerprint, source_of
from pipeline.core.job import Job
from pipeline.manifest.reader import read_manifest
from pipeline.state.catalog import SESSION_KEY
from pipeline.state.checkpoint import Checkpoint, Outcome

from .emulator_process import Emulator, fast_client, fast_emulator, submissions
from .environment import PYTHON
from .processes import measure, run_pipeline

ITEMS, QUICK_ITEMS = 1_000_000, 20_000
CHANGED_EVERY, VANISHED_EVERY = 100, 1000  # 1% changed, 0.1% removed (and 0.1% new)
BATCH = 100_000  # lines marked done per checkpoint transaction while building night 1
RATIO_TARGET = 1.5  # decide ÷ read, at most
RSS_TARGET_MB = 150
ITEM = '{"id":"item-%07d","capability":"object_detection","url":"https://example.com/%s/%07d.jpg"}\n'


def write_night(path: Path, items: int, night: int) -> dict[str, int]:
    """The catalog's manifest on `night` (1 or 2); what night 2 changed, by kind."""
    changed = vanished = new = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(items):
            if night == 2 and i % VANISHED_EVERY == 1:
                vanished += 1
                continue
            moved = night == 2 and i % CHANGED_EVERY == 0
            changed += moved
            f.write(ITEM % (i, "c2" if moved else "c", i))
        if night == 2:
            new = items // VANISHED_EVERY
            for i in range(items, items + new):
                f.write(ITEM % (i, "c", i))
    return {"changed": changed, "vanished": vanished, "new": new}


def build_night1(work: Path, items: int) -> tuple[Path, Path, Path]:
    """Manifest, results file and state dir of a catalog whose first night finished every item."""
    manifest = work / "catalog.jsonl"
    write_night(manifest, items, 1)
    out, state_dir = work / "run" / "results.jsonl", work / "run" / "state"
    out.parent.mkdir(parents=True)
    ckpt = Checkpoint.open(state_dir)
    try:
        ckpt.set_meta("out", str(out.resolve()))
        ckpt.set_meta("manifest", str(manifest.resolve()))
        ckpt.set_meta("created_at", str(time.time()))
        ckpt.set_meta(SESSION_KEY, "1")
        with open(out, "wb") as f:
            outcomes: list[Outcome] = []
            chunks: list[bytes] = []
            at = 0
            for job in read_manifest(manifest):
                assert isinstance(job, Job)
                fp, source = fingerprint(job), source_of(job)
                raw = json.dumps({"id": job.id, "analysis": job.analysis, "capability": job.capability,
                                  "service_id": job.service_id, "status": "SUCCESS", "task_id": None,
                                  "data": {"objects": []}, "usage": {"image_count": 1}, "error": None,
                                  "attempts": 1, "polls": 0, "submitted_at": "2025-01-01T00:00:00.000Z",
                                  "finished_at": "2025-01-01T00:00:00.100Z", "elapsed_s": 0.1, "meta": None,
                                  "source": source, "fingerprint": fp}, separators=(",", ":")).encode() + b"\n"
                outcomes.append(Outcome(job.key, job.capability, job.service_id, "SUCCESS", None, None,
                                        {"image_count": 1}, 0.1, 1, line_at=at, fingerprint=fp, source=source))
                chunks.append(raw)
                at += len(raw)
                if len(outcomes) >= BATCH:
                    f.write(b"".join(chunks))
                    f.flush()
                    ckpt.mark_done(outcomes, sink_offset=f.tell())
                    outcomes, chunks = [], []
            f.write(b"".join(chunks))
            f.flush()
            ckpt.mark_done(outcomes, sink_offset=f.tell())
    finally:
        ckpt.close()
    return manifest, out, state_dir


def _child(argv: list[str], work: Path, name: str) -> dict[str, Any]:
    run = measure([PYTHON, "-m", "bench.catalog_diff_io", *argv], work, name, timeout=3600)
    if run.exit_code != 0:
        raise RuntimeError(f"{name} failed (exit {run.exit_code}): {run.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads((work / f"{name}.stdout").read_text())
    figures.update(wall_s=round(run.wall, 2), cpu_s=round(run.cpu, 2), sampled_peak_rss_mb=round(run.peak_rss_mb, 1))
    return figures


def measure_diff(work: Path, quick: bool) -> dict[str, Any]:
    """Build night 1, write night 2, then read, decide and run it (see the module docstring)."""
    items = QUICK_ITEMS if quick else ITEMS
    started = time.perf_counter()
    manifest, out, state_dir = build_night1(work, items)
    build_s = time.perf_counter() - started
    delta = write_night(manifest, items, 2)
    read = _child(["read", str(manifest)], work, "catalog-read")
    decide = _child(["decide", str(manifest), str(state_dir)], work, "catalog-decide")
    with Emulator(fast_emulator(), work / "emulator") as emu:
        night2 = run_pipeline(manifest, work, emu.url, fast_client(), name="night2", state_dir=state_dir, out=out,
                              timeout=3600)
        sent = submissions(emu.counters())
    return {"items": items, "build_s": round(build_s, 1), "night2": delta, "read": read, "decide": decide,
            "run": {"submitted": sent, "catalog": night2.summary.get("catalog"), "exit_code": night2.proc.exit_code,
                    "wall_s": round(night2.proc.wall, 2), "run_s": round(night2.run_seconds, 2),
                    "peak_rss_mb": round(night2.proc.peak_rss_mb, 1)}}
