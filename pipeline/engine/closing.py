"""How a session ends: what it records for `status` and later sessions (the manifest's counts,
the failure window, how it stopped), what -v says each stage decided, and the run's outcome,
exit code and summary (whole-run figures from the checkpoint, traffic from this session).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.load import Config
from ..core.capabilities import CAPABILITIES
from ..core.echo import clipped, shown
from ..core.exit_codes import ExitCode
from ..core.outcome import NO_ITEMS, RunOutcome, Stop, StopReason, decide
from ..core.results import RunFiles
from ..observe.report import RunStats, stats_from_totals, summarize, with_live_counters
from ..state.checkpoint import Checkpoint, MetaKey
from ..state.resume import manifest_key
from .delta import CATALOG_KINDS
from .item_source import ItemSource
from .poller import Poller
from .reader import Reader
from .spend import SpendLedger
from .vanishing import admitted, vanish_rule

__all__ = ["RunResult", "close_catalog", "log_stages", "moot", "result_of", "save_manifest_counts"]

log = logging.getLogger("pipeline.run")


@dataclass
class RunResult:
    """How a run ended: its exit code and outcome, the stop if any, the summary written."""

    exit_code: ExitCode
    outcome: RunOutcome
    stop: Stop | None
    summary: dict[str, Any]
    stats: RunStats = field(repr=False)
    #: Where the HTML report was written at the end (the API's `report=`), None when it was not.
    report: Path | None = None

    @property
    def reason(self) -> str | None:
        return str(self.stop) if self.stop is not None else None


def save_manifest_counts(ckpt: Checkpoint, manifest: str, reader: Reader, *, joined: bool,
                         listed: bool = False) -> None:
    """What `status` and later sessions need to know of this manifest: its rejected lines (they
    count in the whole run's outcome) and its number of items. A `listed` source (a directory, an
    OSS prefix) read to its end is never "empty" (exit 1): a folder or a prefix with nothing to
    process tonight, or patterns that matched nothing, is a catalog with zero items (warned about)."""
    ckpt.save_manifest_counts(manifest_key(manifest), rejected=reader.rejected,
                              items=reader.items if reader.complete else None,
                              shared=reader.known if joined else None)
    if reader.complete:
        ckpt.set_empty(manifest_key(manifest), not listed and not reader.any_items and not reader.rejected)


def close_catalog(ckpt: Checkpoint, reader: Reader, source: ItemSource, *, session: int,
                  decides_vanished: bool, read: int | None = None) -> dict[str, Any]:
    """Tonight's delta, for the summary's ``catalog``: the units the reader found new, changed and
    unchanged, and, when this session read its whole catalog and may decide it (not `--append`,
    not stopped: `decides_vanished`), the live keys it no longer holds, marked vanished now, by
    the rules of `vanishing` (a listing missing a subtree, a read with no items or with a line
    of no readable id decides nothing; keys outside the run's patterns, and items of rejected
    lines, stay live). `read`: the pass this session's read continued (a part skipped as
    unchanged was found by it)."""
    counts = {kind: reader.catalog.get(kind, 0) for kind in CATALOG_KINDS}
    counts["unchanged"] += reader.skipped_units  # the part skipped, unread: unchanged by its digest
    rule = vanish_rule(complete=reader.complete, whole_catalog=decides_vanished,
                       unreadable=source.counts is not None and bool(source.counts.unreadable),
                       items=reader.items, unidentified=reader.unidentified)
    if rule.decides:
        counts["vanished"] = ckpt.catalog.vanish(session, read, admitted(source.globs))
        ckpt.retire_joined_manifests(manifest_key(source.location))  # `status` counts the catalog's units only
        if counts["vanished"]:
            log.info("%d (item, analysis) results vanished from the catalog: out of the current view from now on",
                     counts["vanished"])
    elif rule.why:
        log.warning("%s", rule.why)
    result: dict[str, Any] = {**counts, "decided_vanished": rule.decides, "session": session}
    if reader.rejected and rule.decides:
        log.warning("%d line(s) rejected: their items keep their last results (not vanished); see the rejects file",
                    reader.rejected)
    listing = source.summary()
    if listing is not None:
        result["listing"] = dict(listing)
        for pattern in listing["unmatched_patterns"]:
            log.warning("--include/--exclude pattern %s matched nothing in %s: check it for a typo", shown(pattern),
                        clipped(source.location))
        if listing["complete"] and not listing["items"]:
            log.warning("%s: the listing yielded no items (%d listed, %d excluded by patterns, %d with no analyses "
                        "for their media kind): nothing to process, exit 0", source.location, listing["listed"],
                        listing["excluded"], listing["skipped_no_analyses"])
    if reader.complete:
        ckpt.catalog.save_counts(result)
    return result


def moot(stop: Stop | None, reader: Reader, stats: RunStats) -> bool:
    """A stop that came when nothing was left to do (a time limit shorter than a resume of a
    finished run, a signal as the last line was written) stopped nothing: the outcome is the
    work's. Every unit read ended this session as skipped or as a line, and the reader read all."""
    if stop is None or not reader.complete:
        return False
    ended = sum(s.succeeded + s.failed + s.skipped for s in stats.caps.values())
    # Units read again from a skipped part (keys read before with work left) are work of this
    # session too: a cap that stopped them is no moot stop (it ended 0 of 0 "read" before).
    if ended != stats.units_read + reader.reread_units:
        return False
    log.info("%s came after the last item had ended: nothing was left to stop", stop.reason.value)
    return True


