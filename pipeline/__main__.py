"""Command line: parse arguments, run the command, map every outcome to one `ExitCode`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from .cli.logs import setup_logging
from .cli.parser import build_parser, config_overrides
from .config.load import Config, load_config
from .core.capabilities import CAPABILITIES
from .core.errors import AuthError, ConfigError, ManifestError, PipelineError, StateLocked, UsageError
from .core.exit_codes import ExitCode
from .core.results import RunFiles
from .engine.runner import Run, RunRequest, RunResult, single_error
from .engine.shutdown import SIGNALS
from .observe.metrics import RunMetrics
from .observe.pings import Pinger
from .observe.progress import count_lines, show_progress
from .observe.report import RunStats, format_summary, summarize
from .state.shards import parse_shard

if sys.version_info < (3, 11):  # anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("pipeline")


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code of an error that ended a command before or outside a run's own outcome."""
    if isinstance(exc, StateLocked):
        return ExitCode.LOCKED
    if isinstance(exc, AuthError):  # OSS refused the key pair at the start check
        return ExitCode.AUTH
    if isinstance(exc, (ConfigError, UsageError, ManifestError)):
        return ExitCode.USAGE
    return ExitCode.INTERRUPTED  # resumable: a signal outside the run, a full disk, ...


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv=argv)
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet, fmt=args.log_format)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "validate":
            from .cli import validate
            code, report = validate.validate(args.manifest, load_config(args.config), analyses=args.analyses)
            print(json.dumps(report, indent=2) if args.json else validate.format_validate(report))
            return int(code)
        if args.command == "status":
            from .cli import status
            code, report = status.status([Path(d) for d in args.state_dir], load_config(args.config),
                                         os.environ.get("DASHSCOPE_API_KEY"))
            print(json.dumps(report, indent=2) if args.json else status.format_status(report))
            return int(code)
        if args.command == "export":
            from .cli import export
            return export.main(args)
        if args.command == "demo":
            from .cli import demo
            return demo.main(args)
        if args.command == "emulator":
            from .emulator import cli as emulator_cli
            return emulator_cli.main(args)
    except (PipelineError, OSError) as exc:
        log.error("%s", _describe(exc))
        return exit_code_for(exc)
    except KeyboardInterrupt:  # a signal outside the run's own handling: state is consistent
        log.error("interrupted; run the same command again to resume")
        return ExitCode.INTERRUPTED
    parser.error(f"unknown command {args.command}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, PipelineError):  # a full disk, a vanished dir
        return f"cannot go on: {exc.strerror or exc} ({exc.filename or ''}); run the same command again to resume"
    return str(exc)


def _prepare(args: argparse.Namespace) -> tuple[Config, RunRequest]:
    config = load_config(args.config, overrides=config_overrides(args))
    if not config.endpoint:
        raise ConfigError("no endpoint: give --endpoint URL, set PIPELINE_ENDPOINT, or put endpoint "
                          "in the --config file", key="endpoint")
    api_key = os.environ.get("DASHSCOPE_API_KEY", "")
    if not api_key.strip():
        raise ConfigError("DASHSCOPE_API_KEY is not set: export your API key first", key="api_key")
    if args.manifest != "-" and not Path(args.manifest).is_file():
        what = "is a directory" if Path(args.manifest).is_dir() else "does not exist"
        raise UsageError(f"manifest {args.manifest} {what}")
    files = RunFiles.for_results(Path(args.out), Path(args.state_dir) if args.state_dir else None)
    shard = parse_shard(args.shard) if args.shard else None
    if shard is not None:  # each shard its own files, so shards never share a lock or a results file
        files = RunFiles(shard.path(files.results), shard.path(files.state_dir))
    return config, RunRequest(manifest=args.manifest, files=files, api_key=api_key, config=config,
                              retry_failed=args.retry_failed, append=args.append, shard=shard,
                              analyses=args.analyses, config_file=Path(args.config) if args.config else None)


def _run(args: argparse.Namespace) -> int:
    config, request = _prepare(args)
    stats = RunStats()
    limits = {name: config.limit_rps(name) for name in CAPABILITIES}
    pinger = Pinger(config.ping_url) if config.ping_url else None
    metrics = RunMetrics(textfile=Path(config.metrics_file) if config.metrics_file else None,
                         pushgateway=config.pushgateway) if (config.metrics_file or config.pushgateway) else None

    def live_summary() -> dict[str, object]:
        return summarize(stats.caps, prices=config.prices, elapsed=stats.elapsed(), qps=limits,
                         rejected=stats.rejected)

    async def metrics_ticks() -> None:
        assert metrics is not None
        while True:
            await anyio.sleep(config.progress_interval)
            metrics.progress(live_summary())

    async def with_progress() -> tuple[int, RunResult | None]:
        result: RunResult | None = None
        code: int = ExitCode.INTERRUPTED
        started = False  # pings and metrics begin only once the run is accepted: a refused one touches neither

        async def on_started() -> None:
            nonlocal started
            started = True
            if pinger is not None:
                await pinger.start()
            if metrics is not None:
                tg.start_soon(metrics_ticks)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: show_progress(
                    stats, limits, total=count_lines(args.manifest), mode="off" if args.quiet else args.progress,
                    interval=config.progress_interval))
                try:
                    result = await Run(request, stats=stats, on_started=on_started).execute()
                    code = result.exit_code
                except (PipelineError, OSError) as exc:
                    code = exit_code_for(exc)
                    raise
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if metrics is not None and started:
                    await metrics.finish(result.summary if result else live_summary(), int(code))
                if pinger is not None and started:
                    await pinger.finish(int(code))
        return code, result

    try:
        code, result = anyio.run(with_progress)
    except BaseExceptionGroup as group:
        raise single_error(group) from None
    # The run's own handlers are gone with its loop; a signal from here on still means "stop
    # now", and everything is already consistent on disk.
    for sig in SIGNALS:
        signal.signal(sig, lambda *_: os._exit(ExitCode.INTERRUPTED))
    assert result is not None
    where = f"results: {request.files.results}   summary: {request.files.summary}"
    if args.log_format == "json":
        log.info("run %s; %s", result.outcome.value, where, extra={"summary": result.summary})
    elif not args.quiet:
        print(format_summary(result.summary), file=sys.stderr)
        print(where, file=sys.stderr)
    if result.stop is not None:
        log.error("run stopped (exit %d): %s", int(code), result.stop)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
