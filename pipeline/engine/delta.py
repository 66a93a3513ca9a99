"""What a run does with each (item, analysis) it reads, against what the checkpoint holds. Pure.

`decide(known, fingerprint, forced=...)` gives a `Verdict`: where the key goes and how tonight's
catalog counts it (``new``, ``changed``, ``unchanged``; ``vanished`` is counted at the end of a
complete read, for the keys no read found):

| checkpoint row                          | goes                         | counted   |
|-----------------------------------------|------------------------------|-----------|
| none                                    | NEW: processed               | new       |
| done, same fingerprint                  | UNCHANGED: skipped, unsent   | unchanged |
| done, no fingerprint (an older version) | UNCHANGED; adopts this one   | unchanged |
| done, other fingerprint, or forced      | CHANGED: superseded, re-run  | changed   |
| vanished, same fingerprint              | UNCHANGED; restored          | unchanged |
| vanished, other fingerprint             | CHANGED                      | changed   |
| submitted / retry, same or none         | RESUME: as an unfinished key | see below |
| submitted / retry, other fingerprint    | CHANGED (old task abandoned) | changed   |

Unfinished work resumed is counted ``changed`` when it will replace a line (the row has one),
``new`` otherwise. `--force` never re-sends work in flight: that would pay twice for one result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from ..core.job import Job
from ..state.catalog import Known
from ..state.jobs import JobState
from .forcing import redone

__all__ = ["CATALOG_KINDS", "Delta", "Verdict", "decide", "to_send"]

#: The catalog counts of a run's summary, in order.
CATALOG_KINDS = ("new", "changed", "unchanged", "vanished")


class Delta(str, Enum):
    NEW = "new"  # never seen: process it
    CHANGED = "changed"  # its line is stale (or forced): supersede it, process again
    UNCHANGED = "unchanged"  # its line is current: skip, send nothing
    RESUME = "resume"  # unfinished work of the same fingerprint: poll or submit as a resume does


@dataclass(frozen=True, slots=True)
class Verdict:
    delta: Delta
    counted: str  # "new", "changed" or "unchanged"
    adopt: bool = False  # a row from before fingerprints takes this one
    restore: bool = False  # a vanished row is live again


def decide(known: Known | None, fingerprint: str, *, forced: bool = False) -> Verdict:
    """The verdict for a key read with `fingerprint` (see the module's table)."""
    if known is None:
        return Verdict(Delta.NEW, "new")
    same = known.fingerprint is None or known.fingerprint == fingerprint
    if known.state is JobState.DONE:
        if not same or forced:
            return Verdict(Delta.CHANGED, "changed")
        return Verdict(Delta.UNCHANGED, "unchanged", adopt=known.fingerprint is None,
                       restore=known.vanished is not None)
    if not same:
        return Verdict(Delta.CHANGED, "changed")
    return Verdict(Delta.RESUME, "changed" if known.line_at is not None else "new",
                   adopt=known.fingerprint is None, restore=known.vanished is not None)


def to_send(jobs: Sequence[Job], known: Mapping[str, Known], *, force: bool = False,
            force_analyses: frozenset[str] = frozenset(), forced_from: int | None = None) -> list[Job]:
    """Of fingerprinted jobs (whole items, parents before the analyses after them), those a run
    will submit: new, changed or forced (and the analyses after a forced one), and unfinished work
    with no task recorded. Skipped: unchanged keys, and recorded tasks (polled, their cost held)."""
    forced_items: set[tuple[str, str]] = set()
    out: list[Job] = []
    for job in jobs:
        assert job.fingerprint is not None
        row = known.get(job.key)
        forced = (force or job.analysis in force_analyses or (
            job.after is not None and (job.id, job.after) in forced_items)) and not redone(row, forced_from)
        verdict = decide(row, job.fingerprint, forced=forced)
        if forced and verdict.delta is Delta.CHANGED:
            forced_items.add((job.id, job.analysis))
        if verdict.delta is Delta.UNCHANGED or (
                verdict.delta is Delta.RESUME and row is not None and row.state is JobState.SUBMITTED):
            continue
        out.append(job)
    return out
