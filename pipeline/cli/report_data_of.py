"""A state dir's `ReportData`: what the HTML report shows, read from the checkpoint (one
consistent snapshot, also of a live run), the summary file and the FAILED result lines.

The outcome and the per-capability table come from the summary the run wrote at its end
(`results.summary.json`: it also has the session's request rates); for a live run, or one whose
summary is missing or another run's, from the checkpoint as `status` reads it. The history,
time series and histograms come from the tables the run records as it goes (`state.history`,
`state.series`); a state dir from before them has none, and the report says so.
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config.load import Config
from ..core.capabilities import CAPABILITIES
from ..core.results import ItemStatus, RunFiles
from ..engine.item_source import selection_args
from ..observe.report import MIN_RATE_SECONDS
from ..observe.report_data import (
    CatalogDelta,
    GroupTraffic,
    Histogram,
    History,
    OlderSessions,
    ReportData,
    Session,
    TimeSeries,
)
from ..observe.report_summary import EXAMPLES_PER_CODE, failures_from, from_summary
from ..state.checkpoint import Buckets, Checkpoint, JobState, MetaKey, Sample, SessionRow
from ..state.history import INTERRUPTED, RUNNING
from ..state.resume import NOT_RETRIED_CODES, STREAM_SOURCE
from ..state.shards import parse_shard
from .status import summary_of

__all__ = ["MAX_FAILED_READ", "live_traffic", "report_data", "retry_command"]

#: FAILED lines read at most for the failures' examples (a run with a million failures is not read whole).
MAX_FAILED_READ = 5000
#: The longest result line read for an example (a snapshot's inline frames can be megabytes).
MAX_LINE = 4 * 1024 * 1024
_CATALOG_KEYS = ("new", "changed", "unchanged", "vanished")


def report_data(ckpt: Checkpoint, state_dir: Path, config: Config, *, now: float | None = None,
                config_file: Path | None = None, live: bool | None = None) -> ReportData:
    """The report of the run in `state_dir` (its checkpoint open), as it is now. `live` None: as
    the state dir's lock says (False when the caller holds it: the run has ended)."""
    with ckpt.snapshot():
        status = summary_of(ckpt, state_dir, config)
        if live is None:
            live = status.get("live_run") is not None
        out = ckpt.get_meta(MetaKey.OUT)
        files = RunFiles.for_results(Path(out), state_dir) if out else None
        sessions, older = ckpt.history()
        latest = sessions[-1] if sessions else None
        summary = status if live else (_own_summary(files, status, latest) or status)
        if live and latest is not None:  # the checkpoint has no request counters: the live session's row has
            summary = live_traffic(summary, latest, now if now is not None else time.time())
        samples = ckpt.samples(latest.id) if latest else []
        histograms = ckpt.histograms(latest.id) if latest else {}
        failed = list(_failed_lines(ckpt, files.results, summary)) if files else []
        command = retry_command(ckpt, state_dir, config, config_file=config_file)
    limits = {name: config.limit_rps(name) for name in CAPABILITIES}
    failures = failures_from(summary, failed, not_retried=NOT_RETRIED_CODES, retry_command=command)
    data = from_summary(summary, title=out or str(state_dir), generated_at=now if now is not None else time.time(),
                        started=latest.started if latest else None, live=live, limits=limits,
                        currency=config.currency, failures=failures)
    return replace(data, history=_history(sessions, older, live) if sessions else None,
                   series=_series(samples, limits) if samples else None,
                   durations=_histogram(histograms.get("durations")),
                   detection_lag=_histogram(histograms.get("detection_lag")))


def live_traffic(summary: Mapping[str, Any], session: SessionRow, now: float) -> dict[str, Any]:
    """`summary` (status's, of a live run: no request counters) with the requests and 429s the
    live `session` has sent so far, by capability, as its history row last recorded them (every
    sample), and the rate they make since it started (left out under `MIN_RATE_SECONDS`, as the
    end-of-run summary does). Pure."""
    capabilities = {name: dict(entry) for name, entry in (summary.get("capabilities") or {}).items()}
    elapsed = now - session.started
    for name, counts in session.counts.by_capability.items():
        requests = int(counts.get("requests", 0))
        if not requests:
            continue
        entry = capabilities.setdefault(name, {"succeeded": 0, "failed": 0})
        entry.update(requests=requests, rate_limited=int(counts.get("rate_limited", 0)))
        if elapsed >= MIN_RATE_SECONDS:
            entry["request_rate"] = round(requests / elapsed, 3)
    return {**summary, "capabilities": capabilities}


