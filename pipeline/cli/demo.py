"""`python -m pipeline demo`: run `sample_manifests/` through an in-process emulator.

The embedded default that works on a fresh machine with no account: it starts the emulator on
127.0.0.1 (a free port, a throw-away API key held only in memory), runs every sample manifest
as its own run with the same runner `run` uses, and prints per manifest the rejected lines,
one line per result (per item and analysis) and the summary, then an overall table and where
the files are.

`analyses.jsonl` shows items with several analyses, a chained pair (`after`) and an output left
to the config's `outputs` templates: its run gets `DEMO_OUTPUTS`. The catalogs run without
them, so that `catalog.jsonl`'s deliberately invalid segmentation (no `output.oss`) stays
invalid.

Time is scaled (`--time-scale`, default 20) in the emulator and the client together, so task
durations shrink and QPS windows with them: the client behaves as it would against the real
service, only faster.

A sample line that a comment marks as "deliberately invalid" is expected to be rejected: it is
reported but does not make the demo fail. Anything else (a failed item, an unexpected reject,
a missing or repeated result line, a chained analysis written before its parent, an aborted
run) does.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ..config.load import Config
from ..core.echo import clipped
from ..core.errors import UsageError
from ..core.exit_codes import ExitCode
from ..core.job import Job, job_key, split_key
from ..core.results import RunFiles
from ..data import sample_manifests_dir
from ..emulator import EmulatorSettings, start_emulator
from ..engine.runner import RunRequest, RunResult, run
from ..manifest.reader import FORMATS, read_manifest
from ..observe.report import format_summary
from ..state.lock_results import results_lock_path
from ..state.paths import Kind, Target, check_targets
from .report import write_run_report
from .run import report_wanted

log = logging.getLogger("pipeline.demo")

#: Where the samples live: package data, so a plain `pip install` carries them, not only a checkout.
SAMPLES_DIR = sample_manifests_dir()
#: Written into the output dir, so that a fresh start only ever deletes a directory the demo made.
MARKER = ".pipeline-demo"
DEMO_SEED = 7  # emulator results are deterministic per seed: the same demo prints the same data
DELIBERATE = "deliberately invalid"
PREVIEW_WIDTH = 72
#: The demo's config `outputs`: where segmentation and summarization write when an analysis names
#: no `output`. Given only to the samples in OUTPUTS_SAMPLES (see the module docstring).
DEMO_OUTPUTS: Mapping[str, str] = {
    "video_segmentation": "oss://demo-bucket/results/{analysis}/{id}/",
    "video_summarization": "oss://demo-bucket/results/{analysis}/{id}/",
}
OUTPUTS_SAMPLES = frozenset({"analyses.jsonl"})


@dataclass
class ManifestRun:
    """One sample manifest's run and what the demo checked about it."""

    manifest: Path
    out: Path
    state_dir: Path
    result: RunResult | None = None
    error: str | None = None  # the run could not even start or finish
    outputs: Mapping[str, str] = field(default_factory=dict)  # the run's config `outputs`
    jobs: list[Job] = field(default_factory=list)  # one per (item, analysis), in manifest order
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # Job.key -> result line
    rejects: list[dict[str, Any]] = field(default_factory=list)
    deliberate: set[int] = field(default_factory=set)  # lines the samples mean to be rejected
    problems: list[str] = field(default_factory=list)  # real failures, in words

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def named(self) -> bool:
        """Whether some item has several analyses or a named one: then lines show the analysis."""
        return len({j.id for j in self.jobs}) < len(self.jobs) or any(j.analysis != j.capability for j in self.jobs)


