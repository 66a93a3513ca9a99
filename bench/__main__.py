"""`python -m bench [SCENARIO ...] [--quick] [--write | --merge] [--report-only]`: the benchmark suite.

With no scenario named, all run against the emulator, and BENCHMARKS.md (repo root) and
bench/results.json are rewritten. Naming scenarios, or `--quick` (a tiny smoke variant of
each), prints the table and writes nothing unless `--write` is given, so a partial run never
replaces the full report by accident. `--report-only` measures nothing: it renders
BENCHMARKS.md again from bench/results.json (after a change to the report or to a
scenario's notes). `--merge` measures the named scenarios and puts them beside the earlier
figures of the others (a new scenario, or one whose code changed); the header says so.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from . import (
    async_mix,
    baselines,
    client_ceiling,
    export_by_item,
    export_parquet,
    listing,
    memory,
    nightly_delta,
    report,
    report_sizes,
    resume,
    resume_scale,
    scale_validate,
    shared_account,
    stream_api,
    sync_ceiling,
    upload,
)
from .environment import REPO, machine
from .figures import ScenarioResult

MARKDOWN = REPO / "BENCHMARKS.md"
RESULTS = REPO / "bench" / "results.json"


class Scenario(Protocol):
    """What every scenario module provides."""

    TITLE: str

    def run(self, quick: bool = False) -> ScenarioResult: ...

    def notes(self, raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]: ...


SCENARIOS: dict[str, Scenario] = {
    "sync_ceiling": sync_ceiling,
    "async_mix": async_mix,
    "nightly_delta": nightly_delta,
    "client_ceiling": client_ceiling,
    "memory": memory,
    "resume": resume,
    "resume_scale": resume_scale,
    "scale_validate": scale_validate,
    "baselines": baselines,
    "shared_account": shared_account,
    "upload": upload,
    "export_by_item": export_by_item,
    "export_parquet": export_parquet,
    "listing": listing,
    "report_sizes": report_sizes,
    "stream_api": stream_api,
}


def render_notes(result: ScenarioResult, info: Mapping[str, Any]) -> None:
    """Fill `result.notes` from its raw numbers (a scenario that failed to run has none)."""
    module = SCENARIOS.get(result.key)
    result.notes = [] if module is None or "error" in result.raw else module.notes(result.raw, info)


def run_one(key: str, quick: bool, info: Mapping[str, Any]) -> ScenarioResult:
    """Run one scenario and print its figures to stderr as they come."""
    module = SCENARIOS[key]
    print(f"[bench] {key}: {module.TITLE} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        result = module.run(quick=quick)
        render_notes(result, info)
    except Exception as exc:  # one broken scenario must not hide the others' figures
        traceback.print_exc()
        result = ScenarioResult(key, module.TITLE, raw={"error": f"{type(exc).__name__}: {exc}"})
    result.seconds = time.monotonic() - started
    for figure in result.figures:
        verdict = f"  [{figure.verdict}]" if figure.verdict else ""
        print(f"[bench]   {figure.name}: {figure.shown()} {figure.unit}{verdict}", file=sys.stderr, flush=True)
    print(f"[bench] {key}: {result.seconds:.0f} s", file=sys.stderr, flush=True)
    return result


def report_only(json_path: Path, markdown_path: Path) -> int:
    """Render `markdown_path` again from `json_path`; 0, or 2 when there is nothing to render."""
    if not json_path.is_file():
        print(f"error: {json_path} does not exist: run the suite first (make bench)", file=sys.stderr)
        return 2
    results, header = report.load(json_path)
    for result in results:
        render_notes(result, header["machine"])
    report.write(results, markdown_path=markdown_path, json_path=None, **header)
    print(f"[bench] rendered {markdown_path.name} from {json_path.name}", file=sys.stderr)
    return 1 if any("error" in r.raw for r in results) else 0


def merge(results: list[ScenarioResult], *, command: str, date: str, seconds: float) -> int:
    """Put freshly measured scenarios into the committed report, keeping the others' figures
    (and the machine they were measured on); the header names both runs."""
    if not RESULTS.is_file():
        print(f"error: {RESULTS} does not exist: run the whole suite first (make bench)", file=sys.stderr)
        return 2
    earlier, header = report.load(RESULTS)
    fresh = {r.key: r for r in results}
    merged = [fresh.pop(r.key, r) for r in earlier] + list(fresh.values())
    for result in merged:
        render_notes(result, header["machine"])
    report.write(merged, markdown_path=MARKDOWN, json_path=RESULTS, machine=header["machine"],
                 command=f"{header['command']}; then {command}",
                 date=f"{header['date']}; {', '.join(r.key for r in results)} measured {date}",
                 total_seconds=header["total_seconds"] + seconds, partial=header["partial"], how=header["how"])
    print(f"[bench] merged {', '.join(r.key for r in results)} into BENCHMARKS.md and bench/results.json",
          file=sys.stderr)
    return 1 if any("error" in r.raw for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (1 when a scenario failed to run)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"any of: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke variant of each scenario")
    parser.add_argument("--write", action="store_true",
                        help="write BENCHMARKS.md and bench/results.json even for a partial or quick run")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: render BENCHMARKS.md again from bench/results.json")
    parser.add_argument("--merge", action="store_true",
                        help="measure the named scenarios and put them into bench/results.json and "
                             "BENCHMARKS.md beside the others' earlier figures (the header says so)")
    args = parser.parse_args(argv)
    if args.report_only:
        if args.scenarios or args.quick or args.write:
            parser.error("--report-only takes no scenarios and no --quick or --write")
        return report_only(RESULTS, MARKDOWN)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    keys = args.scenarios or list(SCENARIOS)
    partial = bool(args.scenarios) or args.quick
    command = " ".join(["python -m bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    started = time.monotonic()
    results = [run_one(key, args.quick, info) for key in keys]
    total = time.monotonic() - started
    if args.merge:
        if not args.scenarios or args.quick or args.write:
            parser.error("--merge takes scenarios, and no --quick or --write")
        return merge(results, command=command, date=date, seconds=total)
    if partial and not args.write:
        print(report.table(results))
        for result in results:
            for note in result.notes:
                print(f"\n- {note}")
        print(f"\n{total:.0f} s in all (partial run: BENCHMARKS.md left as it was; --write to replace it)")
    else:
        report.write(results, markdown_path=MARKDOWN, json_path=RESULTS, machine=info, command=command,
                     date=date, total_seconds=total, partial=partial)
        print(f"[bench] wrote BENCHMARKS.md and bench/results.json; {total:.0f} s in all", file=sys.stderr)
    return 1 if any("error" in r.raw for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
