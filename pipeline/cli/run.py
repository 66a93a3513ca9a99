"""`run`: one run of a manifest from the command line, with live progress, metrics and pings
around it, and the summary printed at the end."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import anyio

from ..config.load import Config, load_config
from ..core.echo import clipped
from ..core.errors import ConfigError, UsageError
from ..core.results import RunFiles
from ..engine.item_source import Listing
from ..engine.runner import RunRequest, RunResult, single_error
from ..engine.shutdown import exiting_on_signal
from ..engine.watched import watched_run
from ..observe.report import format_summary
from ..state.shards import parse_shard
from .parser import config_overrides

if sys.version_info < (3, 11):  # anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["run_command"]

log = logging.getLogger("pipeline")


def _prepare(args: argparse.Namespace) -> tuple[Config, RunRequest]:
    config = load_config(args.config, overrides=config_overrides(args))
    if not config.endpoint:
        raise ConfigError("no endpoint: give --endpoint URL, set PIPELINE_ENDPOINT, or put endpoint "
                          "in the --config file", key="endpoint")
    api_key = os.environ.get("DASHSCOPE_API_KEY", "")
    if not api_key.strip():
        raise ConfigError("DASHSCOPE_API_KEY is not set: export your API key first", key="api_key")
    if args.manifest != "-" and not args.manifest.startswith("oss://") and not Path(args.manifest).exists():
        raise UsageError(f"source {clipped(args.manifest, 400)} does not exist: give a manifest, a directory or "
                         "oss://BUCKET/PREFIX")
    files = RunFiles.for_results(Path(args.out), Path(args.state_dir) if args.state_dir else None)
    shard = parse_shard(args.shard) if args.shard else None
    if shard is not None:  # each shard its own files, so shards never share a lock or a results file
        files = RunFiles(shard.path(files.results), shard.path(files.state_dir))
    return config, RunRequest(manifest=args.manifest, files=files, api_key=api_key, config=config,
                              retry_failed=args.retry_failed, append=args.append, shard=shard,
                              analyses=args.analyses, config_file=Path(args.config) if args.config else None,
                              force=args.force, force_analyses=tuple(args.force_analysis),
                              listing=Listing(tuple(args.include), tuple(args.exclude), args.follow_symlinks))


def run_command(args: argparse.Namespace) -> int:
    """Run (or resume) the manifest `args` name; the exit code of the whole run."""
    config, request = _prepare(args)
    mode = "off" if args.quiet else args.progress

    async def with_progress() -> tuple[int, RunResult]:
        result = await watched_run(request, progress=mode)
        return result.exit_code, result

    # Outside the run's own handling (its loop's handlers), a signal exits 3 at once: everything
    # it could cut is consistent on disk. The process entry holds them once `main` returned.
    with exiting_on_signal():
        try:
            code, result = anyio.run(with_progress)
        except BaseExceptionGroup as group:
            raise single_error(group) from None
        # The run's code is final from here: a signal while the report draws abandons the report, not the code.
        from .report import AfterRun  # Jinja2 and matplotlib only when drawing, and only if installed

        with AfterRun() as after:
            page = None
            if result is not None and report_wanted():  # before the summary is said: it stays the last word
                page = after.write_report(request.files, config, config_file=request.config_file)
            _report(args, request, result, code, page)
    return int(code)


def _report(args: argparse.Namespace, request: RunRequest, result: RunResult | None, code: int,
            page: Path | None = None) -> None:
    """The summary on stderr (or one JSON log record), where the files are, and why it stopped."""
    assert result is not None
    where = f"results: {request.files.results}   summary: {request.files.summary}"
    if page is not None:
        where += f"   report: {page}"
    if args.log_format == "json":
        log.info("run %s; %s", result.outcome.value, where, extra={"summary": result.summary})
    elif not args.quiet:
        print(format_summary(result.summary), file=sys.stderr)
        print(where, file=sys.stderr)
    if result.stop is not None:
        log.error("run stopped (exit %d): %s", int(code), result.stop)


#: `PIPELINE_REPORT=off` (or 0, false, no): no results.report.html at the end of a run (drawing
#: it takes a second or two; `report --state-dir` draws it whenever asked).
REPORT_ENV = "PIPELINE_REPORT"


def report_wanted() -> bool:
    """Whether the run writes its HTML report at the end (`REPORT_ENV`)."""
    return os.environ.get(REPORT_ENV, "on").strip().lower() not in ("0", "off", "false", "no")
