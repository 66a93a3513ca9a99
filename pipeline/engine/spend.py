"""The spend cap: reserve before each submission, settle the real cost after, learn from it.

A cap checked after spending is overrun by whatever is in flight; so before each submission
the job's cost is reserved in the checkpoint, and a submission whose reservation would take
settled + reserved past the cap is not made. What is reserved is the larger of the pessimistic
estimate (`cost_bound`: the price table and `usage_estimates`) and the highest cost a
comparable analysis — same capability and service id — really settled at in this run: an
estimate that is too low stops mattering after the first such item. Until that first cost is
known for a service priced per unit (tokens, seconds), one of its analyses runs at a time, so a
wrong estimate cannot send a whole wave of submissions past the cap.

When the item's line is written, its reservation is replaced by the cost the service's usage
says (in the same transaction as the line's "done"). A settlement above its reservation is
warned about once per service id, naming the estimate to raise; if it takes settled + reserved
past the cap, the run stops at once (nothing more is sent; what is already accepted finishes,
and that is the bound that remains). When no reservation fits, a submission waits while work
of this session is in flight (its settlement may free room), so the cap lets work through up to
itself; it stops when nothing in flight can free room. Reservations of work never sent are
released when a session ends, and, after a kill -9, when the next one starts.

The ledger lives in the state dir, so it spans crashes and resumes.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio

from ..config.load import Config
from ..config.pricing import estimate_cost, item_cost, line_cost, unit_priced, usage_numbers
from ..core.echo import clipped, shown
from ..core.job import Job
from ..core.results import ItemStatus, ResultLine
from ..manifest.reader import read_manifest
from ..state.checkpoint import Checkpoint, MetaKey
from ..state.jobs import CountRow, JobState, UsageRow

__all__ = ["SpendLedger", "cap_origin", "overrun_advice", "settled_cost", "spend_report"]

log = logging.getLogger("pipeline.run")

Kind = tuple[str, str]  # (capability, service id): analyses that cost alike
#: The most characters of a config file's path a message quotes.
PATH_SHOWN = 240
#: Jobs the preview decides at a time (whole items: one checkpoint query each).
PREVIEW_BATCH = 500
#: How a waiting reservation waits (the run's `Stopping.interruptible`: a stop ends the wait).
Wait = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


def run_spend(ckpt: Checkpoint, prices: Mapping[str, Mapping[str, float]], *, current: bool = True) -> float:
    """What the whole run spent by the price table: its current lines (`current`), the lines a
    changed key superseded and the lines of vanished keys (billed too), and what creates a killed
    session may have sent."""
    spent = settled_cost(*ckpt.catalog.superseded_totals(), prices)
    spent += settled_cost(*ckpt.catalog.vanished_totals(), prices)  # out of the view, billed all the same
    spent += float(ckpt.get_meta(MetaKey.UNCONFIRMED_SPEND) or 0.0)
    return spent + (settled_cost(*ckpt.totals(), prices) if current else 0.0)


def settled_cost(counts: Sequence[CountRow], usage: Sequence[UsageRow],
                 prices: Mapping[str, Mapping[str, float]]) -> float:
    """What every done line of a run cost by the price table, from the checkpoint's grouped totals
    (`Checkpoint.totals`): O(groups), and the same whether or not a session ran under a cap (the
    `spend` table holds settlements of capped sessions only)."""
    successes: Counter[str] = Counter()
    for _cap, service_id, status, _code, n in counts:
        if status is ItemStatus.SUCCESS:
            successes[service_id] += n
    by_service: dict[str, dict[str, float]] = {}
    for _cap, service_id, unit, total in usage:
        units = by_service.setdefault(service_id, {})
        units[unit] = units.get(unit, 0.0) + total
    return estimate_cost(by_service, successes, prices)[0]


def cap_origin(config: Config) -> str:
    """The cap as the user gave it, with its currency: `--max-cost 0.5 CNY`, `PIPELINE_MAX_COST=0.5
    (CNY)`, or `max_cost 0.5 CNY in config file F`; `max_cost` when it came from code."""
    source, cap, currency = config.sources.get("max_cost"), config.max_cost, config.currency
    if source == "--max-cost":
        return f"--max-cost {cap:g} {currency}"
    if source is not None and source.startswith("PIPELINE_"):
        return f"{source}={cap:g} ({currency})"
    return f"max_cost {cap:g} {currency}" + (f" in config file {clipped(source, PATH_SHOWN)}" if source else "")


def overrun_advice(line: ResultLine, cost: float, reserved: float, config: Config) -> str:
    """What to say when `line` settled at `cost`, above the `reserved` held for it: which
    `usage_estimates` entry was too low, by the unit that went furthest over its guess."""
    sid = line.service_id
    prices = config.prices.get(sid) or {}
    estimates = config.usage_estimates.get(sid) or {}
    usage = usage_numbers(line.usage)
    over = [(price * (usage.get(unit, 0.0) - estimates.get(unit, 0.0)), unit) for unit, price in prices.items()
            if unit != "request" and price]
    unit = max(over)[1] if over else None
    which = (f"usage_estimates.{clipped(sid)}.{clipped(unit)} ({estimates.get(unit, 0.0):g} per item; this one "
             f"reported {usage.get(unit, 0.0):g})") if unit else f"prices.{clipped(sid)}"
    return (f"{shown(line.id)} ({clipped(line.analysis)}) cost {cost:.4f} {config.currency}, more than the "
            f"{reserved:.4f} reserved for it: {which} is too low; raise it. Further {clipped(sid)} submissions "
            f"reserve at least {cost:.4f}; analyses already sent may pass the cap by what they cost above their "
            "reservation")


class SpendLedger:
    """Reservations and settlements of one run, kept in its checkpoint; the policy of the cap."""

    def __init__(self, checkpoint: Checkpoint, config: Config, cost_bound: Callable[[str, Config], float]) -> None:
        self._ckpt = checkpoint
        self._cfg = config
        self._bound = cost_bound  # (service id, config) -> pessimistic cost of one submission
        self._learned: dict[Kind, float] = {}  # the highest cost settled so far, per kind priced per unit
        self._live: dict[str, tuple[Kind, float]] = {}  # this session's reservations: key -> (kind, amount)
        self._live_kinds: Counter[Kind] = Counter()
        self._changed = anyio.Event()  # set (and replaced) on every settlement: room may have come
        self._warned: set[str] = set()  # service ids warned about (overrun, unpriced)
        # What every done line cost (`settled_cost`), read at the start, then kept as a running
        # total of this session's settlements; None until read.
        self._settled: float | None = None
        self._settled_at_start: float | None = None  # what earlier sessions spent (under a cap)

    # ---- a session's start and end -----------------------------------------------------
    def start(self) -> None:
        """Clear what an earlier session left (see `clear_stale`), counting first what a killed
        one may have sent (`_count_possibly_sent`); under a cap, learn what comparable analyses
        cost in earlier sessions."""
        self._count_possibly_sent()
        self.clear_stale()
        if self._cfg.max_cost is not None:
            self._learned = self._ckpt.highest_costs(self._cfg.prices)
            self._settled = None  # read again: the resume may have marked lines done
            self._settled_at_start = self.settled()

    def settled(self) -> float:
        """What the run's done lines cost, every session's, capped or not, plus what creates a
        killed session may have sent cost (the cap compares this)."""
        if self._settled is None:
            self._settled = run_spend(self._ckpt, self._cfg.prices)
        return self._settled

    def _ckpt_extra(self) -> float:
        """What the run spent beyond its current lines (`run_spend`)."""
        return run_spend(self._ckpt, self._cfg.prices, current=False)

    def unconfirmed(self) -> float:
        """Reserved for creates that sessions killed mid-send may have sent (`_count_possibly_sent`)."""
        return float(self._ckpt.get_meta(MetaKey.UNCONFIRMED_SPEND) or 0.0)

    def _count_possibly_sent(self) -> None:
        """A reservation left by a killed session for a key with no recorded task: its create was
        reserved, then waited for the pacer or was on the wire when the process died. The service
        may have accepted (and billed) it, and this session sends it again. Each counts as a
        possible double billing, and what it reserved as spent, for good: the cap then holds for
        what the service may really bill (at most the submit workers' worth per kill). Releasing
        them instead let a resume pass the cap (37 tasks billed under a cap of 30, 0 counted)."""
        sent = [reserved for _key, state, _sid, _status, _usage, reserved in self._ckpt.stale_reservations()
                if state != JobState.DONE and reserved > 0]
        if not sent:
            return
        self._ckpt.set_meta(MetaKey.UNCONFIRMED_SPEND, repr(self.unconfirmed() + sum(sent)))
        doubles = int(self._ckpt.get_meta(MetaKey.DOUBLE_BILLING) or 0) + len(sent)
        self._ckpt.set_meta(MetaKey.DOUBLE_BILLING, str(doubles))
        log.warning("%d submissions of the last session may have reached the service before it was killed: "
                    "they are sent again, may be billed twice, and their %.4f %s counts as spent",
                    len(sent), sum(sent), self._cfg.currency)

    def clear_stale(self) -> None:
        """Reservations no accepted task stands behind: a line already done is settled at its cost
        (written just before a kill -9, recovered at the next start), the rest are released (never
        sent, or sent and not accepted: the next session reserves again before sending)."""
        stale = self._ckpt.stale_reservations()
        if not stale:
            return
        settle: list[tuple[str, float]] = []
        release: list[str] = []
        for key, state, service_id, status, usage, _reserved in stale:
            if state == "done" and service_id is not None:
                good = status == ItemStatus.SUCCESS.value
                cost, _ = estimate_cost({service_id: usage_numbers(json.loads(usage) if usage else None)},
                                        {service_id: int(good)}, self._cfg.prices)
                settle.append((key, cost if good else 0.0))
            else:
                release.append(key)
        self._ckpt.clear_reservations(settle=settle, release=release)
        log.debug("spend ledger: %d reservations released, %d settled", len(release), len(settle))

    # ---- reserving -----------------------------------------------------------------------
    def amount(self, kind: Kind) -> float:
        """What one submission of `kind` reserves: the estimate's bound, or more if comparable
        analyses really cost more."""
        return max(self._bound(kind[1], self._cfg), self._learned.get(kind, 0.0))

    async def reserve(self, job: Job, wait: Wait) -> bool:
        """Reserve `job`'s cost; False when the cap leaves no room and nothing in flight can free
        any (do not submit: the cap is reached). While work in flight may free room, or while the
        first cost of a service priced per unit is not known yet, it waits (`wait` raises
        `Stopped` when the run stops). Without a cap nothing is reserved."""
        cap = self._cfg.max_cost
        if cap is None or job.key in self._live:  # submitted once more (a lost task): it keeps its own
            return True
        kind = (job.capability, job.service_id)
        self._warn_unpriced(job.service_id)
        while True:
            if not self._probing(kind):
                amount = self.amount(kind)
                if self._ckpt.reserve(job.key, amount, cap, settled=self.settled()):
                    self._hold(job.key, kind, amount)
                    return True
                if not self._live or self.settled() >= cap:
                    return False  # nothing in flight will free room
            await wait(self._changed.wait)

    def adopt(self, job: Job) -> None:
        """A task recorded by an earlier session is polled by this one: its reservation will be
        settled here, so submissions waiting for room may wait for it."""
        if self._cfg.max_cost is None or job.key in self._live:
            return
        kind = (job.capability, job.service_id)
        held = self._ckpt.reserved_of(job.key)
        if held <= 0:  # recorded by a session without a cap: accepted, so it will be billed; count it
            held = self.amount(kind)
            self._ckpt.reserve(job.key, held, None)
        self._hold(job.key, kind, held)

    def _probing(self, kind: Kind) -> bool:
        """One analysis of a kind whose cost is not known yet is in flight: wait for its cost."""
        return kind not in self._learned and self._live_kinds[kind] > 0 and unit_priced(kind[1], self._cfg.prices)

    def _hold(self, key: str, kind: Kind, amount: float) -> None:
        self._live[key] = (kind, amount)
        self._live_kinds[kind] += 1

    # ---- settling ------------------------------------------------------------------------
    def cost(self, line: ResultLine) -> float:
        """What `line` cost: the sink settles it in the same transaction as the line's "done".
        Learns from it, warns once per service id when it passed its reservation, and wakes
        submissions waiting for room (the sink writes the batch before any of them runs)."""
        cost = line_cost(line, self._cfg.prices)
        self._settled = self.settled() + cost  # read before the line is marked done: counted once
        kind = (line.capability, line.service_id)
        held = self._live.pop(line.key, None)
        if held is not None:
            self._live_kinds[held[0]] -= 1
        if line.status is ItemStatus.SUCCESS and unit_priced(line.service_id, self._cfg.prices):
            self._learned[kind] = max(cost, self._learned.get(kind, 0.0))
        if held is not None and 0 < held[1] < cost - 1e-9 and line.service_id not in self._warned:
            self._warned.add(line.service_id)
            log.warning("spend cap: %s", overrun_advice(line, cost, held[1], self._cfg))
        self._changed.set()
        self._changed = anyio.Event()
        return cost

    def over_cap(self) -> bool:
        """Settled + reserved is past the cap: a settlement came in above its reservation."""
        cap = self._cfg.max_cost
        return cap is not None and self.settled() + self._ckpt.spend()[1] > cap + 1e-9

    # ---- what the user is told -------------------------------------------------------------
    def stop_detail(self) -> str:
        """Why the run stopped at the cap, with the ledger's figures as they are now."""
        cap = self._cfg.max_cost or 0.0
        settled, reserved = self.settled(), self._ckpt.spend()[1]
        before = self._settled_at_start
        if before is not None and before > cap - 1e-9:  # the cap was lowered below what was spent
            over = f"; earlier sessions of this run had already spent {before:.4f}, at or past the cap"
        elif settled > cap + 1e-9:
            over = (f"; settled passes the cap by {settled - cap:.4f}: analyses already sent when it was reached "
                    "cost more than their reservations (see the warning about usage_estimates)")
        else:
            over = ""
        return (f"{cap_origin(self._cfg)} reached (settled {settled:.4f}, reserved "
                f"{reserved:.4f}){over}; submitted tasks were finished; raise the cap and run the same command "
                "to go on")

    def _warn_unpriced(self, service_id: str) -> None:
        if not self._cfg.prices.get(service_id) and service_id not in self._warned:
            self._warned.add(service_id)
            log.warning("%s is set, but %s has no price in the config: the cap cannot count its analyses, which are "
                        "sent like the others until the cap stops the run, and may be billed; give prices.%s a "
                        "price to count them", cap_origin(self._cfg), clipped(service_id), clipped(service_id))

    def preview(self, manifest: str, todo: Callable[[list[Job]], list[Job]],
                analyses: Sequence[str] | None = None) -> None:
        """With a cap: warn before anything is sent about analyses whose service has no price (the
        cap cannot count them), and, if the likely cost of the analyses still to do exceeds what
        the cap leaves, how many it will likely cover (the run goes on; the cap stops it).
        `todo(jobs)` says which of a batch of whole items' jobs the run will submit (new, changed
        or unfinished: a changed item already done is paid again); `analyses` is ``--analyses``."""
        cap = self._cfg.max_cost
        if cap is None or manifest == "-":  # stdin cannot be read twice
            return
        room = max(cap - self.settled() - self._ckpt.spend()[1], 0.0)
        unpriced: Counter[str] = Counter()
        left = covered = 0
        likely = 0.0
        smallest_bound: float | None = None  # what the cheapest analysis left reserves before it is sent
        batch: list[Job] = []

        def count(jobs: list[Job]) -> None:
            nonlocal left, covered, likely, smallest_bound
            for job in todo(jobs):
                bound = self.amount((job.capability, job.service_id))
                smallest_bound = bound if smallest_bound is None else min(smallest_bound, bound)
                if not self._cfg.prices.get(job.service_id):
                    unpriced[job.service_id] += 1
                cost = max(item_cost(job.service_id, self._cfg),
                           self._learned.get((job.capability, job.service_id), 0.0))
                if covered == left and likely + cost <= room:  # every one before it fitted too
                    covered += 1
                left += 1
                likely += cost

        for job in read_manifest(manifest, analyses=analyses, outputs=self._cfg.outputs,
                                 uploads=self._cfg.upload.enabled):  # streamed: counts and sums only
            if not isinstance(job, Job):
                continue
            if len(batch) >= PREVIEW_BATCH and (batch[-1].line, batch[-1].id) != (job.line, job.id):
                count(batch)
                batch = []
            batch.append(job)
        count(batch)
        for service_id, n in sorted(unpriced.items()):
            self._warned.add(service_id)
            log.warning("%s is set, but %d analyses left use %s, which has no price in the config: the cap cannot "
                        "count them; they are sent like the others until the cap stops the run, and may be billed; "
                        "give prices.%s a price to count them", cap_origin(self._cfg), n, clipped(service_id),
                        clipped(service_id))
        if covered and smallest_bound is not None and smallest_bound > room:  # "likely cover N" would mislead
            log.warning("%s leaves %.4f %s, and each of the %d analyses left reserves at least %.4f before it is sent "
                        "(the estimate's bound, as the cap counts it): none will be sent (exit 6); raise the cap, or "
                        "lower usage_estimates for the services priced per unit", cap_origin(self._cfg), room,
                        self._cfg.currency, left, smallest_bound)
        elif likely > room:
            log.warning("the %d analyses left will likely cost %.4f %s; %s leaves %.4f: it will likely cover about "
                        "%d of them, then stop (exit 6)", left, likely, self._cfg.currency, cap_origin(self._cfg),
                        room, covered)

    def report(self, totals: tuple[Sequence[CountRow], Sequence[UsageRow]] | None = None) -> dict[str, Any]:
        """The ledger as the summary shows it; `totals`: the checkpoint's (`Checkpoint.totals`)
        when the caller has them (settled is what every done line cost, capped or not)."""
        settled = settled_cost(*totals, self._cfg.prices) + self._ckpt_extra() if totals is not None \
            else self.settled()
        return spend_report(settled, self._ckpt.spend()[1], self._cfg)


def spend_report(settled: float, reserved: float, config: Config) -> dict[str, Any]:
    """The ledger as the summary and `status` show it."""
    return {"settled": round(settled, 6), "reserved": round(reserved, 6), "cap": config.max_cost,
            "currency": config.currency}
