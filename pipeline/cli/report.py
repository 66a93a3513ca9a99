"""`report --state-dir DIR [--out FILE]`: a run's self-contained HTML report; and the same report
written next to the summary at the end of every run (`results.report.html`).

The report reads the state dir read-only, in one snapshot (`report_data_of`), so it works on a
live run (marked live) and on a state dir from before the run history (which it says). `--out`
(default: the run's `results.report.html`) is checked by the rule of every writing option
(`state.paths.check_targets`): the run's results, rejects and summary files, its manifests, its
state dir and any existing file that is not a report are refused (exit 2) before anything is
written; the file is written whole or not at all.

`report` without the optional `report` extra (Jinja2, matplotlib), or with one that fails to
import, exits 2 with a message naming the extra (and the module that failed, and its error).

At the end of a run the report is a bonus, never a failure: without the extra (or with a broken
one) one warning says how to get it, and a report that cannot be written is a warning. On the
command line the run's exit code is final before the report is drawn (`AfterRun`): a signal
while it draws abandons the report (a warning), not the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import tempfile
from pathlib import Path
from types import FrameType, TracebackType

from ..config.load import Config, load_config
from ..core.errors import PipelineError, UsageError
from ..core.exit_codes import ExitCode
from ..core.results import RunFiles
from ..engine.shutdown import SIGNALS, signals_held
from ..observe.html_report import ReportUnavailable, render_report, report_ours, require
from ..state.checkpoint import Checkpoint, MetaKey
from ..state.lock import StateDirLock
from ..state.paths import Target, check_targets, shown_path
from .report_data_of import report_data

__all__ = ["AfterRun", "ReportInterrupted", "main", "write_report", "write_run_report"]

log = logging.getLogger("pipeline.report")


def main(args: argparse.Namespace) -> int:
    """`python -m pipeline report --state-dir DIR [--out FILE] [--config FILE]`; the exit code."""
    state_dir = Path(args.state_dir)
    if not (state_dir / Checkpoint.DB_NAME).exists():
        raise UsageError(f"{shown_path(state_dir)} holds no run (no {Checkpoint.DB_NAME} in it): give the state dir "
                         "of a run (--state-dir, by default the results file's name + .state)")
    if args.out == "-":
        raise UsageError("--out -: the report is one HTML file, replaced whole when it is written; give its path "
                         "(or leave --out out: the run's results.report.html)")
    config = load_config(args.config)
    out = write_report(state_dir, config, Path(args.out) if args.out else None,
                       config_file=Path(args.config) if args.config else None)
    print(out)
    return int(ExitCode.OK)


def write_report(state_dir: Path, config: Config, out: Path | None = None, *,
                 config_file: Path | None = None, locked: bool = False) -> Path:
    """Write the report of the run in `state_dir` to `out` (default: next to its summary);
    returns where. `locked`: the caller holds the state dir's lock, so the checkpoint is opened
    as the run opens it, and closing it leaves no SQLite side file behind (a read-only reader
    cannot remove them). Raises `UsageError` for an `out` it may not write, `ReportUnavailable`
    (a `UsageError`) without the `report` extra or with a broken one, before anything is read."""
    require()
    if out is not None:  # all that can be told without the checkpoint, before opening it touches SQLite's files
        check_targets([Target("--out", out, ours=report_ours)], state_dirs=[state_dir])
    ckpt = Checkpoint.open(state_dir, read_only=not locked)
    try:
        target = out if out is not None else _default_out(ckpt, state_dir)
        check_out(target, ckpt, state_dir, config_file=config_file)
        html = render_report(report_data(ckpt, state_dir, config, config_file=config_file,
                                         live=False if locked else None))
    finally:
        ckpt.close()
    _write_whole(target, html)
    return target


def write_run_report(files: RunFiles, config: Config, *, config_file: Path | None = None,
                     out: Path | None = None) -> Path | None:
    """At the end of a run: its report next to its summary, or at `out` (returns where), or one
    warning saying why not. Never raises for the report's sake: the run's outcome stands."""
    try:
        require()
    except ReportUnavailable as exc:
        log.warning("no HTML report written: %s (PIPELINE_REPORT=off leaves it out)", exc)
        return None
    lock = StateDirLock(files.state_dir)
    try:
        lock.acquire()  # the run has just let it go; another run that took it since has the state dir now
        try:
            return write_report(files.state_dir, config, out or files.report, config_file=config_file, locked=True)
        finally:
            lock.release()
    except (PipelineError, OSError, ValueError) as exc:  # the run's outcome stands whatever happens here
        log.warning("the HTML report could not be written (%s); `report --state-dir %s` tries again", exc,
                    shown_path(files.state_dir))
        return None


class ReportInterrupted(BaseException):
    """A signal arrived while the end-of-run report was drawn (a BaseException: nothing on the
    way out may take it for an error of the report and go on drawing)."""


class AfterRun:
    """The command line once its run has ended and its exit code is final: SIGINT, SIGTERM or
    SIGHUP while the report draws abandons the report (one warning) and the process still exits
    with the run's code; one after that is let pass (the process ends in a moment, with that
    code). Before, a signal here met the run's `exit_now` and turned a finished run into exit 3."""

    def __init__(self) -> None:
        self._drawing = False
        self._before: dict[int, object] = {}

    def __enter__(self) -> AfterRun:
        with signals_held():
            self._before = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with signals_held():
            for sig, handler in self._before.items():
                if handler is not None:  # None: set from C, cannot be put back from Python
                    signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, sig: int, _frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if self._drawing:
            self._drawing = False
            raise ReportInterrupted(name)
        log.info("%s after the run ended: its exit code stands", name)

    def write_report(self, files: RunFiles, config: Config, *, config_file: Path | None = None) -> Path | None:
        """`write_run_report`, abandoned (None, one warning) if a signal arrives meanwhile."""
        self._drawing = True
        try:
            return write_run_report(files, config, config_file=config_file)
        except ReportInterrupted as exc:
            log.warning("report not written: interrupted (%s); `report --state-dir %s` draws it", exc,
                        shown_path(files.state_dir))
            return None
        finally:
            self._drawing = False


