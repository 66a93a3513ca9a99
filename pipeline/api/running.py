"""`pipeline.run` and `pipeline.arun`: one run of a manifest from Python, with the command line's
behaviour, files, locking and exit codes, and none of its process-wide habits.

Everything the caller gave is checked before anything starts (options, config, API key,
endpoint, manifest): a bad one raises `ConfigError` or `UsageError` naming it, with exit code 2
on the exception. The run's own refusals are the exception tree's too (`StateLocked`, exit 7,
when another live run holds the state dir). A run that ran returns a `RunResult` whatever its
outcome (`exit_code` 0, 1, 3, 4, 5 or 6). Nothing here calls `sys.exit`, installs signal
handlers unless `handle_signals=True`, or configures logging (records go to the `pipeline`
logger, for the caller to route).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from ..config.load import Config, flag_of, load_config
from ..core.echo import clipped
from ..core.errors import ConfigError, UsageError
from ..core.results import RunFiles
from ..engine.closing import RunResult
from ..engine.item_source import STREAM_SOURCE, Listing, kind_of
from ..engine.runner import RunRequest, single_error
from ..engine.watched import watched_run
from .options import RunOptions, RunSettings, check_options

if sys.version_info < (3, 11):  # anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup
if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ConfigSource", "arun", "prepare", "run", "with_report"]

#: `config=`: a YAML file's path, a mapping of its keys, or a `Config` (taken as it is).
ConfigSource: TypeAlias = "str | os.PathLike[str] | Mapping[str, Any] | Config | None"
API_KEY_ENV = "DASHSCOPE_API_KEY"


def run(source: str | os.PathLike[str], *, out: str | os.PathLike[str], endpoint: str | None = None,
        api_key: str | None = None, config: ConfigSource = None, **options: Unpack[RunOptions]) -> RunResult:
    """Run (or resume) the manifest `source` to its end, writing `out` (the CLI's `run --out`).

    Synchronous, for an orchestrator's task; inside a running event loop use `arun`. Options are
    the CLI's `run` flags by their Python names (`max_cost=0.5`, `analyses=["image_analyze"]`,
    `retry_failed=True`, ...); the API key defaults to `DASHSCOPE_API_KEY`. Raises `ConfigError`
    / `UsageError` (exit code 2) before anything starts, `StateLocked` (7) when another live run
    holds the state dir; otherwise returns the `RunResult` (`exit_code`, `outcome`, `summary`,
    and `report`: where the HTML report went, as the CLI writes it; `report=False` leaves it out).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError("pipeline.run() was called inside a running event loop: use `await pipeline.arun(...)` "
                         "there (it takes the same arguments)")
    request, settings = prepare(source, out=out, endpoint=endpoint, api_key=api_key, config=config,
                                options=options, caller="pipeline.run()")
    try:
        return anyio.run(_execute, request, settings)
    except BaseExceptionGroup as group:
        raise single_error(group) from None


async def arun(source: str | os.PathLike[str], *, out: str | os.PathLike[str], endpoint: str | None = None,
               api_key: str | None = None, config: ConfigSource = None,
               **options: Unpack[RunOptions]) -> RunResult:
    """`run`, awaited in the caller's event loop (asyncio). Cancelling the awaiting task stops the
    run at once, as a consistent stop: the same call again resumes it."""
    request, settings = prepare(source, out=out, endpoint=endpoint, api_key=api_key, config=config,
                                options=options, caller="pipeline.arun()")
    try:
        return await _execute(request, settings)
    except BaseExceptionGroup as group:
        raise single_error(group) from None


async def _execute(request: RunRequest, settings: RunSettings) -> RunResult:
    result = await watched_run(request, progress=settings.progress, handle_signals=settings.handle_signals)
    return await with_report(result, request, settings)


async def with_report(result: RunResult, request: RunRequest, settings: RunSettings) -> RunResult:
    """`result` with the HTML report written as the command line writes it (`report=`; default:
    on unless `PIPELINE_REPORT=off`) and `result.report` saying where. Never fails the run: without
    the `report` extra, or when it cannot be written, one warning and `result.report` None.
    Drawn in a worker thread (a second or two of matplotlib): the caller's event loop goes on."""
    from ..cli.report import write_run_report
    from ..cli.run import report_wanted

    wanted = settings.report if settings.report is not None else report_wanted()
    if wanted is False:
        return result
    out = wanted if isinstance(wanted, Path) else None
    result.report = await anyio.to_thread.run_sync(functools.partial(
        write_run_report, request.files, request.config, config_file=request.config_file, out=out))
    return result


