"""Work-conserving polling: which task a spare slot of the QPS budget goes to (pure, no I/O).

A status poll costs something only when a submit is waiting for the same slot. When a QPS
group's pacer has a slot nobody waits for (`SpareSlots.spare_at()`), the poller spends it on
the task most likely finished; when submits (or scheduled polls) wait, it spends none, and
the per-task schedule (`first_delay`, then geometric growth) is all there is.

Which task: the oldest-overdue one, at most once per `floor` seconds (counted from its submit
or its last answer), so no task is polled faster than the floor however idle the budget is.
Within one capability every task has the same expected duration, so whatever that estimate
is, the oldest task is the most overdue: no learned estimate changes the order. (One used to
hold spare polls back until a task reached the learned 85th percentile of its duration; it
made runs of long tasks slower and saved nothing where slots were contended.) Among tasks of
the same age, the one looked at longest ago goes first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["SpareSlots", "SpareStep", "Watched", "next_candidate_at", "pick_spare", "plan_spare"]

class SpareSlots(Protocol):
    """A QPS group's spare-slot signal (`pacing.memory.GroupPacer` provides it)."""

    interval: float  # seconds between two slots of the group's grid

    def spare_at(self) -> float | None:
        """None while a request waits for the group's budget; else when the next slot is free."""


class Watched(Protocol):
    """What the chooser reads of a task (`engine.work.TaskHandle` provides it)."""

    started: float  # the poller's clock at submit
    last_look: float  # the poller's clock when its last poll was sent (its submit before any)


@dataclass(frozen=True)
class SpareStep:
    """What the spare-slot loop does next: poll `task` now, or look again at `wake_at`."""

    task: Watched | None
    wake_at: float


def _ready_at(task: Watched, floor: float) -> float:
    return task.last_look + floor


def pick_spare(tasks: Iterable[Watched], now: float, *, floor: float) -> Watched | None:
    """The task a spare slot at `now` goes to, or None when no task may be polled yet."""
    best: Watched | None = None
    for task in tasks:
        if _ready_at(task, floor) > now:
            continue
        # Oldest first (smallest `started`); among equals, the one looked at longest ago.
        if best is None or (task.started, task.last_look) < (best.started, best.last_look):
            best = task
    return best


def next_candidate_at(tasks: Iterable[Watched], *, floor: float) -> float:
    """When the earliest task becomes a candidate (inf when there are none)."""
    return min((_ready_at(task, floor) for task in tasks), default=math.inf)


def plan_spare(now: float, spare_at: float | None, tasks: Iterable[Watched], *, floor: float,
               recheck: float) -> SpareStep:
    """One step of the spare-slot loop at `now`.

    `spare_at` is the group's signal: None while something waits for the budget (then look
    again `recheck` seconds later and poll nothing: submits keep their slots), a later time
    when the next free slot is still to come. Otherwise the oldest-overdue candidate is
    polled; with none, the loop sleeps until the first one is due (at most `floor`, since a
    task added meanwhile becomes a candidate `floor` after its submit at the earliest).
    """
    if spare_at is None:
        return SpareStep(None, now + recheck)
    if spare_at > now:
        return SpareStep(None, spare_at)
    listed = list(tasks)
    task = pick_spare(listed, now, floor=floor)
    if task is not None:
        return SpareStep(task, now)
    due = next_candidate_at(listed, floor=floor)
    return SpareStep(None, max(min(due, now + floor), now + recheck))
