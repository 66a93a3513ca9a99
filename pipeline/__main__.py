"""Command line: parse arguments, call the runner, map outcomes to exit codes (DESIGN.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from . import commands
from .checkpoint import Checkpoint
from .cli_log import setup_logging
from .config import load_config
from .errors import ConfigError, ManifestError, PipelineError, UsageError
from .capabilities import CAPABILITIES
from .progress import count_lines, show_progress
from .report import RunStats, format_summary
from .runner import EXIT_ABORTED, EXIT_USAGE, Run, RunRequest, RunResult

log = logging.getLogger("pipeline")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="json: one JSON object per log line, for scheduled runs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Batch pipeline for the OpenSearch multimodal content services.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run (or resume) a manifest")
    p.add_argument("manifest", help="JSONL, CSV or YAML manifest; - reads JSONL from stdin")
    p.add_argument("--config", help="YAML config file (see configs/default.yaml)")
    p.add_argument("--out", default="results.jsonl", help="results file (default: results.jsonl)")
    p.add_argument("--state-dir", help="checkpoint directory (default: <out>.state next to the results)")
    p.add_argument("--endpoint", help="service URL (http://host:port) or host; env PIPELINE_ENDPOINT")
    p.add_argument("--workspace", help="workspace name (default: default)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run failed items again (PollTimeout tasks are polled, not resubmitted)")
    p.add_argument("--progress", choices=("auto", "rich", "plain", "off"), default="auto",
                   help="live progress on stderr (auto: rich on a terminal, plain lines otherwise)")
    _common(p)

    p = sub.add_parser("validate", help="check every manifest line; no network")
    p.add_argument("manifest", help="JSONL, CSV or YAML manifest; - reads JSONL from stdin")
    p.add_argument("--config", help="YAML config file (prices for the cost estimate)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _common(p)

    p = sub.add_parser("status", help="what a run (finished, crashed or running) has done so far")
    p.add_argument("--state-dir", required=True, help="the run's checkpoint directory")
    p.add_argument("--config", help="YAML config file (prices for the cost estimate)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _common(p)

    p = sub.add_parser("demo", help="run sample_manifests/ through an in-process emulator")
    from . import demo
    demo.add_arguments(p)
    _common(p)

    p = sub.add_parser("emulator", help="run the local OpenSearch-compatible emulator")
    from .emulator import cli as emulator_cli
    emulator_cli.add_arguments(p)
    _common(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet, fmt=args.log_format)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "validate":
            code, report = commands.validate(args.manifest, load_config(args.config))
            print(json.dumps(report, indent=2) if args.json else commands.format_validate(report))
            return code
        if args.command == "status":
            if not (Path(args.state_dir) / Checkpoint.DB_NAME).exists():
                raise UsageError(f"{args.state_dir} holds no run (no {Checkpoint.DB_NAME} in it)")
            code, report = commands.status(Path(args.state_dir), load_config(args.config))
            print(json.dumps(report, indent=2) if args.json else commands.format_status(report))
            return code
        if args.command == "demo":
            from . import demo
            return demo.main(args)
        if args.command == "emulator":
            from .emulator import cli as emulator_cli
            return emulator_cli.main(args)
    except (ConfigError, UsageError, ManifestError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except PipelineError as exc:
        log.error("%s", exc)
        return EXIT_ABORTED
    except KeyboardInterrupt:  # a signal outside the run's own handling: state is consistent
        log.error("interrupted; run the same command again to resume")
        return EXIT_ABORTED
    except OSError as exc:  # a full disk, an unwritable results path: stop, state stays resumable
        log.error("cannot go on: %s", exc)
        return EXIT_ABORTED
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config, overrides={"endpoint": args.endpoint, "workspace": args.workspace})
    if not config.endpoint:
        raise ConfigError("no endpoint: give --endpoint URL, set PIPELINE_ENDPOINT, or put endpoint "
                          "in the --config file", key="endpoint")
    api_key = os.environ.get("DASHSCOPE_API_KEY", "")
    if not api_key.strip():
        raise ConfigError("DASHSCOPE_API_KEY is not set: export your API key first", key="api_key")
    if args.manifest != "-" and not Path(args.manifest).exists():
        raise UsageError(f"manifest {args.manifest} does not exist")
    out = Path(args.out)
    state_dir = Path(args.state_dir) if args.state_dir else out.with_name(out.name + ".state")
    request = RunRequest(manifest=args.manifest, out=out, state_dir=state_dir, api_key=api_key,
                         config=config, retry_failed=args.retry_failed)
    stats = RunStats()
    limits = {name: config.limit_rps(name) for name in CAPABILITIES}

    async def with_progress() -> RunResult:
        progress = asyncio.create_task(show_progress(
            stats, limits, total=count_lines(args.manifest), mode="off" if args.quiet else args.progress,
            interval=config.progress_interval))
        try:
            return await Run(request, stats=stats).execute()
        finally:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)

    result = asyncio.run(with_progress())
    # The run's own handlers are gone with its loop; a signal from here on still means "stop
    # now", and everything is already consistent on disk.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: os._exit(EXIT_ABORTED))
    where = f"results: {out}   summary: {out.with_name(out.stem + '.summary.json')}"
    if args.log_format == "json":
        log.info("run %s; %s", result.outcome, where, extra={"summary": result.summary})
    elif not args.quiet:
        print(format_summary(result.summary), file=sys.stderr)
        print(where, file=sys.stderr)
    if result.reason:
        log.error("run stopped: %s", result.reason)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