def log_stages(reader: Reader, stats: RunStats, pollers: Mapping[str, Poller]) -> None:
    """-v: what each stage decided this session."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    routed = ", ".join(f"{n} {what}" for what, n in reader.routed.items()) or "nothing"
    log.debug("reader: %s the manifest; (item, analysis) results: %s; %d lines rejected",
              "read all of" if reader.complete else "stopped part-way through", routed, reader.rejected)
    for name, cap_stats in stats.caps.items():
        waits = [f"{cap_stats.paced[lane]} {lane}s waited {cap_stats.paced_s[lane]:.1f} s in all"
                 for lane in ("submit", "poll") if cap_stats.paced[lane]]
        if waits:
            log.debug("pacer %s: %s", name, "; ".join(waits))
    for name, poller in pollers.items():
        if poller.polls:
            log.debug("poller %s: %d status checks, %d of them in spare pacer slots", name, poller.polls,
                      poller.spare_polls)


#: The checkpoint meta key of the run's count of possible double billings.
DOUBLE_BILLING = MetaKey.DOUBLE_BILLING.value


def result_of(stop: Stop | None, *, ckpt: Checkpoint, stats: RunStats, cfg: Config, files: RunFiles,
              ledger: SpendLedger, pollers: Mapping[str, Poller],
              catalog: Mapping[str, Any] | None = None) -> RunResult:
    """The outcome of the whole run, its exit code and summary (written next to the results);
    records how this session stopped."""
    stats.finished = stats.started + stats.elapsed()
    if stop is not None and stop.reason is StopReason.SPEND_CAP:  # the figures after the drain
        stop = Stop(StopReason.SPEND_CAP, ledger.stop_detail())
    rows = ckpt.totals()
    totals = stats_from_totals(*rows)
    failed = sum(c.failed for c in totals.values())
    rejected = ckpt.rejected_lines()
    empty = ckpt.catalog_empty()
    if empty and stop is None:
        log.warning("the manifest has no items (validate says the same): nothing was run, exit 1")
    outcome, code = decide(stop, failed=failed, rejected=rejected, empty=empty)
    ckpt.set_last_stop(stop.to_record() if stop else None)
    for name, poller in pollers.items():
        stats.caps[name].polls = poller.polls
    # Creates re-sent after an answer that never came, over every session of the run (kept in the
    # state dir: a later session's summary must not forget an earlier one's).
    double_billing = int(ckpt.get_meta(DOUBLE_BILLING) or 0) + stats.ambiguous
    ckpt.set_meta(DOUBLE_BILLING, str(double_billing))
    caps = with_live_counters(totals, stats.caps)
    qps = {name: cfg.limit_rps(name) for name in CAPABILITIES}
    summary = summarize(caps, prices=cfg.prices, elapsed=stats.elapsed(), qps=qps, rejected=rejected,
                        outcome=outcome.value, extra={
                            "exit_code": int(code),
                            "reason": str(stop) if stop else (NO_ITEMS if empty else None),
                            "results": str(files.results.resolve()), "state_dir": str(files.state_dir.resolve()),
                            "spend": ledger.report(rows), "possible_double_billing": double_billing,
                            **({"catalog": dict(catalog)} if catalog is not None else {})})
    files.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return RunResult(code, outcome, stop, summary, stats)
