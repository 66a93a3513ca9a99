"""The command line: parse arguments, run the command, map every outcome to one `ExitCode`
(`python -m pipeline` and the `media-pipeline` console script both call `main`). A command's
module is imported only when that command runs, so `--version`, `validate` and `status` start
without the engine's HTTP stack."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from ..config.load import load_config
from ..core.errors import AuthError, ConfigError, ManifestError, PipelineError, StateLocked, UsageError
from ..core.exit_codes import ExitCode
from .logs import setup_logging
from .parser import build_parser

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


def entry() -> int:
    """The process's entry (`python -m pipeline`, `media-pipeline`): `main`, then SIGINT, SIGTERM
    and SIGHUP are held until the process has ended. Everything is said and on disk by then, and a
    signal would otherwise meet the default action Python restores while it shuts down (exit 143
    instead of the run's code). Only here: a program calling `main` keeps its signals."""
    code = main()
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv=argv)
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet, fmt=args.log_format)
    try:
        if args.command == "run":
            from .run import run_command  # the engine, aiohttp and the SDKs: only a run needs them
            return run_command(args)
        if args.command == "validate":
            from . import validate
            code, report = validate.validate(args.manifest, load_config(args.config), analyses=args.analyses)
            print(json.dumps(report, indent=2) if args.json else validate.format_validate(report))
            return int(code)
        if args.command == "status" and args.history:
            from . import history
            code, report = history.history([Path(d) for d in args.state_dir])
            print(json.dumps(report, indent=2) if args.json else history.format_history(report))
            return int(code)
        if args.command == "status":
            from . import status
            code, report = status.status([Path(d) for d in args.state_dir], load_config(args.config),
                                         os.environ.get("DASHSCOPE_API_KEY"))
            print(json.dumps(report, indent=2) if args.json else status.format_status(report))
            return int(code)
        if args.command == "export":
            from . import export
            return export.main(args)
        if args.command == "report":
            from . import report as report_command
            return report_command.main(args)
        if args.command == "demo":
            from . import demo
            return demo.main(args)
        # argparse lets only the parser's commands through, so what is left is the emulator
        assert args.command == "emulator", args.command
        from ..emulator import cli as emulator_cli
        return emulator_cli.main(args)
    except (PipelineError, OSError) as exc:
        log.error("%s", _describe(exc))
        return exit_code_for(exc)
    except KeyboardInterrupt:  # a signal outside the run's own handling: state is consistent
        log.error("interrupted; run the same command again to resume")
        return ExitCode.INTERRUPTED


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, PipelineError):  # a full disk, a vanished dir
        return f"cannot go on: {exc.strerror or exc} ({exc.filename or ''}); run the same command again to resume"
    return str(exc)


if __name__ == "__main__":
    import sys

    sys.exit(main())
