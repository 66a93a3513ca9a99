"""Scenario 10: `export --by-item` of a state dir holding 1,000,000 (item, analysis) lines.

The state is built the way the sink leaves it, only faster: 400,000 items with 2 or 3
analyses each (caption, objects, and ocr for every other item; one line in FAILED_EVERY
failed), their lines written to the results file in big batches and marked done in the
checkpoint with each line's offset (`Checkpoint.mark_done`), and the run's `out` meta key.
A run does not write an item's analyses together: they finish at different times. So the file
is written a block of BLOCK items at a time, each block's lines shuffled (seeded), and the
export has to seek back and forth for every item.

Then `python -m pipeline export --by-item --state-dir D --out F` runs as a child process: its
peak RSS (VmHWM from /proc) must not grow with the run; the target is TARGET_PEAK_MB.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.job import job_key
from pipeline.state.checkpoint import Checkpoint, Outcome

from .environment import PYTHON
from .figures import ScenarioResult
from .manifests import count_lines
from .processes import measure, rss_at, thin

TITLE = "export --by-item of 1,000,000 (item, analysis) lines"
TARGET_PEAK_MB = 150  # peak RSS of the export, at most
BLOCK = 2_000  # items whose lines are shuffled together (they "finish" in the same stretch)
BATCH_BLOCKS = 20  # blocks written and marked done per checkpoint transaction
FAILED_EVERY = 97  # one line in this many is a failed analysis
SEED = 10
BYTES_PER_MB = 1e6
#: analysis -> (capability, service id); items with an odd number have "ocr" too.
ANALYSES = {"caption": ("image_analyze", "ops-image-analyze-caption-001"),
            "objects": ("object_detection", "ops-object-detect-001"),
            "ocr": ("image_analyze", "ops-image-analyze-ocr-001")}
LABELS = ("cat", "dog", "car", "person", "tree", "bicycle", "sign")


def item_count(lines: int) -> int:
    """Items whose 2 or 3 analyses (alternately) make `lines` lines (`lines` a multiple of 5)."""
    return lines * 2 // 5


def _data(analysis: str, i: int) -> dict[str, Any]:
    """A small, realistic result body."""
    if analysis == "caption":
        return {"caption": f"a {LABELS[i % 7]} next to a {LABELS[(i + 3) % 7]} on a sunny street, photo {i}",
                "tags": [LABELS[i % 7], LABELS[(i + 3) % 7], "outdoor"]}
    if analysis == "objects":
        return {"objects": [{"label": LABELS[(i + k) % 7], "score": round(0.5 + (i * 7 + k) % 50 / 100, 2),
                             "box": [10 * k, 20 + k, 110 + 10 * k, 220 + k]} for k in range(1 + i % 3)]}
    return {"text": f"INVOICE No. {i:08d}  TOTAL 1{i % 1000:03d}.50 EUR", "lines": 3}


def _line(i: int, analysis: str, n: int, at: int) -> tuple[bytes, Outcome]:
    """The result line (with its newline) of analysis `analysis` of item `i`, the `n`-th line,
    and its outcome as the checkpoint keeps it when the line starts at byte `at`."""
    capability, service_id = ANALYSES[analysis]
    item_id = f"item-{i:07d}"
    failed = n % FAILED_EVERY == 0
    error = {"code": "InvalidParameter", "message": "image too small", "http_status": 400} if failed else None
    task_id = None if capability == "object_detection" else f"task-{n}"
    record = {"id": item_id, "analysis": analysis, "capability": capability, "service_id": service_id,
              "status": "FAILED" if failed else "SUCCESS", "task_id": task_id,
              "data": None if failed else _data(analysis, i), "usage": None if failed else {"image_count": 1},
              "error": error,
              "attempts": 1, "polls": 0 if task_id is None else 1, "submitted_at": "2025-01-01T00:00:00.000Z",
              "finished_at": "2025-01-01T00:00:01.250Z", "elapsed_s": 1.25, "meta": {"batch": "2025-01", "n": i}}
    raw = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
    outcome = Outcome(job_key(item_id, analysis), capability, service_id, str(record["status"]), task_id,
                      "InvalidParameter" if failed else None, None if failed else {"image_count": 1}, 1.25, 1,
                      line_at=at)
    return raw, outcome


def build_state(work: Path, lines: int) -> tuple[Path, Path, int]:
    """Results file and state dir of a run that finished `lines` (item, analysis) lines; and the items."""
    items = item_count(lines)
    out, state_dir = work / "run" / "results.jsonl", work / "run" / "state"
    out.parent.mkdir(parents=True)
    rng = random.Random(SEED)
    ckpt = Checkpoint.open(state_dir)
    n = 0
    try:
        ckpt.set_meta("out", str(out.resolve()))
        ckpt.set_meta("created_at", str(time.time()))
        with open(out, "wb") as f:
            for start in range(0, items, BLOCK * BATCH_BLOCKS):
                chunks: list[bytes] = []
                outcomes: list[Outcome] = []
                at = f.tell()
                for block in range(start, min(start + BLOCK * BATCH_BLOCKS, items), BLOCK):
                    pending = [(i, a) for i in range(block, min(block + BLOCK, items))
                               for a in (("caption", "objects", "ocr") if i % 2 else ("caption", "objects"))]
                    rng.shuffle(pending)
                    for i, analysis in pending:
                        raw, outcome = _line(i, analysis, n, at)
                        chunks.append(raw)
                        outcomes.append(outcome)
                        at += len(raw)
                        n += 1
                f.write(b"".join(chunks))
                f.flush()
                ckpt.mark_done(outcomes, sink_offset=f.tell())
    finally:
        ckpt.close()
    return out, state_dir, items


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    lines = 20_000 if quick else 1_000_000
    result = ScenarioResult("export_by_item", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        out, state_dir, items = build_state(work, lines)
        build_s = time.monotonic() - t0
        results_mb = out.stat().st_size / BYTES_PER_MB
        target = work / "by-item.jsonl"
        proc = measure([PYTHON, "-m", "pipeline", "export", "--by-item", "--state-dir", str(state_dir),
                        "--out", str(target)], work, "export", timeout=900)
        if proc.exit_code != 0:
            raise RuntimeError(f"export failed (exit {proc.exit_code}): {proc.stderr[-2000:]}")
        exported = count_lines(target)
        export_mb = target.stat().st_size / BYTES_PER_MB
    result.add("export: peak RSS", proc.peak_rss_mb, unit="MB", target=("<=", TARGET_PEAK_MB), digits=1)
    half, end = (rss_at(proc.samples, proc.wall * pct / 100) if proc.samples else None for pct in (50, 100))
    if half and end:
        result.add("export: RSS growth 50% → 100% of the time", end / half, unit="×", digits=3)
    result.add("export: wall time", proc.wall, unit="s", digits=1)
    result.add("export: lines per second", lines / proc.wall, unit="lines/s", digits=0)
    result.add("export: items per second", items / proc.wall, unit="items/s", digits=0)
    result.add("items exported", exported, note=f"expected {items:,}")
    result.raw = {"lines": lines, "items": items, "exported": exported, "block": BLOCK, "failed_every": FAILED_EVERY,
                  "build_s": build_s, "results_mb": results_mb, "export_mb": export_mb, "wall_s": proc.wall,
                  "cpu_s": proc.cpu, "peak_rss_mb": proc.peak_rss_mb, "exit_code": proc.exit_code,
                  "rss_at_50_pct_mb": half, "rss_at_100_pct_mb": end,
                  "rss_samples_every_1s": thin(proc.samples)}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw` (what `run` measured)."""
    return [
        f"State: {raw['items']:,} items with 2 or 3 analyses each, {raw['lines']:,} result lines "
        f"({raw['results_mb']:.0f} MB; one in {raw['failed_every']} failed), built in {raw['build_s']:.0f} s. The "
        f"lines of each block of {raw['block']:,} items are shuffled, as analyses finish at different times, so "
        "the export seeks back and forth in the results file for every item.",
        f"`export --by-item` wrote {raw['exported']:,} objects ({raw['export_mb']:.0f} MB) in {raw['wall_s']:.1f} s "
        f"({raw['cpu_s']:.1f} CPU s), peak RSS {raw['peak_rss_mb']:.1f} MB{_growth(raw)}: the checkpoint streams the "
        "done keys in key order and each item is written as soon as its keys end, so memory does not grow with the "
        "run.",
    ]


def _growth(raw: Mapping[str, Any]) -> str:
    half, end = raw.get("rss_at_50_pct_mb"), raw.get("rss_at_100_pct_mb")
    return f" (RSS {half:.1f} MB half-way, {end:.1f} MB at the end)" if half and end else ""