def main(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every sample ran as expected, 1 or 3 on a real failure, 2 on usage."""
    scale = float(args.time_scale)
    if not scale > 0 or scale == float("inf"):
        log.error("--time-scale must be a positive number, got %s", args.time_scale)
        return ExitCode.USAGE
    manifests = find_manifests(SAMPLES_DIR)
    if not manifests:
        log.error("no sample manifests in %s: the package is incomplete; reinstall it", SAMPLES_DIR)
        return ExitCode.USAGE
    out_dir = Path(args.out_dir)
    problem = prepare_out_dir(out_dir, keep=bool(args.keep), manifests=manifests)
    if problem:
        log.error("%s", problem)
        return ExitCode.USAGE
    runs = asyncio.run(_run_all(manifests, out_dir, scale))
    print_overall(runs, out_dir)
    stopped = [r.result for r in runs if r.result is not None and r.result.stop is not None]
    if stopped:
        return stopped[0].exit_code
    return ExitCode.OK if all(r.ok for r in runs) else ExitCode.PARTIAL


def find_manifests(directory: Path) -> list[Path]:
    """The manifests in `directory` (JSONL, CSV, YAML), sorted by name."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in FORMATS)


def run_files(manifest: Path, out_dir: Path) -> RunFiles:
    """Where the demo writes `manifest`'s run in `out_dir`."""
    name = output_name(manifest)
    return RunFiles(out_dir / f"{name}.results.jsonl", out_dir / f"{name}.state")


def demo_entries(out_dir: Path, manifests: list[Path]) -> set[str]:
    """The names the demo writes in `out_dir`: its marker and each run's files."""
    names = {MARKER}
    for manifest in manifests:
        files = run_files(manifest, out_dir)
        names |= {files.results.name, files.rejects.name, files.summary.name, files.state_dir.name,
                  results_lock_path(files.results).name}
    return names


def prepare_out_dir(out_dir: Path, *, keep: bool, manifests: list[Path] | None = None) -> str | None:
    """Start fresh (unless `keep`), deleting only what an earlier demo wrote there; a problem or None.
    The directory is checked by the rule of every writing option (`paths.check_targets`) first: it
    must be new, empty, or an earlier demo's holding nothing but the demo's own files."""
    ours = demo_entries(out_dir, manifests if manifests is not None else find_manifests(SAMPLES_DIR))
    try:
        check_targets([Target("--out-dir", out_dir, Kind.DIR, parents=True,
                              ours=lambda path: _demo_ours(path, ours))])
    except UsageError as exc:
        return str(exc)
    if out_dir.exists() and not keep:
        for name in sorted(ours - {MARKER}):  # the demo's own entries only, never the directory
            entry = out_dir / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by `python -m pipeline demo`; the next demo replaces the files it "
                                  "wrote here, and only those\n")
    return None


def _demo_ours(out_dir: Path, ours: set[str]) -> str | None:
    if not (out_dir / MARKER).exists():
        return "holds files the demo did not write: give another --out-dir, or empty it first"
    with os.scandir(out_dir) as entries:
        foreign = sorted(entry.name for entry in entries if entry.name not in ours)
    if foreign:
        return (f"holds files an earlier demo did not write (such as {clipped(foreign[0])}): the demo replaces only "
                "its own; give another --out-dir, or move them away")
    return None


def outputs_for(manifest: Path) -> Mapping[str, str]:
    """The config `outputs` the demo runs `manifest` with (`DEMO_OUTPUTS` or none)."""
    return DEMO_OUTPUTS if manifest.name in OUTPUTS_SAMPLES else {}


def output_name(manifest: Path) -> str:
    """`catalog.jsonl` -> `catalog-jsonl`: the samples share a stem, so the format is kept."""
    return f"{manifest.stem}-{manifest.suffix.lstrip('.').lower()}"


