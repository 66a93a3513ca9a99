"""Scenario 5: resuming a state dir that holds 1,000,000 finished items and 1,000 left.

The state is built the way the runner leaves it, only faster: the 1,001,000-line manifest,
a results file with one result line per finished item, those items marked done in the
checkpoint in big batches (`Checkpoint.mark_done`, with the results file's size as the sink
offset), and the meta keys `Run._check_identity` reads. The 1,000 items left are at the END
of the manifest: the worst case, the reader must pass every finished line first.

The time to the first new submission is measured on the emulator's side: its counters'
`first_offered_at` (CLOCK_MONOTONIC, shared by all processes on Linux) minus the moment just
before the pipeline process was spawned.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.job import job_key
from pipeline.state.checkpoint import Checkpoint, Outcome

from .emulator_process import Emulator, fast_client, fast_emulator, fast_settings_raw, submissions
from .figures import ScenarioResult
from .manifests import ALL_CAPS, count_lines, write_manifest
from .processes import rss_at, run_pipeline, thin

TITLE = "Resume after 1,000,000 finished items"
BATCH = 100_000  # items marked done per checkpoint transaction while building the state
TARGET_FIRST_SUBMISSION_S = 10  # process start to the first new submission, at most
LINE = ('{"id":"%(id)s","analysis":"%(cap)s","capability":"%(cap)s","service_id":"%(sid)s","status":"SUCCESS",'
        '"task_id":%(task)s,'
        '"data":{"note":"synthetic result of %(id)s"},"usage":{"units":1},"error":null,"attempts":1,"polls":%(polls)d,'
        '"submitted_at":"2025-01-01T00:00:00.000Z","finished_at":"2025-01-01T00:00:01.000Z","elapsed_s":1.0,'
        '"meta":null}\n')


def build_state(work: Path, done: int, left: int) -> tuple[Path, Path, Path]:
    """Manifest, results file and state dir of a run that finished its first `done` items."""
    manifest = write_manifest(work / "manifest.jsonl", done + left)
    out, state_dir = work / "run" / "results.jsonl", work / "run" / "state"
    out.parent.mkdir(parents=True)
    ckpt = Checkpoint.open(state_dir)
    try:
        ckpt.set_meta("out", str(out.resolve()))
        ckpt.set_meta("manifest", str(manifest.resolve()))
        ckpt.set_meta("created_at", str(time.time()))
        with open(out, "w", encoding="utf-8") as f:
            for start in range(0, done, BATCH):
                outcomes, text = [], []
                for i in range(start, min(start + BATCH, done)):
                    cap = ALL_CAPS[i % len(ALL_CAPS)]
                    sid = CAPABILITIES[cap].default_service_id
                    task = "null" if cap == "object_detection" else f'"task-{i}"'
                    item = f"item-{i:07d}"
                    text.append(LINE % {"id": item, "cap": cap, "sid": sid, "task": task,
                                        "polls": 0 if cap == "object_detection" else 1})
                    task_id = None if task == "null" else f"task-{i}"
                    outcomes.append(Outcome(job_key(item, cap), cap, sid, "SUCCESS", task_id, None, {"units": 1},
                                            1.0, 1))
                f.write("".join(text))
                f.flush()
                ckpt.mark_done(outcomes, sink_offset=f.tell())
    finally:
        ckpt.close()
    return manifest, out, state_dir


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    done, left = (20_000, 200) if quick else (1_000_000, 1_000)
    result = ScenarioResult("resume", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        manifest, out, state_dir = build_state(work, done, left)
        build_s = time.monotonic() - t0
        with Emulator(fast_emulator(), work / "emulator") as emu:
            run_ = run_pipeline(manifest, work, emu.url, fast_client(), name="run", out=out, state_dir=state_dir,
                                timeout=300)
            counters = emu.counters()
        lines = count_lines(out)
        with open(out, "rb") as f:  # the lines this run wrote follow the `done` synthetic ones
            new_lines = [json.loads(line) for n, line in enumerate(f) if n >= done]
    new_ids = {line["id"] for line in new_lines}
    last_line_at = max((datetime.fromisoformat(line["finished_at"].replace("Z", "+00:00")).timestamp()
                        for line in new_lines), default=None)
    first = counters["first_offered_at"]
    to_first = None if first is None else first - run_.proc.started_at
    accepted = submissions(counters)
    left_ids = {f"item-{i:07d}" for i in range(done, done + left)}
    samples = run_.proc.samples
    rss_first = rss_at(samples, to_first) if to_first is not None and samples else None
    result.add("time from process start to the first new submission", to_first, unit="s",
               target=("<=", TARGET_FIRST_SUBMISSION_S), digits=2)
    result.add("resubmissions (accepted submissions − items left)", accepted - left, target=("<=", 0))
    result.add("duplicate submissions (same body twice)", counters["duplicate_submissions"])
    result.add("result lines after the resume", lines, note=f"expected {done + left:,}")
    result.add("items left that got a line", len(left_ids & new_ids), note=f"of {left:,}")
    result.add("resume run: process wall time", run_.proc.wall, unit="s", digits=1)
    last_to_exit = None if last_line_at is None else run_.proc.ended_epoch - last_line_at
    if last_to_exit is not None:
        result.add("resume run: last result line → process exit", last_to_exit, unit="s", digits=1)
    result.add("resume run: peak RSS", run_.proc.peak_rss_mb, unit="MB", digits=1)
    if rss_first is not None:
        result.add("resume run: RSS at the first submission", rss_first, unit="MB", digits=1)
    peak_t = max(samples, key=lambda s: s[1])[0] if samples else None
    result.raw = {"done": done, "left": left, "build_s": build_s, "batch": BATCH, **fast_settings_raw(),
                  "to_first_submission_s": to_first, "rss_at_first_submission_mb": rss_first,
                  "last_line_to_exit_s": last_to_exit,
                  "accepted_submissions": accepted, "lines": lines, "wall_s": run_.proc.wall,
                  "cpu_s": run_.proc.cpu, "peak_rss_mb": run_.proc.peak_rss_mb, "exit_code": run_.proc.exit_code,
                  "summary_wall_s": run_.summary.get("wall_time_s"), "peak_rss_sampled_at_s": peak_t,
                  "rss_samples_every_1s": thin(samples)}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw` (what `run` measured).

    What the resumed run does before its first submission is described from the pipeline's
    code: `reconcile` of the results file against the recorded sink offset, a state dir with no
    read position compared in full, and the summary's running totals. Change the prose when
    those change.
    """
    done, left = raw["done"], raw["left"]
    rss_first = raw.get("rss_at_first_submission_mb")
    rss_text = f" ({rss_first:.0f} MB RSS at the first submission)" if rss_first is not None else ""
    out = [
        f"State built in {raw['build_s']:.0f} s: {done + left:,}-line manifest, {done:,} result lines, {done:,} "
        f"items marked done in batches of {raw['batch']:,}; the {left:,} items left are the last lines of the "
        f"manifest. Emulator limits off, task durations {raw['task_duration_s']:g} (only the resume path is "
        "measured). The first submission is the first request the emulator saw; the process start is just "
        "before the spawn, so interpreter start-up is included.",
        "What the resumed run does before its first submission: `reconcile` compares the results file with the "
        "sink offset the checkpoint recorded and marks done any lines written past it (none here: the state was "
        "built consistent). The state was built directly, so it records no read position: this resume compares "
        f"the whole catalog once (as the first run of a state dir from an earlier version does), decoding, "
        f"fingerprinting and looking up all {done:,} done lines in batches before it reaches the {left:,} left at "
        f"the end, so the time to the first submission grows with the done items{rss_text}; the next resume "
        "starts where this one read to (scenario resume_scale measures that). Items whose task id the checkpoint "
        "recorded would be polled, not resubmitted (none here: every item is either done or new).",
    ]
    last_to_exit = raw.get("last_line_to_exit_s")
    if last_to_exit is not None:
        out.append(
            f"From the last new result line to the process exit took {last_to_exit:.1f} s; the summary's totals "
            f"over all {done + left:,} items come from the running totals the checkpoint keeps, not from a scan "
            "of every row.")
    return out
