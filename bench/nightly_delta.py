"""Scenario: a nightly delta, 30 new items (5 per capability), polls counted against the limit;
and the nightly diff of a 1,000,000-item catalog (`bench.catalog_diff`: 1% changed, 0.1%
vanished, 0.1% new; deciding the delta against reading the catalog alone, what the emulator
counts as submitted, peak RSS).

Small runs end when their last task does, or later: the question is how much later. Task
durations are spread like real media, log-normal (median 4 s for images, 9 s for video and
audio, sigma 0.55, so the slowest of 25 is two to three times its median). The emulator
draws a task's duration uniformly in its capability's [min, max] from a seed and the
request body; the manifest's lines are chosen (among candidate bodies, by computing that
same draw) so that each task's duration is one of the log-normal samples.

Figures, from the emulator's counters: the makespan (first request to the last result line)
against the last real task end (`last_task_end_at`, from the same first request), less one
request interval of allowance; the detection lag per task (real end to the first answer
that showed it), in emulated seconds; counted requests per async task (the budget is idle
once the 30 submits are out, so spare slots poll each pending task about once a second:
those polls cost no submit a slot).
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.job import Job
from pipeline.emulator.counters import submission_key
from pipeline.emulator.faults import seeded_random
from pipeline.emulator.validation import validate_body
from pipeline.manifest.item import validate_item

from .catalog_diff import RATIO_TARGET, RSS_TARGET_MB, measure_diff
from .emulator_process import Emulator, emulator_settings
from .figures import ScenarioResult
from .manifests import ALL_CAPS, ASYNC_CAPS, LIMITS, SEGMENT, TEMPLATES
from .processes import run_pipeline

TITLE = "Nightly delta: 30 items, media-like durations, polls counted; a 1,000,000-item catalog's diff"
PER_CAPABILITY = 5
MIX_PER_CAPABILITY = 50  # the 300-item batch
TARGET_MIX_RATIO = 1.08  # its makespan ÷ last real end, at most
SEED = 7  # the emulator's seed (durations are drawn from it) and the samples' seed
MEDIAN_S = {"image_analyze": 4.0, "video_segmentation": 9.0, "video_snapshot": 9.0,
            "video_summarization": 9.0, "audio_asr": 9.0}
SIGMA = 0.55  # of log(duration)
FIT_TOLERANCE_S = 0.05  # emulated seconds between a wanted duration and the one drawn
MAX_CANDIDATES = 200_000  # bodies tried per capability before giving up
TARGET_MAKESPAN_RATIO = 1.10  # (makespan - one request interval) ÷ last real end, at most
TARGET_LAG_P95_S = 1.5  # detection lag p95 in emulated seconds (real seconds at time scale 1)


def wanted_durations(per_capability: int = PER_CAPABILITY) -> dict[str, list[float]]:
    """Log-normal samples per async capability, emulated seconds, ascending (seeded)."""
    rng = random.Random(SEED)
    return {cap: sorted(rng.lognormvariate(math.log(MEDIAN_S[cap]), SIGMA) for _ in range(per_capability))
            for cap in ASYNC_CAPS}


def drawn_duration(line: str, span: tuple[float, float]) -> float:
    """The duration (emulated s) the emulator gives the task this manifest line creates."""
    job = validate_item(json.loads(line), 1)
    assert isinstance(job, Job), job
    cap = CAPABILITIES[job.capability]
    segment = SEGMENT[job.capability]
    # The body goes out as JSON and the emulator keys it as it parsed it: round-trip it too.
    body = validate_body(segment, json.loads(json.dumps(cap.build_body(job, None))))
    key = submission_key(segment, job.service_id, body)
    return seeded_random(SEED, "duration", segment, key, 1).uniform(*span)


def fitted_manifest(path: Path, per_capability: int = PER_CAPABILITY
                    ) -> tuple[dict[str, tuple[float, float]], dict[str, list[float]]]:
    """Write the manifest; return each capability's emulator span and the durations it will draw."""
    wanted = wanted_durations(per_capability)
    spans = {cap: (round(min(d) - 0.5, 3), round(max(d) + 0.5, 3)) for cap, d in wanted.items()}
    lines: list[str] = []
    got: dict[str, list[float]] = {}
    n = 0
    for cap in ALL_CAPS:
        if cap not in wanted:  # synchronous: any body will do
            lines += [TEMPLATES[cap] % {"id": f"{cap}-{i}", "n": i} for i in range(per_capability)]
            continue
        todo = list(wanted[cap])
        got[cap] = []
        for _ in range(MAX_CANDIDATES):
            n += 1
            line = TEMPLATES[cap] % {"id": f"{cap}-{n}", "n": n}
            drawn = drawn_duration(line, spans[cap])
            near = min(todo, key=lambda d: abs(d - drawn))
            if abs(near - drawn) <= FIT_TOLERANCE_S:
                todo.remove(near)
                lines.append(line)
                got[cap].append(round(drawn, 3))
                if not todo:
                    break
        else:
            raise RuntimeError(f"no body draws durations {todo} for {cap}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return spans, got


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def measure_run(manifest: Path, work: Path, name: str, scale: float, spans: Mapping[str, Sequence[float]],
                extra: Mapping[str, Any], per_capability: int = PER_CAPABILITY) -> dict[str, Any]:
    """One run against a fresh emulator: makespan, last real end, lag, requests (see the docstring)."""
    settings = emulator_settings(time_scale=scale, durations=spans, polls_count=True, seed=SEED)
    with Emulator(settings, work / name) as emu:
        run_ = run_pipeline(manifest, work, emu.url, {"time_scale": scale, "polls_share_qps": True, **extra},
                            name=name, timeout=240)
        counters = emu.counters()
    # The emulator's clock is time.monotonic (system-wide); result lines carry wall-clock times.
    offset = time.time() - time.monotonic()
    rows = [json.loads(line) for line in run_.out.read_text().splitlines()]
    start = counters["first_offered_at"]
    makespan = max(_epoch(r["finished_at"]) for r in rows) - offset - start
    async_routes = {route: sum(statuses.values()) for route, statuses in counters["requests"].items()
                    if not route.endswith(" detect")}
    tasks = sum(1 for r in rows if r["capability"] in ASYNC_CAPS)
    lag = counters["detection_lag"]
    return {"makespan_s": makespan, "last_real_end_s": counters["last_task_end_at"] - start,
            "wall_time_s": run_.run_seconds, "succeeded": run_.summary["succeeded"],
            "failed": run_.summary["failed"], "async_tasks": tasks,
            "async_requests": sum(async_routes.values()), "throttled": counters["throttled_total"],
            "lag_real_s": {k: lag[k] for k in ("count", "p50", "p95", "max")},
            "polls_per_task": {cap: sum(r["polls"] for r in rows if r["capability"] == cap) / per_capability
                               for cap in ASYNC_CAPS}}


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` runs it ten times faster."""
    scale = 10.0 if quick else 2.0
    result = ScenarioResult("nightly_delta", TITLE)
    interval = 1.0 / (min(LIMITS[c] for c in ASYNC_CAPS) * scale)  # one slot of the slowest group, real s
    with tempfile.TemporaryDirectory(prefix="bench-nightly-") as tmp:
        work = Path(tmp)
        spans, durations = fitted_manifest(work / "manifest.jsonl")
        runs = {"default": measure_run(work / "manifest.jsonl", work, "default", scale, spans, {})}
        # The second batch size: 300 items (50 per capability), same duration spread.
        spans300, _ = fitted_manifest(work / "manifest300.jsonl", MIX_PER_CAPABILITY)
        runs["mix300"] = measure_run(work / "manifest300.jsonl", work, "mix300", scale, spans300, {},
                                     MIX_PER_CAPABILITY)
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        catalog = measure_diff(Path(tmp), quick)
    r = runs["default"]
    lag = r["lag_real_s"]
    result.add("(makespan − one request interval) ÷ last real task end",
               (r["makespan_s"] - interval) / r["last_real_end_s"], target=("<=", TARGET_MAKESPAN_RATIO))
    for pct in ("p50", "p95", "max"):
        value = lag[pct]
        result.add(f"detection lag {pct}, emulated s", None if value is None else value * scale, unit="s",
                   target=("<=", TARGET_LAG_P95_S) if pct == "p95" else None, digits=2)
    result.add("counted requests per async task", r["async_requests"] / max(r["async_tasks"], 1), digits=2)
    result.add("429s", r["throttled"])
    m = runs["mix300"]
    result.add("300 items: (makespan − one request interval) ÷ last real task end",
               (m["makespan_s"] - interval) / m["last_real_end_s"], target=("<=", TARGET_MIX_RATIO))
    result.add("300 items: counted requests per async task", m["async_requests"] / max(m["async_tasks"], 1),
               digits=2)
    result.add("300 items: 429s", m["throttled"])
    items, night2, run_ = catalog["items"], catalog["night2"], catalog["run"]
    result.add(f"catalog of {items:,}: time to decide the delta ÷ time to read the catalog alone",
               catalog["decide"]["seconds"] / catalog["read"]["seconds"], target=("<=", RATIO_TARGET))
    result.add("catalog: the same ratio in CPU seconds (each process's own: steadier on a shared machine)",
               catalog["decide"]["cpu_s"] / catalog["read"]["cpu_s"], target=("<=", RATIO_TARGET))
    result.add("catalog: submitted (counted at the emulator) beyond the changed and new items",
               run_["submitted"] - night2["changed"] - night2["new"], target=("<=", 0))
    result.add("catalog: deciding the delta, peak RSS", max(catalog["decide"]["peak_rss_mb"],
                                                            catalog["decide"]["sampled_peak_rss_mb"]),
               unit="MB", digits=1, target=("<=", RSS_TARGET_MB))
    result.add("catalog: the night-2 run, peak RSS", run_["peak_rss_mb"], unit="MB", digits=1,
               target=("<=", RSS_TARGET_MB))
    everything = sorted(d for ds in durations.values() for d in ds)
    result.raw = {"time_scale": scale, "per_capability": PER_CAPABILITY, "sigma": SIGMA,
                  "median_emulated_s": MEDIAN_S, "durations_emulated_s": durations,
                  "slowest_over_median": everything[-1] / everything[len(everything) // 2],
                  "spans_emulated_s": {c: list(s) for c, s in spans.items()}, "interval_s": interval,
                  "target_ratio": TARGET_MAKESPAN_RATIO, "target_lag_p95_s": TARGET_LAG_P95_S, "runs": runs,
                  "catalog": catalog}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw`."""
    scale = raw["time_scale"]
    out = [f"{raw['per_capability']} items per capability (object detection synchronous); emulator time scale "
           f"{scale:g}, polls counted; task durations log-normal (sigma {raw['sigma']:g}; medians "
           + ", ".join(f"{c} {m:g} s" for c, m in raw["median_emulated_s"].items())
           + f"), the slowest {raw['slowest_over_median']:.1f}× the median of all. Makespan and last real end are "
           "counted from the run's first request, on the emulator's clock."]
    for name, r in raw["runs"].items():
        lag = r["lag_real_s"]
        shown = ", ".join("n/a" if lag[k] is None else f"{lag[k] * scale:.2f}" for k in ("p50", "p95", "max"))
        out.append(f"{name}: makespan {r['makespan_s'] * scale:.1f} emulated s, last real end "
                   f"{r['last_real_end_s'] * scale:.1f} s; detection lag p50/p95/max {shown} emulated s; "
                   f"{r['async_requests']} counted requests for {r['async_tasks']} async tasks.")
    catalog = raw.get("catalog")
    if catalog:
        n2, read, decide, run_ = catalog["night2"], catalog["read"], catalog["decide"], catalog["run"]
        counts = run_["catalog"] or {}
        out.append(
            f"Catalog diff: night 1 of {catalog['items']:,} object-detection items built in the state dir "
            f"({catalog['build_s']:.0f} s); night 2 changes {n2['changed']:,} URLs, removes {n2['vanished']:,} "
            f"items and adds {n2['new']:,}. Reading night 2's catalog alone (parsed and validated): "
            f"{read['seconds']:.1f} s, peak RSS {read['peak_rss_mb']:.0f} MB; deciding its delta (the same read, "
            f"fingerprints, a checkpoint query per 500 units, the keys seen, the vanished count): "
            f"{decide['seconds']:.1f} s, peak RSS {decide['peak_rss_mb']:.0f} MB (CPU seconds of the whole processes, "
            f"start-up included: {read['cpu_s']:.1f} and {decide['cpu_s']:.1f}). The real night-2 run (emulator "
            f"limits off) took {run_['run_s']:.1f} s: the emulator counted {run_['submitted']:,} submissions; the "
            f"summary's catalog: new {counts.get('new')}, changed {counts.get('changed')}, unchanged "
            f"{counts.get('unchanged')}, vanished {counts.get('vanished')}; peak RSS {run_['peak_rss_mb']:.0f} MB.")
    return out