def deliberate_lines(manifest: Path) -> set[int]:
    """Line numbers of items that a preceding ``#`` comment marks as deliberately invalid."""
    expected: set[int] = set()
    armed = False
    with open(manifest, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if text.startswith("#"):
                armed = armed or DELIBERATE in text.lower()
            elif text and armed:
                expected.add(number)
                armed = False
    return expected


async def _run_all(manifests: list[Path], out_dir: Path, scale: float) -> list[ManifestRun]:
    api_key = secrets.token_urlsafe(24)  # this process only; never printed or written
    settings = EmulatorSettings(api_key=api_key, seed=DEMO_SEED, time_scale=scale)
    runs: list[ManifestRun] = []
    async with start_emulator(settings, host="127.0.0.1", port=0) as emu:
        _say(f"emulator listening on {emu.url} (time scale {scale:g}: tasks and QPS windows "
             f"{scale:g}x faster than the real service)")
        for manifest in manifests:
            files = run_files(manifest, out_dir)
            item = ManifestRun(manifest, files.results, files.state_dir, outputs=outputs_for(manifest))
            _say(f"\n=== {manifest.name} " + "=" * max(0, 60 - len(manifest.name)))
            for cap, template in item.outputs.items():
                _say(f"config outputs: {cap} without an output writes to {template}")
            config = Config(endpoint=emu.url, time_scale=scale, outputs=item.outputs)
            try:
                item.result = await run(RunRequest(manifest=str(manifest),
                                                   files=RunFiles(item.out, item.state_dir), api_key=api_key,
                                                   config=config))
            except Exception as exc:  # report it with the others; the next manifest still runs
                log.debug("run of %s failed", manifest, exc_info=True)
                item.error = f"{type(exc).__name__}: {exc}"
            if item.result is not None and report_wanted():  # as `run` does: the run's HTML report
                await anyio.to_thread.run_sync(functools.partial(write_run_report, RunFiles(item.out, item.state_dir),
                                                                 config))
            check(item)
            print_manifest(item)
            runs.append(item)
            if item.result is not None and item.result.stop is not None:
                _say("stopped: the remaining sample manifests were not run")
                break  # interrupted (Ctrl-C) or stopped for a reason the next run would share
    return runs


def check(item: ManifestRun) -> None:
    """Read the run's files back and record every real problem (not the deliberate rejects)."""
    if item.error is not None:
        item.problems.append(f"the run failed: {item.error}")
        return
    assert item.result is not None
    if item.result.reason:
        item.problems.append(f"the run stopped: {item.result.reason}")
    item.jobs = [j for j in read_manifest(item.manifest, outputs=item.outputs) if isinstance(j, Job)]
    item.deliberate = deliberate_lines(item.manifest)
    rejects_file = RunFiles(item.out, item.state_dir).rejects
    if rejects_file.exists():
        item.rejects = [json.loads(line) for line in rejects_file.read_text(encoding="utf-8").splitlines() if line]
    for reject in item.rejects:
        if reject["line"] not in item.deliberate:
            item.problems.append(f"line {reject['line']} was rejected: {reject['reason']}")
    lines = [json.loads(line) for line in item.out.read_text(encoding="utf-8").splitlines() if line] \
        if item.out.exists() else []
    keys = [job_key(line["id"], line.get("analysis") or line["capability"]) for line in lines]
    counts = Counter(keys)
    item.results = dict(zip(keys, lines, strict=True))
    position = {key: n for n, key in enumerate(keys)}
    labels = {j.key: _label(j) for j in item.jobs}
    missing = [labels[j.key] for j in item.jobs if counts[j.key] == 0]
    repeated = sorted(labels.get(key) or "/".join(filter(None, split_key(key))) for key, n in counts.items() if n > 1)
    if missing:
        item.problems.append(f"no result line for {', '.join(missing)}")
    if repeated:
        item.problems.append(f"more than one result line for {', '.join(repeated)}")
    for job in item.jobs:
        line = item.results.get(job.key, {})
        if line.get("status") == "FAILED":
            error = line.get("error") or {}
            item.problems.append(f"{labels[job.key]} failed: {error.get('code')}: {error.get('message')}")
        parent = job.after_key
        if parent is not None and job.key in position and position.get(parent, len(keys)) > position[job.key]:
            item.problems.append(f"{labels[job.key]} was written before {job.after}, the analysis it comes after")


def print_manifest(item: ManifestRun) -> None:
    if item.error is not None:
        _say(f"  the run failed: {item.error}")
        return
    if item.rejects:
        _say(f"rejected lines ({RunFiles(item.out, item.state_dir).rejects}):")
        for reject in item.rejects:
            note = "  [expected: a deliberately invalid sample line]" if reject["line"] in item.deliberate else ""
            who = f" ({reject['id']})" if reject.get("id") else ""
            _say(f"  line {reject['line']}{who}: {reject['reason']}{note}")
    _say("results:")
    if item.named:
        _say(f"  {'id':<16} {'analysis':<19} {'capability':<20} status")
    for job in item.jobs:
        who = f"{job.id:<16} {job.analysis:<19}" if item.named else f"{job.id:<32}"
        line = item.results.get(job.key)
        if line is None:
            _say(f"  {who} (no result line)")
            continue
        if line["status"] == "SUCCESS":
            detail = preview(line.get("data"))
        else:
            error = line.get("error") or {}
            detail = f"{error.get('code')}: {error.get('message')}"
        if job.after is not None:
            detail = f"after {job.after}: {detail}"
        _say(f"  {who} {line['capability']:<20} {line['status']:<8} {_clip(detail)}")
    assert item.result is not None
    _say(format_summary(item.result.summary))
    skipped = sum(c.get("skipped_already_done", 0) for c in item.result.summary["capabilities"].values())
    if skipped:
        _say(f"  {skipped} items were already done in the kept output (--keep): not submitted again")
    for problem in item.problems:
        _say(f"  PROBLEM: {problem}")
    if item.ok and item.rejects:
        _say(f"  as expected: the run's exit code {item.result.exit_code} comes from the deliberately "
             "invalid line alone")


def preview(data: Any) -> str:
    """A one-line gist of a result's `data`: list sizes, then the first sentence-like text."""
    parts: list[str] = []
    if isinstance(data, list):
        parts.append(f"{len(data)} item{'' if len(data) == 1 else 's'}")
    elif isinstance(data, dict):
        parts += [f"{key}: {len(value)}" for key, value in data.items() if isinstance(value, list)]
    text = _first_text(data)
    if text:
        parts.append(json.dumps(text, ensure_ascii=False))
    return "; ".join(parts) or json.dumps(data, ensure_ascii=False)


def _first_text(value: Any) -> str | None:
    """The first string of three words or more, depth first (skips paths, base64 and titles)."""
    if isinstance(value, str):
        return value if len(value.split()) >= 3 else None
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        found = _first_text(child)
        if found:
            return found
    return None


def print_overall(runs: list[ManifestRun], out_dir: Path) -> None:
    _say("\n=== overall " + "=" * 52)
    _say(f"  {'manifest':<16} {'items':>5} {'analyses':>8} {'ok':>5} {'failed':>6} {'rejected':>14} {'wall s':>7}"
         "  verdict")
    for r in runs:
        s = r.result.summary if r.result is not None else {}
        expected = sum(1 for x in r.rejects if x["line"] in r.deliberate)
        rejected = f"{len(r.rejects)}" + (f" ({expected} expected)" if expected else "")
        verdict = "as expected" if r.ok else f"{len(r.problems)} problem(s)"
        _say(f"  {r.manifest.name:<16} {len({j.id for j in r.jobs}):>5} {len(r.jobs):>8} {s.get('succeeded', 0):>5} "
             f"{s.get('failed', 0):>6} {rejected:>14} {s.get('wall_time_s') or 0:>7.2f}  {verdict}")
    names = ", ".join(output_name(r.manifest) for r in runs)
    _say(f"\nfiles in {out_dir}/, for NAME in {names}:")
    _say("  NAME.results.jsonl          one JSON line per valid item and analysis")
    _say("  NAME.results.rejects.jsonl  rejected manifest lines: {line, id, reason}")
    _say("  NAME.results.summary.json   the summary above, as JSON")
    if report_wanted():
        _say("  NAME.results.report.html    the run's HTML report: plots, failures, history (the report extra)")
    _say("  NAME.state/                 the checkpoint (python -m pipeline status --state-dir ...)")
    if any(r.named for r in runs):
        _say("one JSON object per item, its analyses together: python -m pipeline export --by-item --state-dir "
             f"{out_dir}/NAME.state")
    _say("\nagainst the real service (your own catalog: the sample URLs are placeholders):")
    _say("  export DASHSCOPE_API_KEY=sk-...")
    _say("  python -m pipeline validate MANIFEST")
    _say("  python -m pipeline run MANIFEST --endpoint <host or https://host> --workspace <name> "
         "--out results.jsonl")


def _label(job: Job) -> str:
    """How messages name one (item, analysis): the id alone when the analysis is its capability."""
    return job.id if job.analysis == job.capability else f"{job.id}/{job.analysis}"


def _clip(text: str) -> str:
    return text if len(text) <= PREVIEW_WIDTH else text[: PREVIEW_WIDTH - 1] + "…"


def _say(text: str) -> None:
    print(text, flush=True)  # flushed, so the report and stderr log lines interleave in order
