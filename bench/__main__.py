"""`python -m bench [SCENARIO ...] [--quick]`: run the benchmark scenarios against the emulator.

With no scenario named, all run, and BENCHMARKS.md (repo root) and bench/results.json are
rewritten. Naming scenarios, or `--quick` (a tiny smoke variant of each), prints the table
and writes nothing unless `--write` is given, so a partial run never replaces the full report
by accident.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from datetime import datetime, timezone
from types import ModuleType

from . import async_mix, baselines, client_ceiling, memory, report, resume, sync_ceiling
from .common import REPO, ScenarioResult, machine

SCENARIOS: dict[str, ModuleType] = {
    "sync_ceiling": sync_ceiling,
    "async_mix": async_mix,
    "client_ceiling": client_ceiling,
    "memory": memory,
    "resume": resume,
    "baselines": baselines,
}


def run_one(key: str, quick: bool) -> ScenarioResult:
    module = SCENARIOS[key]
    print(f"[bench] {key}: {module.TITLE} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        result: ScenarioResult = module.run(quick=quick)
    except Exception as exc:  # one broken scenario must not hide the others' figures
        traceback.print_exc()
        result = ScenarioResult(key, module.TITLE, raw={"error": f"{type(exc).__name__}: {exc}"})
    result.seconds = time.monotonic() - started
    for figure in result.figures:
        verdict = f"  [{figure.verdict}]" if figure.verdict else ""
        print(f"[bench]   {figure.name}: {figure.shown()} {figure.unit}{verdict}", file=sys.stderr, flush=True)
    print(f"[bench] {key}: {result.seconds:.0f} s", file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"any of: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke variant of each scenario")
    parser.add_argument("--write", action="store_true",
                        help="write BENCHMARKS.md and bench/results.json even for a partial or quick run")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    keys = args.scenarios or list(SCENARIOS)
    partial = bool(args.scenarios) or args.quick
    command = " ".join(["python -m bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    started = time.monotonic()
    results = [run_one(key, args.quick) for key in keys]
    total = time.monotonic() - started
    info = machine()
    if partial and not args.write:
        print(report.table(results))
        print(f"\n{total:.0f} s in all (partial run: BENCHMARKS.md left as it was; --write to replace it)")
    else:
        report.write(results, markdown_path=REPO / "BENCHMARKS.md", json_path=REPO / "bench" / "results.json",
                     machine=info, command=command, date=date, total_seconds=total, partial=partial)
        print(f"[bench] wrote BENCHMARKS.md and bench/results.json; {total:.0f} s in all", file=sys.stderr)
    return 1 if any("error" in r.raw for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
