"""Counting values into fixed buckets as a run goes: task durations and detection lag, for the
report's histograms. Fixed bounds keep it O(buckets) however long the run, and two sessions'
counts add up bucket by bucket.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

__all__ = ["DURATION_BOUNDS", "LAG_BOUNDS", "Distribution"]

#: Upper bounds (seconds) of the buckets of task durations, submit to result line.
DURATION_BOUNDS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
#: Upper bounds (seconds) of the buckets of detection lag: how long a task's end may have gone
#: unnoticed (from the last poll that saw it PENDING to the one that saw it end).
LAG_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class Distribution:
    """Counts of values per bucket: `counts[i]` fell in (`bounds[i-1]`, `bounds[i]`]; the last
    count is for values above the last bound. Values that are not finite numbers are ignored."""

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("a distribution's bounds must increase")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)

    def add(self, value: float) -> None:
        if math.isfinite(value):
            self._counts[bisect.bisect_left(self.bounds, value)] += 1

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(self._counts)

    @property
    def total(self) -> int:
        return sum(self._counts)
