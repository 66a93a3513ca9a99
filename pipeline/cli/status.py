"""`status`: what one or more runs (finished, crashed or running) have done; read-only.

It never takes a run's lock and never writes, so it works while a run is going. Its outcome
comes from `outcome.decide`, the same function `run` uses, so the two always agree.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ..config.load import Config
from ..core.capabilities import CAPABILITIES
from ..core.echo import clipped
from ..core.errors import StateError, UsageError
from ..core.exit_codes import ExitCode
from ..core.idset import IdSet
from ..core.outcome import UNFINISHED, RunOutcome, Stop, decide
from ..core.results import ItemStatus
from ..engine.closing import DOUBLE_BILLING
from ..engine.spend import run_spend, settled_cost, spend_report
from ..observe.report import stats_from_totals, summarize
from ..state.checkpoint import Checkpoint, JobState, MetaKey
from ..state.lock import describe, live_holder
from ..state.resume import LOST_RESULTS_ADVICE

__all__ = ["format_status", "status", "summary_of"]


def status(state_dirs: list[Path], config: Config, api_key: str | None = None) -> tuple[ExitCode, dict[str, Any]]:
    """One report per state dir (a shard each, say) and, for several, the totals. With a shared
    (Redis) limiter configured, also the processes that share the account's budget now.

    The exit code is the run's (what `run` exited with, or what a resume needs: 3 for a run that
    did not finish; 7 while a run is live); for several state dirs, the highest of theirs."""
    runs = [_one(state_dir, config) for state_dir in state_dirs]
    sharing = _sharing(config, api_key)
    if sharing is not None:
        for run in runs:
            run["sharing_budget"] = sharing
    code = max(ExitCode(run["status_exit_code"]) for run in runs)
    if len(runs) == 1:
        return code, runs[0]
    keys = ("rejected_lines", "estimated_cost")
    total: dict[str, Any] = {}
    for key in keys:
        values = [run.get(key) for run in runs]
        total[key] = None if any(v is None for v in values) else round(sum(values), 6)  # type: ignore[arg-type]
    total.update(_distinct(state_dirs, runs))
    total["exit_code"] = int(code)
    return code, {"runs": runs, "total": total}


def _distinct(state_dirs: list[Path], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over several state dirs that count each (item, analysis) once, however many of
    them hold it (the same dir given twice; dirs of different shardings of one `--out` made by
    an older version): succeeded if any holds it succeeded, else failed if any holds it failed,
    else in flight if any has a task for it. Streams the keys into compact sets."""
    succeeded, failed, in_flight = IdSet(), IdSet(), IdSet()
    rows = 0
    for state, status_, into in ((JobState.DONE, ItemStatus.SUCCESS, succeeded),
                                 (JobState.DONE, ItemStatus.FAILED, failed), (JobState.SUBMITTED, None, in_flight)):
        for state_dir in state_dirs:
            ckpt = Checkpoint.open(state_dir, read_only=True)
            try:
                for key in ckpt.iter_keys(state, status_):
                    rows += 1
                    if not any(key in seen for seen in (succeeded, failed, in_flight)):
                        into.add(key)
            finally:
                ckpt.close()
    started = len(succeeded) + len(failed) + len(in_flight)
    duplicates = rows - started
    items = [run.get("items") for run in runs]
    total_items = None if any(n is None for n in items) else max(sum(items) - duplicates, 0)  # type: ignore[arg-type]
    return {"succeeded": len(succeeded), "failed": len(failed), "in_flight_total": len(in_flight),
            "items": total_items, "duplicates": duplicates,
            "queued": None if total_items is None else max(total_items - started, 0)}


def _one(state_dir: Path, config: Config) -> dict[str, Any]:
    if not (state_dir / Checkpoint.DB_NAME).exists():
        raise UsageError(f"{state_dir} holds no run (no {Checkpoint.DB_NAME} in it)")
    ckpt = Checkpoint.open(state_dir, read_only=True)
    try:
        return summary_of(ckpt, state_dir, config)
    finally:
        ckpt.close()