def _own_summary(files: RunFiles | None, status: Mapping[str, Any], latest: SessionRow | None) -> dict[str, Any] | None:
    """The summary file of the run, when it is there, readable, this run's and its last
    session's: a session killed after an earlier one wrote its summary leaves that summary
    behind (written before the last session began, and saying another exit code than `status`),
    and the report must not call the run completed from it."""
    if files is None:
        return None
    try:
        written = files.summary.stat().st_mtime
        summary = json.loads(files.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if latest is not None and written < latest.started:
        return None
    known = status.get("exit_code")  # None while the state dir's lock is held (by the run drawing it)
    if isinstance(summary, dict) and known is not None and summary.get("exit_code") != known:
        return None
    if not isinstance(summary, dict) or summary.get("exit_code") is None:
        return None
    if summary.get("state_dir") and Path(summary["state_dir"]).resolve() != files.state_dir.resolve():
        return None
    return summary


def _failed_lines(ckpt: Checkpoint, results: Path, summary: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """FAILED result lines, read at the offsets the checkpoint keeps, until every error code of the
    summary has its examples (or `MAX_FAILED_READ` lines were read)."""
    wanted = {code for entry in (summary.get("capabilities") or {}).values()
              for code in entry.get("failed_by_code") or {}}
    found: dict[str, int] = {}
    try:
        f = open(results, "rb")  # noqa: SIM115 - closed below, generator-held
    except OSError:
        return
    with f:
        for n, key in enumerate(ckpt.iter_keys(JobState.DONE, ItemStatus.FAILED)):
            if n >= MAX_FAILED_READ or all(found.get(code, 0) >= EXAMPLES_PER_CODE for code in wanted):
                return
            _, offset = ckpt.done_line(key)
            if offset is None:
                continue
            f.seek(offset)
            try:
                line = json.loads(f.readline(MAX_LINE))
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("status") == ItemStatus.FAILED.value:
                code = str((line.get("error") or {}).get("code") or "Unknown")
                found[code] = found.get(code, 0) + 1
                yield line


def retry_command(ckpt: Checkpoint, state_dir: Path, config: Config, *, config_file: Path | None = None) -> str | None:
    """The command that sends the run's failed analyses again: its source with the same selection
    (--include, --exclude, --follow-symlinks, --analyses: a listing without them would take other
    items), its files and shard, the config file and endpoint when known (an endpoint is shown
    without any user or password). Every path is absolute, so it runs from any directory. Items
    that came from Python (`pipeline.stream`) have no command: the same call again, with
    `retry_failed=True`, is what sends them again."""
    out, manifests = ckpt.get_meta(MetaKey.OUT), ckpt.manifests()
    if not out or not manifests:
        return None
    results, state_dir = Path(out).resolve(), state_dir.resolve()
    if manifests[-1] == STREAM_SOURCE:  # the items are the caller's: only the caller can send them again
        own_dir = "" if state_dir == results.with_name(results.name + ".state") else f", state_dir={str(state_dir)!r}"
        return (f"pipeline.stream(items, out={str(results)!r}{own_dir}, retry_failed=True, ...)\n# the same call "
                "as the first, with the same items and options, plus retry_failed=True (docs/api.md, pipeline.stream)")
    shard_text = ckpt.get_meta(MetaKey.SHARD)
    args = ["python", "-m", "pipeline", "run", manifests[-1],
            *selection_args(ckpt.get_meta(MetaKey.SELECTION))]
    if shard_text:
        shard = parse_shard(shard_text)
        args += ["--out", str(shard.unpath(results)), "--state-dir", str(shard.unpath(state_dir)),
                 "--shard", shard_text]
    else:
        args += ["--out", str(results), "--state-dir", str(state_dir)]
    if config_file is not None:
        args += ["--config", str(config_file.resolve())]
    if config.endpoint and "@" not in config.endpoint:
        args += ["--endpoint", config.endpoint]
    return shlex.join([*args, "--retry-failed"])


def _history(rows: Sequence[SessionRow], older: Any, live: bool) -> History:
    sessions = []
    for i, row in enumerate(rows):
        outcome = row.outcome
        if outcome == RUNNING and not (live and i == len(rows) - 1):
            outcome = INTERRUPTED  # killed; the next start will record it so
        c = row.counts
        catalog = None
        if row.catalog:
            catalog = CatalogDelta(**{k: int(v) for k, v in row.catalog.items() if k in _CATALOG_KEYS})
        sessions.append(Session(started=row.started, ended=row.ended, outcome=outcome, exit_code=row.exit_code,
                                succeeded=c.succeeded, failed=c.failed, skipped=c.skipped, rejected=c.rejected,
                                cost=c.cost, requests=c.requests, rate_limited=c.rate_limited, catalog=catalog))
    folded = None
    if older is not None:
        folded = OlderSessions(count=older.count, first_started=older.first_started, last_started=older.last_started,
                               succeeded=older.succeeded, failed=older.failed, cost=older.cost)
    return History(sessions=tuple(sessions), older=folded)


def _series(samples: Sequence[Sample], limits: Mapping[str, float]) -> TimeSeries:
    """Rates per second at each sample's end, from the samples' counts."""
    group_limits = {cap.qps_group: limits[name] for name, cap in CAPABILITIES.items()}
    groups = []
    for group in sorted({g for s in samples for g in s.requests}):
        groups.append(GroupTraffic(
            group=group, limit=group_limits.get(group, math.nan),
            requests=tuple((s.t + s.span, s.requests.get(group, 0) / s.span) for s in samples if s.span > 0),
            rate_limited=tuple((s.t + s.span, s.rate_limited.get(group, 0) / s.span) for s in samples if s.span > 0)))
    return TimeSeries(
        step_s=statistics.median(s.span for s in samples), groups=tuple(groups),
        results=tuple((s.t + s.span, s.results / s.span) for s in samples if s.span > 0),
        in_flight=tuple((s.t + s.span, float(s.in_flight)) for s in samples))


def _histogram(buckets: Buckets | None) -> Histogram | None:
    if buckets is None or not sum(buckets[1]):
        return None
    bounds, counts = buckets
    return Histogram((*bounds, math.inf), tuple(counts))
