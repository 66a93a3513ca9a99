"""The run options of `pipeline.run` / `pipeline.arun`, by their Python names, checked before
anything starts: each is the command line's `run` flag of the same name (`max_cost` is
`--max-cost`), plus `handle_signals`, which only a program embedding a run needs, and `report`
(the command line's `PIPELINE_REPORT`, or the report's path).

Pure: `check_options` turns the keyword arguments into `RunSettings` or raises `ConfigError`
naming the option (an unknown name, with the nearest known one; a value of the wrong type or
out of range). Config keys among them (`workspace`, `max_cost`, ...) are checked again, with
every other config rule, when the config is loaded.
"""

from __future__ import annotations

import difflib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

from ..core.echo import clipped, shown
from ..core.errors import ConfigError, ManifestError, UsageError
from ..core.job import ANALYSIS_NAME
from ..manifest.analyses import run_analyses
from ..manifest.globs import compile_globs
from ..state.shards import Shard, parse_shard

__all__ = ["CONFIG_OPTIONS", "PROGRESS_MODES", "RunOptions", "RunSettings", "check_options"]

PROGRESS_MODES = ("auto", "rich", "plain", "off")


class RunOptions(TypedDict, total=False):
    """The keyword options of `pipeline.run` and `pipeline.arun` (the CLI's `run` flags)."""

    state_dir: str | os.PathLike[str]
    workspace: str
    analyses: str | Sequence[str]
    retry_failed: bool
    append: bool
    shard: str
    progress: Literal["auto", "rich", "plain", "off"]
    limiter: str
    max_cost: float
    max_duration: float | str
    metrics_file: str | os.PathLike[str]
    pushgateway: str
    ping_url: str
    handle_signals: bool
    include: str | Sequence[str]
    exclude: str | Sequence[str]
    follow_symlinks: bool
    force: bool
    force_analysis: str | Sequence[str]
    report: bool | str | os.PathLike[str]


#: Options that are config keys: they override the config (and PIPELINE_* variables), as flags do.
CONFIG_OPTIONS = ("workspace", "limiter", "max_cost", "max_duration", "metrics_file", "pushgateway", "ping_url")
_BOOLS = ("retry_failed", "append", "handle_signals", "follow_symlinks", "force")
#: `--include`, `--exclude`, `--force-analysis` (repeatable flags): one string or a list of them.
_LISTS = ("include", "exclude", "force_analysis")
_PATHS = ("state_dir", "metrics_file")
_TEXTS = ("workspace", "shard", "limiter", "pushgateway", "ping_url")


@dataclass(frozen=True)
class RunSettings:
    """The options, checked: what the run request needs, and the config overrides."""

    state_dir: Path | None = None
    analyses: tuple[str, ...] | None = None
    retry_failed: bool = False
    append: bool = False
    shard: Shard | None = None
    #: The API's default is off: an orchestrator's task log is no terminal.
    progress: str = "off"
    #: Off by default: the caller's program keeps its own signal handling.
    handle_signals: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: The catalog's options: `--include`, `--exclude`, `--follow-symlinks` (a directory or an
    #: oss:// source), `--force`, `--force-analysis`.
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    follow_symlinks: bool = False
    force: bool = False
    force_analyses: tuple[str, ...] = ()
    #: The HTML run report at the end: True (next to the summary), a path, False; None: as the
    #: command line, on unless `PIPELINE_REPORT=off`.
    report: bool | Path | None = None