def summary_of(ckpt: Checkpoint, state_dir: Path, config: Config) -> dict[str, Any]:
    """`status`'s report of one state dir, from its open (read-only) checkpoint."""
    try:
        rows = ckpt.totals()
        caps = stats_from_totals(*rows)
        counts = ckpt.counts()
        out = ckpt.get_meta(MetaKey.OUT)
        manifests = ckpt.manifests()
        rejected = ckpt.rejected_lines()
        total_items = ckpt.item_count()
        empty = ckpt.catalog_empty()
        stop = Stop.from_record(ckpt.last_stop())
        double_billing = int(ckpt.get_meta(DOUBLE_BILLING) or 0)
        catalog = ckpt.catalog.last_counts()
        recorded_size = ckpt.sink_offset()
        # every done line's, capped or not, and what killed sessions may have sent
        settled = settled_cost(*rows, config.prices) + run_spend(ckpt, config.prices, current=False)
        try:
            reserved = ckpt.spend()[1]
        except sqlite3.OperationalError:  # a state dir from before the spend ledger
            reserved = 0.0
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{state_dir / Checkpoint.DB_NAME} is not a readable checkpoint ({exc})") from None
    in_flight = {cap: c.get(JobState.SUBMITTED, 0) for cap, c in counts.items() if c.get(JobState.SUBMITTED)}
    for cap, n in in_flight.items():
        caps[cap].in_flight = n
    retry = {cap: c.get(JobState.RETRY, 0) for cap, c in counts.items() if c.get(JobState.RETRY)}
    holder = live_holder(state_dir)
    failed = sum(c.failed for c in caps.values())
    succeeded = sum(c.succeeded for c in caps.values())
    in_flight_total = sum(in_flight.values())
    queued = max(total_items - succeeded - failed - in_flight_total, 0) if total_items is not None else None
    if stop is None and (in_flight_total or retry or queued or out is None):
        # No stop recorded, yet work is left: a session of a version that did not mark itself
        # unfinished died part-way. A resume is what it needs, as for any other interruption.
        # No results file recorded: a run was killed before it bound the state dir to its files.
        stop = UNFINISHED
    outcome, code = decide(stop, failed=failed, rejected=rejected, empty=empty)
    reason = str(stop) if stop and not holder else None
    lost = None if holder else _results_lost(out, recorded_size)
    if lost is not None:  # what a run would do now, not how the last one ended
        code, reason = lost
        outcome = RunOutcome.STOPPED
    summary = summarize(caps, prices=config.prices, elapsed=None, rejected=rejected,
                        outcome="running" if holder else outcome.value)
    summary.update(
        state_dir=str(state_dir), manifest=manifests[-1] if manifests else None, manifests=manifests,
        results=out, live_run=holder, exit_code=None if holder else int(code),
        reason=reason, in_flight=in_flight, in_flight_total=in_flight_total,
        waiting_for_retry=retry, items=total_items, queued=queued,
        spend=spend_report(settled, reserved, config), possible_double_billing=double_billing, catalog=catalog,
        status_exit_code=int(ExitCode.LOCKED if holder else code))
    return summary


def _results_lost(out: str | None, recorded: int) -> tuple[ExitCode, str] | None:
    """When the results file no longer holds what the state dir records (deleted, or cut short),
    the exit code and words of what a run would do about it (`resume.reconcile`), else None."""
    if out is None or recorded <= 0:
        return None
    try:
        size = Path(out).stat().st_size
    except FileNotFoundError:
        return ExitCode.USAGE, (f"the results file {clipped(out, 240)} is missing, but the state dir records "
                                f"{recorded} bytes of results in it: a run would refuse (exit 2); "
                                f"{LOST_RESULTS_ADVICE}")
    except OSError:
        return None
    if size >= recorded:
        return None
    return ExitCode.INTERRUPTED, (f"the results file {clipped(out, 240)} is shorter than the state dir records "
                                  f"({size} of {recorded} bytes): a resume polls the recorded tasks of the lost lines "
                                  "again and submits again those without a task id (synchronous calls)")


