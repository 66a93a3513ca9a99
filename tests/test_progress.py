"""Progress figures: the manifest's line count stays what it is; the results expected are an
estimate (said so) until the reader has read everything, then exact."""

from __future__ import annotations

from collections import deque

from pipeline.observe.progress import Snapshot
from pipeline.observe.report import RunStats


def snapshot(stats: RunStats, total: int | None) -> dict[str, object]:
    return Snapshot(stats, {"image_analyze": 10.0}, total, deque()).as_dict()


def test_total_lines_is_the_manifests_and_expected_results_an_estimate_until_read():
    """total_lines never moves as analyses per item vary; expected_results scales it, flagged as an estimate."""
    stats = RunStats()
    stats.records_read, stats.units_read = 10, 10  # one analysis each so far
    first = snapshot(stats, 100)
    stats.records_read, stats.units_read = 20, 40  # then items with three analyses
    second = snapshot(stats, 100)
    assert first["total_lines"] == second["total_lines"] == 100
    assert (first["expected_results"], second["expected_results"]) == (100, 200)
    assert first["expected_is_estimate"] is second["expected_is_estimate"] is True


def test_expected_results_are_exact_once_the_reader_read_everything():
    """After the last line, the results to expect are the (item, analysis) units read, not a scaled guess."""
    stats = RunStats()
    stats.records_read, stats.units_read = 100, 137
    stats.read_complete = True
    snap = Snapshot(stats, {}, 100, deque())
    assert snap.as_dict()["expected_results"] == 137
    assert snap.as_dict()["expected_is_estimate"] is False
    assert "0/137 done" in snap.plain()


def test_an_estimate_is_marked_in_the_plain_line_and_an_unknown_total_left_out():
    """The plain progress line writes '/~N' for an estimate and nothing when the total is unknown (stdin)."""
    stats = RunStats()
    stats.records_read, stats.units_read = 1, 2
    assert "0/~20 done" in Snapshot(stats, {}, 10, deque()).plain()
    assert "progress: 0 done" in Snapshot(stats, {}, None, deque()).plain()