def check_options(options: Mapping[str, Any], *, caller: str = "pipeline.run()") -> RunSettings:
    """`options` as `RunSettings`; `ConfigError` naming the first bad one (`caller` says where)."""
    known = RunOptions.__annotations__.keys()
    for name in options:
        if name not in known:
            near = difflib.get_close_matches(str(name), known, n=1)
            hint = f": did you mean {near[0]}?" if near else ""
            raise ConfigError(f"unknown option{hint} (known: {', '.join(sorted(known))})",
                              key=clipped(str(name)), source=caller)

    def bad(name: str, expected: str) -> ConfigError:
        return ConfigError(f"must be {expected}, got {shown(options[name])}", key=name, source=caller)

    for name, value in options.items():
        if name in _BOOLS and not isinstance(value, bool):
            raise bad(name, "True or False")
        if name in _PATHS and not (isinstance(value, os.PathLike) or (isinstance(value, str) and value)):
            raise bad(name, "a path (str or os.PathLike)")
        if name in _TEXTS and not (isinstance(value, str) and value.strip()):
            raise bad(name, "a non-empty string")
    if "max_cost" in options and (isinstance(options["max_cost"], bool)
                                  or not isinstance(options["max_cost"], (int, float))):
        raise bad("max_cost", "a number (in the price table's currency)")
    if "max_duration" in options and (isinstance(options["max_duration"], bool)
                                      or not isinstance(options["max_duration"], (int, float, str))):
        raise bad("max_duration", "seconds, or a duration such as '90s', '15m', '6h', '1h30m'")
    lists = {name: _strings(name, options[name], caller) for name in _LISTS if name in options}
    if lists.get("include") or lists.get("exclude"):
        try:  # the flags' own check (an empty pattern), named by the option
            compile_globs(lists.get("include", ()), lists.get("exclude", ()))
        except ManifestError as exc:
            name = "include" if exc.source == "--include" else "exclude"
            raise ConfigError(exc.message, key=name, source=caller) from None
    for name in lists.get("force_analysis", ()):
        if not ANALYSIS_NAME.fullmatch(name):
            raise ConfigError(f"{shown(name)} is not an analysis name (1 to 64 letters, digits, '_', '.', '-')",
                              key="force_analysis", source=caller)
    report = options.get("report")
    if "report" in options and not (isinstance(report, (bool, os.PathLike)) or (isinstance(report, str) and report)):
        raise bad("report", "True, False or the report's path (str or os.PathLike)")
    if options.get("handle_signals") and threading.current_thread() is not threading.main_thread():
        # Python delivers signals to the main thread only: the handlers could not be installed.
        raise bad("handle_signals", "False in a thread other than the main thread (signal handlers can only be "
                                    "installed from the main thread; stop the run by cancelling its task)")
    progress = options.get("progress", "off")
    if progress not in PROGRESS_MODES:
        raise bad("progress", f"one of {', '.join(PROGRESS_MODES)}")
    return RunSettings(
        state_dir=Path(options["state_dir"]) if "state_dir" in options else None,
        analyses=_analyses(options.get("analyses"), caller),
        retry_failed=options.get("retry_failed", False), append=options.get("append", False),
        shard=_shard(options.get("shard"), caller), progress=progress,
        handle_signals=options.get("handle_signals", False),
        include=lists.get("include", ()), exclude=lists.get("exclude", ()),
        follow_symlinks=options.get("follow_symlinks", False), force=options.get("force", False),
        force_analyses=lists.get("force_analysis", ()),
        report=report if report is None or isinstance(report, bool) else Path(report),
        overrides={name: _fspath(options[name]) for name in CONFIG_OPTIONS if name in options})


def _analyses(value: object, caller: str) -> tuple[str, ...] | None:
    """`"a,b"` or `["a", "b"]` as canonical capability names (checked as `--analyses` is)."""
    if value is None:
        return None
    names: object = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(names, Sequence) or isinstance(names, (bytes, str)) or not names \
            or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"must be capability names, as a list or separated by commas, got {shown(value)}",
                          key="analyses", source=caller)
    try:
        return run_analyses(list(names))
    except ManifestError as exc:
        raise ConfigError(exc.message, key="analyses", source=caller) from None


def _strings(name: str, value: object, caller: str) -> tuple[str, ...]:
    """A repeatable flag's values: one non-empty string, or a list (tuple) of them."""
    values = (value,) if isinstance(value, str) else value
    if not isinstance(values, Sequence) or isinstance(values, bytes) \
            or not all(isinstance(v, str) and v.strip() for v in values):
        raise ConfigError(f"must be a non-empty string or a list of them, got {shown(value)}", key=name, source=caller)
    return tuple(values)


def _shard(value: object, caller: str) -> Shard | None:
    if value is None:
        return None
    try:
        return parse_shard(str(value))
    except UsageError as exc:
        raise ConfigError(str(exc).replace("--shard ", "", 1), key="shard", source=caller) from None


def _fspath(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value
