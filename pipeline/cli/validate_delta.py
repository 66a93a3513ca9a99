"""`validate SOURCE --state-dir DIR`: what a run of SOURCE would do against a run's state, sending
nothing: how many (item, analysis) units are new, changed, unchanged and vanished (the same
fingerprints and decisions as `run`: `core.fingerprint`, `engine.delta`), and what the new and
changed ones will likely cost, and at most. Without a state dir every unit is new.

The checkpoint is opened read-only; the keys read are noted in a temporary table of that
connection (on disk: memory stays flat), so the vanished count is one query. `--force` is not
modelled: the delta is what a plain run would send. Vanished follows a run's rules
(`engine.vanishing`): none for a read with no items, and none outside the patterns given.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from ..config.load import Config
from ..config.pricing import estimate_manifest_cost
from ..core.job import Job
from ..engine.delta import CATALOG_KINDS, Delta, decide
from ..engine.item_source import ItemSource, Listing
from ..engine.touched import confirmed, fingerprinted, suspects
from ..engine.vanishing import admitted, vanish_rule
from ..manifest.reader import Rejected, Skipped
from ..state.checkpoint import Checkpoint, JobState, UploadRecord

__all__ = ["BATCH", "delta_report"]

#: Units looked up in one query.
BATCH = 500


def delta_report(location: str, config: Config, *, analyses: Sequence[str] | None = None,
                 listing: Listing | None = None, state_dir: Path | None = None) -> dict[str, Any]:
    """The delta of `location` against `state_dir` (see the module docstring)."""
    ckpt = Checkpoint.open(state_dir, read_only=True) if state_dir is not None else None
    try:
        if ckpt is not None:  # its fingerprints: kept only since the catalog's columns
            ckpt.require_today()
        return anyio.run(_report, location, config, analyses, listing or Listing(), ckpt)
    finally:
        if ckpt is not None:
            ckpt.close()


async def _report(location: str, config: Config, analyses: Sequence[str] | None, listing: Listing,
                  ckpt: Checkpoint | None) -> dict[str, Any]:
    source = ItemSource(location, config, analyses=analyses, listing=listing)
    await source.open()
    counts: Counter[str] = Counter()
    to_send: Counter[str] = Counter()  # service id -> units a run would send
    polling: Counter[str] = Counter()  # service id -> recorded tasks a run would poll (already sent)
    rejected = unidentified = 0
    batch: list[Job] = []
    if ckpt is not None:
        ckpt.catalog.begin_preview()

    def record_of(item_id: str) -> UploadRecord | None:
        assert ckpt is not None
        try:
            return ckpt.upload_record(item_id)
        except sqlite3.OperationalError:  # read-only, a state dir from before upload stamps: none on record
            return None

    def flush() -> None:
        # A touched file with its recorded digest is unchanged, as a run finds it.
        jobs = fingerprinted(batch, confirmed(suspects(batch, record_of)) if ckpt is not None else {})
        known = ckpt.catalog.lookup([job.key for job in jobs]) if ckpt is not None else {}
        for job in jobs:
            assert job.fingerprint is not None
            verdict = decide(known.get(job.key), job.fingerprint)
            counts[verdict.counted] += 1
            if verdict.delta is Delta.RESUME and known[job.key].state is JobState.SUBMITTED:
                polling[job.service_id] += 1  # its task was accepted: a run polls it, sends nothing
            elif verdict.delta is not Delta.UNCHANGED:
                to_send[job.service_id] += 1
        if ckpt is not None:
            ckpt.catalog.note_seen(job.key for job in jobs)
        batch.clear()

    async for item in source.items():
        if isinstance(item, Rejected):
            rejected += 1
            if item.id is None:
                unidentified += 1
            elif ckpt is not None:  # there, only refused: a run keeps its keys live
                ckpt.catalog.note_seen_items([item.id])
            continue
        assert not isinstance(item, Skipped)  # no shard filter given
        if len(batch) >= BATCH and (batch[-1].line, batch[-1].id) != (item.line, item.id):
            flush()
        batch.append(item)
    flush()
    rule = vanish_rule(complete=True, whole_catalog=True, items=sum(counts.values()), unidentified=unidentified,
                       unreadable=source.counts is not None and bool(source.counts.unreadable))
    counts["vanished"] = ckpt.catalog.count_unseen(admitted(source.globs)) if ckpt is not None and rule.decides else 0
    cost = estimate_manifest_cost(to_send, config)
    report: dict[str, Any] = {kind: counts.get(kind, 0) for kind in CATALOG_KINDS}
    report.update(rejected_lines=rejected, to_send=sum(to_send.values()), to_poll=sum(polling.values()),
                  estimated_cost=cost.likely,
                  estimated_cost_bound=cost.bound, currency=config.currency)
    listed = source.summary()
    if listed is not None:
        report["listing"] = dict(listed)
    return report


def format_delta(report: dict[str, Any]) -> str:
    """The delta as text, for a terminal."""
    lines = [f"against the state: new {report['new']}, changed {report['changed']}, unchanged {report['unchanged']}, "
             f"vanished {report['vanished']} (item, analysis) results; {report['rejected_lines']} rejected",
             f"a run would send {report['to_send']} (and poll {report.get('to_poll', 0)} tasks already sent): "
             f"about {report['estimated_cost']:.4f} {report['currency']}, "
             f"at most {report['estimated_cost_bound']:.4f} {report['currency']}"]
    listed = report.get("listing")
    if listed:
        lines.append(f"listing: {listed['listed']} listed, {listed['items']} items, {listed['excluded']} excluded by "
                     f"patterns, {listed['skipped_no_analyses']} with no analyses for their kind")
        for pattern in listed["unmatched_patterns"]:
            lines.append(f"  warning: pattern {pattern!r} matched nothing")
    return "\n".join(lines)
