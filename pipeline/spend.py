"""The spend cap: reserve a pessimistic cost before each submission, settle the real one after.

A cap checked after spending is overrun by whatever is in flight; so before each submission
the job's pessimistic cost (`cost_bound`, from the price table and the per-capability usage
estimates) is reserved in the checkpoint, and a submission whose reservation would take
settled + reserved past the cap is not made. When the item's line is written, its reservation
is replaced by the cost the service's usage says (in the same transaction as the line's
"done"). The ledger lives in the state dir, so it spans crashes and resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .checkpoint import Checkpoint
from .config import Config
from .job import Job
from .manifest import read_manifest
from .report import estimate_cost
from .results import ItemStatus, ResultLine
from .validate import item_cost

__all__ = ["SpendLedger", "line_cost", "spend_report"]

log = logging.getLogger("pipeline.run")


def line_cost(line: ResultLine, prices: Mapping[str, Mapping[str, float]]) -> float:
    """What a finished item cost by the price table: tasks are billed on success only."""
    if line.status is not ItemStatus.SUCCESS:
        return 0.0
    usage = {k: float(v) for k, v in (line.usage or {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    cost, _ = estimate_cost({line.service_id: usage}, {line.service_id: 1}, prices)
    return cost


class SpendLedger:
    """Reservations and settlements of one run, kept in its checkpoint."""

    def __init__(self, checkpoint: Checkpoint, config: Config, cost_bound: Callable[[str, Config], float]) -> None:
        self._ckpt = checkpoint
        self._cfg = config
        self._bound = cost_bound  # (service id, config) -> pessimistic cost of one submission

    def reserve(self, job: Job) -> bool:
        """Reserve `job`'s pessimistic cost; False when the cap leaves no room (do not submit).
        Without a cap nothing is reserved (only settled costs are kept)."""
        if self._cfg.max_cost is None:
            return True
        return self._ckpt.reserve(job.key, self._bound(job.service_id, self._cfg), self._cfg.max_cost)

    def preview(self, manifest: str, skip: Callable[[str], bool], analyses: Sequence[str] | None = None) -> None:
        """With a cap: if the likely cost of the analyses still to do exceeds what the cap leaves,
        say so and how many it will likely cover (the run goes on; the cap stops it). `skip(key)`
        says an (item, analysis) key is done (`Job.key`); `analyses` is the run's ``--analyses``."""
        cap = self._cfg.max_cost
        if cap is None or manifest == "-":  # stdin cannot be read twice
            return
        jobs = read_manifest(manifest, check_files=False, skip=skip, analyses=analyses, outputs=self._cfg.outputs)
        costs = [item_cost(job.service_id, self._cfg) for job in jobs if isinstance(job, Job) and not skip(job.key)]
        settled, reserved = self._ckpt.spend()
        room = max(cap - settled - reserved, 0.0)
        likely = sum(costs)
        if likely <= room:
            return
        covered, spent = 0, 0.0
        for cost in costs:
            if spent + cost > room:
                break
            spent, covered = spent + cost, covered + 1
        log.warning("the %d analyses left will likely cost %.4f %s; --max-cost %g leaves %.4f: it will likely "
                    "cover about %d of them, then stop (exit 6)", len(costs), likely, self._cfg.currency, cap,
                    room, covered)

    def cost(self, line: ResultLine) -> float:
        return line_cost(line, self._cfg.prices)

    def report(self) -> dict[str, Any]:
        return spend_report(*self._ckpt.spend(), self._cfg)


def spend_report(settled: float, reserved: float, config: Config) -> dict[str, Any]:
    """The ledger as the summary and `status` show it."""
    return {"settled": round(settled, 6), "reserved": round(reserved, 6), "cap": config.max_cost,
            "currency": config.currency}
