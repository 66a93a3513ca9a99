"""The command line: parse arguments, run the command, map every outcome to one `ExitCode`
(`python -m pipeline` and the `media-pipeline` console script both call `main`). A command's
module is imported only when that command runs, so `--version`, `validate` and `status` start
without the engine's HTTP stack."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config.load import load_config
from ..core.echo import clipped
from ..core.errors import PipelineError, UsageError
from ..core.exit_codes import ExitCode
from ..state.schema import EARLIER_VERSION
from .logs import setup_logging
from .parser import build_parser

log = logging.getLogger("pipeline")


class OutputError(PipelineError):
    """A command's output (stdout) could not be written: a full disk, a device error. Nothing is
    wrong with the run or the state dir; exit 3, as for any stop worth trying again."""

    @classmethod
    def of(cls, exc: OSError) -> OutputError:
        why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        return cls(f"the output could not be written to stdout ({why}); nothing else was changed: make room, or "
                   "send the output elsewhere, and run the command again")


def quiet_stdout() -> None:
    """After stdout failed (its reader left, the disk is full): point it at /dev/null, so that the
    interpreter's last flush does not fail again with a traceback."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def emit(text: str) -> ExitCode | None:
    """Print a command's report on stdout, flushed now. None when it was written; INTERRUPTED,
    quietly, when the reader closed the pipe first (`status | head -1`: cut short, like any
    broken pipe); `OutputError` when it could not be written."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()
        return ExitCode.INTERRUPTED
    except OSError as exc:
        quiet_stdout()
        raise OutputError.of(exc) from None
    return None


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code of an error that ended a command before or outside a run's own outcome:
    the pipeline's errors carry theirs (`PipelineError.exit_code`); anything else (a signal
    outside the run, a full disk) left the state consistent, so it is resumable."""
    return exc.exit_code if isinstance(exc, PipelineError) else ExitCode.INTERRUPTED


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
            if args.state_dir or args.include or args.exclude or not _is_manifest(args.manifest):
                return _validate_delta(args)
            from . import validate
            code, report = validate.validate(args.manifest, load_config(args.config), analyses=args.analyses)
            return int(emit(json.dumps(report, indent=2) if args.json else validate.format_validate(report)) or code)
        if args.command == "status" and args.history:
            from . import history
            code, report = history.history([Path(d) for d in args.state_dir], load_config(args.config))
            return int(emit(json.dumps(report, indent=2) if args.json else history.format_history(report)) or code)
        if args.command == "status":
            from . import status
            code, report = status.status([Path(d) for d in args.state_dir], load_config(args.config),
                                         os.environ.get("DASHSCOPE_API_KEY"))
            return int(emit(json.dumps(report, indent=2) if args.json else status.format_status(report)) or code)
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
    except sqlite3.OperationalError as exc:  # every write was a transaction: the state is consistent
        message, code = sqlite_failure(exc)
        log.error("%s", message)
        return code
    except KeyboardInterrupt:  # a signal outside the run's own handling: state is consistent
        log.error("interrupted; run the same command again to resume")
        return ExitCode.INTERRUPTED


#: SQLite's words (and errnos) for a disk that is full or failing, as opposed to a file it cannot read as asked.
_DISK_WORDS = ("database or disk is full", "disk i/o error")
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT})
#: SQLite's words for a table or column the file does not have: a file an earlier version wrote.
_SCHEMA_WORDS = ("no such column", "no such table")


def sqlite_failure(exc: sqlite3.OperationalError) -> tuple[str, ExitCode]:
    """What to say of an SQLite error that ended a command, and its exit code: a full or failing
    disk (by SQLite's words or the error's errno) is resumable once there is room (3); a table
    or column missing means a state dir of an earlier version, which a run upgrades (2); anything
    else (a locked or unopenable file) is said as it is, resumable (3)."""
    text = str(exc).lower()
    number = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+; its low byte is the primary code
    if any(words in text for words in _DISK_WORDS) or getattr(exc, "errno", None) in _DISK_ERRNOS or \
            (isinstance(number, int) and number & 0xFF in (10, 13)):  # SQLITE_IOERR, SQLITE_FULL
        return (f"cannot go on: the checkpoint in the state dir could not be written ({clipped(str(exc))}): the "
                "disk is full or failing; make room (or fix the disk) and run the same command again to resume",
                ExitCode.INTERRUPTED)
    if any(words in text for words in _SCHEMA_WORDS):
        return (f"{EARLIER_VERSION} ({clipped(str(exc))})", ExitCode.USAGE)
    return (f"cannot go on: the checkpoint in the state dir could not be used ({clipped(str(exc))}); run the same "
            "command again once nothing else holds it", ExitCode.INTERRUPTED)


def _is_manifest(location: str) -> bool:
    return location == "-" or not (location.startswith("oss://") or Path(location).is_dir())


def _validate_delta(args: argparse.Namespace) -> int:
    """`validate SOURCE --state-dir DIR` (or of a listed source): the delta a run would find, sent nowhere."""
    from ..engine.item_source import Listing
    from .validate_delta import delta_report, format_delta

    if args.state_dir and not (Path(args.state_dir) / "checkpoint.sqlite3").is_file():
        raise UsageError(f"{args.state_dir} holds no run: give the --state-dir of a run")
    report = delta_report(args.manifest, load_config(args.config), analyses=args.analyses,
                          listing=Listing(tuple(args.include), tuple(args.exclude), args.follow_symlinks),
                          state_dir=Path(args.state_dir) if args.state_dir else None)
    print(json.dumps(report, indent=2) if args.json else format_delta(report))
    return int(ExitCode.PARTIAL if report["rejected_lines"] else ExitCode.OK)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, PipelineError):  # a full disk, a vanished dir
        where = f" ({exc.filename})" if exc.filename else ""
        return f"cannot go on: {exc.strerror or exc}{where}; run the same command again to resume"
    return str(exc)


if __name__ == "__main__":
    import sys

    sys.exit(main())