def _sharing(config: Config, api_key: str | None) -> list[dict[str, Any]] | None:
    """Processes whose heartbeat is in the shared limiter now (None: no shared limiter, or its
    namespace cannot be known without the API key)."""
    if config.limiter == "memory" or not (config.limiter_namespace or api_key) or not config.endpoint:
        return None
    import anyio

    from ..pacing.build import limiter_namespace
    from ..pacing.redis_keys import live_processes

    try:
        return anyio.run(live_processes, config.limiter, limiter_namespace(config, api_key or ""))
    except Exception:  # status is read-only and best effort: Redis may be down
        return None


def format_status(report: dict[str, Any]) -> str:
    if "runs" in report:
        parts = [_format_one(run) for run in report["runs"]]
        t = report["total"]
        parts.append(f"total: {t['succeeded']} succeeded, {t['failed']} failed, {t['rejected_lines']} rejected "
                     f"lines, {t['in_flight_total']} in flight"
                     + (f", {t['queued']} not started of {t['items']} (item, analysis) results"
                        if t["items"] is not None else "")
                     + (f"; {t['duplicates']} held by more than one state dir, counted once"
                        if t["duplicates"] else "")
                     + f" (status exit {t['exit_code']})")
        return "\n\n".join(parts)
    return _format_one(report)


def _format_one(s: dict[str, Any]) -> str:
    lines = [f"state dir: {s['state_dir']}", f"manifest:  {s.get('manifest')}", f"results:   {s.get('results')}"]
    if s.get("live_run"):
        lines.append(f"live run:  yes ({describe(s['live_run'])})")
    if s.get("sharing_budget") is not None:
        lines.append(f"sharing the account's budget now: {len(s['sharing_budget'])} processes ("
                     + ", ".join(f"{p.get('host')}:{p.get('pid')}" for p in s["sharing_budget"]) + ")")
    if s.get("live_run"):
        lines.append(f"outcome:   {s['outcome']} (not finished yet; status exits {int(ExitCode.LOCKED)} while it is)")
    else:
        reason = f": {s['reason']}" if s.get("reason") else ""
        lines.append(f"outcome:   {s['outcome']} (exit {s['exit_code']}){reason}")
    progress = (f"{s['succeeded']} succeeded, {s['failed']} failed, {s['rejected_lines']} rejected lines; "
                f"in flight (task recorded, not finished): {s['in_flight_total']}")
    if s.get("items") is not None:
        progress += f"; not started: {s['queued']} of {s['items']} (item, analysis) results"
    lines.append(progress)
    spend = s["spend"]
    cap = f" of cap {spend['cap']:g}" if spend.get("cap") is not None else ""
    lines.append(f"spend:     settled {spend['settled']:.4f}, reserved {spend['reserved']:.4f}{cap} "
                 f"{spend['currency']} (estimated cost so far {s['estimated_cost']:.4f})")
    if s.get("catalog"):
        c = s["catalog"]
        lines.append(f"catalog:   the last run that read it all (session {c.get('session')}): new {c.get('new', 0)}, "
                     f"changed {c.get('changed', 0)}, unchanged {c.get('unchanged', 0)}, "
                     f"vanished {c.get('vanished', 0)}"
                     f"{'' if c.get('decided_vanished') else ' (vanished not decided: --append or stopped)'}")
    if s.get("possible_double_billing"):
        lines.append(f"possible double billing: {s['possible_double_billing']} creates were sent again after an answer "
                     "that never came")
    for name in CAPABILITIES:
        c = s["capabilities"].get(name)
        if not c:
            continue
        failed = ", ".join(f"{k} {v}" for k, v in sorted(c["failed_by_code"].items()))
        usage = ", ".join(f"{k}={v:g}" for k, v in sorted(c["usage"].items()))
        lines.append(f"  {name:<20} ok {c['succeeded']:>7}  failed {c['failed']:>5}"
                     f"{' (' + failed + ')' if failed else ''}  in flight {c.get('in_flight', 0)}"
                     f"{'  usage ' + usage if usage else ''}")
    return "\n".join(lines)