def prepare(source: str | os.PathLike[str] | None, *, out: str | os.PathLike[str], endpoint: str | None,
            api_key: str | None, config: ConfigSource, options: Mapping[str, Any],
            caller: str) -> tuple[RunRequest, RunSettings]:
    """Everything checked, nothing started: the run's request and its settings. `source` None:
    items from Python (`pipeline.stream`), named `STREAM_SOURCE` in the state dir."""
    settings = check_options(options, caller=caller)
    overrides = {**settings.overrides, "endpoint": endpoint}
    cfg = _config(config, overrides, caller)
    if not cfg.endpoint:
        where = ("the Config given (a Config object is used as it is: the environment is not read for it)"
                 if isinstance(config, Config) else "the config")
        raise ConfigError(f"no endpoint: give endpoint='https://…', set PIPELINE_ENDPOINT, or put endpoint in {where}",
                          key="endpoint", source=caller)
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    if not isinstance(key, str) or not key.strip():
        passed: object = api_key  # typed str, but a caller's program may pass anything
        if passed is not None and not isinstance(passed, str):
            given = f"api_key must be a string, got {type(passed).__name__}"
        else:
            given = "api_key is empty" if api_key is not None else f"{API_KEY_ENV} is not set"
        raise ConfigError(f"{given}: pass api_key=... or export {API_KEY_ENV}", key="api_key", source=caller)
    manifest = STREAM_SOURCE if source is None else _manifest(source, caller)
    listing = Listing(settings.include, settings.exclude, settings.follow_symlinks)
    if kind_of(manifest) == "manifest" and listing != Listing():  # a stream reads no listing either
        name = next(n for n in ("include", "exclude", "follow_symlinks") if getattr(settings, n))
        what = "items from Python" if source is None else f"a manifest ({clipped(manifest)})"
        raise ConfigError(f"applies to a directory or an oss:// prefix, not to {what}: filter the items themselves",
                          key=name, source=caller)
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise ConfigError("must be the results file's path (str or os.PathLike)", key="out", source=caller)
    files = RunFiles.for_results(Path(out), settings.state_dir)
    if settings.shard is not None:  # each shard its own files, as on the command line
        files = RunFiles(settings.shard.path(files.results), settings.shard.path(files.state_dir))
    config_file = Path(config) if isinstance(config, (str, os.PathLike)) else None
    return RunRequest(manifest=manifest, files=files, api_key=key, config=cfg, retry_failed=settings.retry_failed,
                      append=settings.append, shard=settings.shard, analyses=settings.analyses,
                      config_file=config_file, force=settings.force, force_analyses=settings.force_analyses,
                      listing=listing), settings


def _config(config: ConfigSource, overrides: Mapping[str, Any], caller: str) -> Config:
    """The config: loaded from a path or mapping under `overrides` (env applies, as for the CLI),
    or a given `Config` with `overrides` laid over it (checked by the same rules)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        if isinstance(config, Config):
            if not given:
                return config
            checked = load_config(None, env={}, overrides=given)
            return dataclasses.replace(config, **{k: getattr(checked, k) for k in given})
        if config is not None and not isinstance(config, (str, os.PathLike, Mapping)):
            raise ConfigError("must be a YAML file's path, a mapping of config keys, or a pipeline Config, got "
                              f"{type(config).__name__}", key="config", source=caller)
        return load_config(config, overrides=given)
    except ConfigError as exc:
        # An option's error names the option as the caller spelled it, not the CLI flag.
        if exc.key in given and exc.source == flag_of(exc.key):
            raise ConfigError(exc.message, key=exc.key, source=caller) from None
        raise


def _manifest(source: object, caller: str) -> str:
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise ConfigError("must be a manifest's or a directory's path (str or os.PathLike), oss://BUCKET/PREFIX, or "
                          "'-' for JSON Lines on stdin; to run item dicts from Python, use pipeline.stream()",
                          key="source", source=caller)
    manifest = os.fspath(source)
    if not isinstance(manifest, str):
        manifest = os.fsdecode(manifest)
    if manifest != "-" and not manifest.startswith("oss://") and not Path(manifest).exists():
        raise UsageError(f"source {clipped(manifest)} does not exist: give a JSONL, CSV, YAML or TXT manifest, a "
                         "directory or oss://BUCKET/PREFIX")
    return manifest
