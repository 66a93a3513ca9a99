"""The HTML report's plain data: time series downsampling, histograms, and how an exit code reads."""

from __future__ import annotations

import math

import pytest

from pipeline.core.exit_codes import ExitCode
from pipeline.core.outcome import NO_ITEMS
from pipeline.observe.downsample import downsample
from pipeline.observe.report_data import CapabilityRow, Histogram, Outcome, Session


def steps(n: int, step: float = 10.0, value=float) -> list[tuple[float, float]]:
    return [(i * step, value(i)) for i in range(n)]


@pytest.mark.parametrize(("points", "max_points", "reduce", "expected"), [
    ([], 5, "mean", ()),  # nothing recorded: nothing to draw
    ([(0.0, 1.0), (10.0, 2.0)], 5, "mean", ((0.0, 1.0), (10.0, 2.0))),  # small enough: as it is
    (steps(4), 2, "mean", ((5.0, 0.5), (25.0, 2.5))),  # pairs merged at their mean time and value
    (steps(4), 2, "max", ((5.0, 1.0), (25.0, 3.0))),
    (steps(5), 2, "mean", ((5.0, 0.5), (30.0, 3.0))),  # the last point joins the last bucket
    (steps(10), 1, "mean", ((45.0, 4.5),)),
    # A pause between sessions stays a gap: the empty buckets between are not filled in.
    ([(0.0, 1.0), (10.0, 1.0), (20.0, 1.0), (980.0, 5.0), (990.0, 5.0), (1000.0, 5.0)], 4, "mean",
     ((10.0, 1.0), (990.0, 5.0))),
    # Values that are not numbers are left out rather than poisoning a bucket's mean.
    ([(0.0, 1.0), (10.0, math.nan), (20.0, 3.0)], 5, "mean", ((0.0, 1.0), (20.0, 3.0))),
    ([(5.0, 1.0), (5.0, 3.0), (5.0, 5.0)], 2, "mean", ((5.0, 3.0),)),  # no time span: one bucket
])
def test_downsample_cases(points, max_points, reduce, expected):
    """Each series is merged into buckets of equal duration exactly as the table says."""
    assert downsample(points, max_points, reduce) == expected


def test_a_ten_hour_run_stays_bounded_and_keeps_its_average_and_peak():
    """3,600 ten-second points come down to the bound; the mean keeps the run's average rate,
    the max keeps a one-sample spike that the mean would flatten."""
    rates = steps(3600, value=lambda i: 9.5 if i != 1234 else 40.0)
    mean, peak = downsample(rates, 240, "mean"), downsample(rates, 240, "max")
    assert len(mean) <= 240 and len(peak) <= 240
    assert sum(v for _, v in mean) / len(mean) == pytest.approx(sum(v for _, v in rates) / len(rates), rel=1e-3)
    assert max(v for _, v in peak) == 40.0
    assert max(v for _, v in mean) < 40.0 / 2
    assert [t for t, _ in mean] == sorted(t for t, _ in mean)


@pytest.mark.parametrize(("points", "max_points"), [
    ([(10.0, 1.0), (0.0, 1.0)], 1),  # out of time order
    ([(0.0, 1.0)], 0),
])
def test_downsample_refuses(points, max_points):
    """A series out of time order, or a bound below one point, is a caller's bug: refused."""
    with pytest.raises(ValueError, match=r"time order|at least 1"):
        downsample(points, max_points)


@pytest.mark.parametrize(("exit_code", "tone", "advice"), [
    (0, "ok", ExitCode.OK.advice),
    (1, "warn", ExitCode.PARTIAL.advice),
    (3, "warn", ExitCode.INTERRUPTED.advice),
    (4, "bad", ExitCode.AUTH.advice),
    (5, "bad", ExitCode.THRESHOLD.advice),
    (6, "bad", ExitCode.SPEND_CAP.advice),
    (None, "live", "the run is still going: this is a snapshot; open the report again when it has ended"),
    (42, "bad", "exit code 42 is not in this version's table"),
])
def test_outcome_reads_the_exit_code_table(exit_code, tone, advice):
    """The outcome's colour and its "what to do next" come from the exit-code table."""
    outcome = Outcome(exit_code, "words")
    assert (outcome.tone, outcome.advice) == (tone, advice)


def test_histogram_of_samples_counts_each_in_its_bucket():
    """A sample on a bound counts in that bound's bucket; one above the last goes in the added inf bucket."""
    h = Histogram.of([0.5, 1.0, 1.5, 30.0, 99.0], [1.0, 10.0])
    assert h.bounds == (1.0, 10.0, math.inf)
    assert h.counts == (2, 1, 2)
    assert h.total == 5


@pytest.mark.parametrize(("bounds", "counts", "message"), [
    ((1.0, 2.0), (1,), "one count per bound"),
    ((2.0, 1.0), (1, 1), "must increase"),
    ((1.0,), (-1,), "negative"),
])
def test_histogram_refuses_inconsistent_buckets(bounds, counts, message):
    """Buckets that cannot be drawn are refused where they are made, not when the report is drawn."""
    with pytest.raises(ValueError, match=message):
        Histogram(bounds, counts)


@pytest.mark.parametrize(("row", "ratio"), [
    (CapabilityRow("image_analyze", request_rate=9.0, limit=10.0), 0.9),
    (CapabilityRow("image_analyze", request_rate=None, limit=10.0), None),  # too short to say
    (CapabilityRow("image_analyze", request_rate=3.0, limit=None), None),
])
def test_rate_against_limit(row, ratio):
    """rate ÷ limit only when both are known."""
    assert row.rate_vs_limit == (pytest.approx(ratio) if ratio is not None else None)


def test_a_killed_session_has_no_duration():
    """A session that never recorded its end has no duration rather than a made-up one."""
    assert Session(started=100.0, ended=None, outcome="interrupted", exit_code=None).duration_s is None
    assert Session(started=100.0, ended=160.0, outcome="completed", exit_code=0).duration_s == 60.0


def test_exit_1_for_an_empty_catalog_says_so_and_not_to_look_at_failures() -> None:
    """A run of a catalog with no items ends with exit 1 and nothing failed: the report's
    outcome says the catalog held no items and what to give it, not "look at the failures"."""
    empty = Outcome(int(ExitCode.PARTIAL), "completed with failures", NO_ITEMS)
    assert "held no items" in empty.meaning and "failures" not in empty.advice and "validate" in empty.advice
    failed = Outcome(int(ExitCode.PARTIAL), "completed with failures", None)
    assert failed.meaning == ExitCode.PARTIAL.meaning and failed.advice == ExitCode.PARTIAL.advice
