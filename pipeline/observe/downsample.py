"""Bounding a time series for a plot: a 10-hour run recorded every 10 s has 3,600 points per
series, more than a plot can show and more than a report file should carry.

`downsample` merges neighbouring points into at most `max_points` buckets of equal duration. A
bucket's point sits at the mean time of the points it holds, and its value is their mean (a rate
stays the rate over the bucket's span: what the run did on average) or their maximum (a peak
stays visible). Buckets without points stay empty: a pause between sessions remains a gap, never
a line drawn through values nobody measured.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

from .report_data import Point

__all__ = ["Reduce", "downsample"]

Reduce = Literal["mean", "max"]


def downsample(points: Sequence[Point], max_points: int, reduce: Reduce = "mean") -> tuple[Point, ...]:
    """At most `max_points` points summarising `points` (time ascending), as the module says;
    points with a value that is not a finite number are left out. A series already small enough
    comes back as it is."""
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, not {max_points}")
    finite = [(t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)]
    if any(b[0] < a[0] for a, b in itertools.pairwise(finite)):
        raise ValueError("a time series must be in time order")
    if len(finite) <= max_points:
        return tuple(finite)
    start, width = finite[0][0], (finite[-1][0] - finite[0][0]) / max_points
    out: list[Point] = []
    bucket: list[Point] = []
    index = 0
    for t, v in finite:
        # The last point lands exactly on the end: it belongs to the last bucket, not one more.
        i = min(int((t - start) / width), max_points - 1) if width > 0 else 0
        if bucket and i != index:
            out.append(_merge(bucket, reduce))
            bucket = []
        index = i
        bucket.append((t, v))
    out.append(_merge(bucket, reduce))
    return tuple(out)


def _merge(bucket: Sequence[Point], reduce: Reduce) -> Point:
    t = math.fsum(p[0] for p in bucket) / len(bucket)
    values = [p[1] for p in bucket]
    return (t, max(values) if reduce == "max" else math.fsum(values) / len(values))