def _default_out(ckpt: Checkpoint, state_dir: Path) -> Path:
    out = ckpt.get_meta(MetaKey.OUT)
    if not out:
        raise UsageError(f"the state dir {shown_path(state_dir)} does not record its results file: give --out FILE")
    return RunFiles.for_results(Path(out), state_dir).report


def check_out(out: Path, ckpt: Checkpoint, state_dir: Path, *, config_file: Path | None = None) -> None:
    """Refuse an `out` the report may not write (`paths.check_targets`): the run's own files, its
    manifests, the config file, anything in the state dir, and any existing file but a report."""
    inputs: dict[str, Path | None] = {"the config file (--config)": config_file}
    recorded = ckpt.get_meta(MetaKey.OUT)
    if recorded:
        files = RunFiles.for_results(Path(recorded), state_dir)
        inputs.update({"the run's results file": files.results, "the run's rejects file": files.rejects,
                       "the run's summary file": files.summary})
    for n, manifest in enumerate(m for m in ckpt.manifests() if m != "-"):
        inputs[f"a manifest of the run ({shown_path(manifest)})" if n else "the run's manifest"] = Path(manifest)
    check_targets([Target("--out", out, ours=report_ours)], inputs=inputs, state_dirs=[state_dir])


def _write_whole(out: Path, html: str) -> None:
    """`out` replaced at once by `html` (a temporary file next to it, renamed over it); a
    directory the report cannot write in is a usage error (exit 2), as every refused --out."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise UsageError(f"--out {shown_path(out)} cannot be written ({exc.strerror or exc}): give a path in a "
                         "directory you can write to") from None
    tmp = Path(name)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.write(html)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
