"""The run history and time series in the state dir: one row per session, a killed session
recorded as interrupted at the next start, bounded by folding (never dropping) old sessions, and
samples merged in pairs past their bound."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from support import FakeClock

from pipeline.config.load import Config
from pipeline.engine.recording import Recorder, session_counts
from pipeline.observe.report import RunStats
from pipeline.state.checkpoint import Checkpoint, Sample, SessionCounts
from pipeline.state.history import INTERRUPTED, RUNNING, HistoryStore
from pipeline.state.series import SeriesStore, coarsen


def test_a_session_is_running_until_it_ends(ckpt: Checkpoint) -> None:
    """start_session writes a "running" row at once; end_session completes it with its outcome and counts."""
    ckpt.start_session(100.0)
    (row,), older = ckpt.history()
    assert (row.started, row.ended, row.outcome, row.exit_code, older) == (100.0, None, RUNNING, None, None)
    counts = SessionCounts(succeeded=3, failed=1, cost=0.5, requests=9, rate_limited=2,
                           by_capability={"audio_asr": {"succeeded": 3, "failed": 1}})
    ckpt.end_session(ended=160.0, outcome="completed with failures", exit_code=1, stop_reason=None, counts=counts)
    (row,), _ = ckpt.history()
    assert (row.ended, row.outcome, row.exit_code, row.counts) == (160.0, "completed with failures", 1, counts)


def test_a_killed_session_is_interrupted_at_the_next_start(tmp_path: Path) -> None:
    """A session that never recorded its end (its process killed) keeps its last progress and is
    recorded as interrupted by the next session's start; the new one is running."""
    first = Checkpoint.open(tmp_path)
    first.start_session(1.0)
    first.record_progress(Sample(0.0, 10.0, {"audio-asr": 4}), {}, SessionCounts(succeeded=2, requests=4))
    first._conn.close()  # as kill -9 leaves it: no end recorded
    second = Checkpoint.open(tmp_path)
    second.start_session(50.0)
    killed, now = second.history()[0]
    assert (killed.outcome, killed.ended, killed.exit_code) == (INTERRUPTED, None, None)
    assert (killed.counts.succeeded, killed.counts.requests) == (2, 4)
    assert now.outcome == RUNNING
    second.close()


def test_past_the_bound_old_sessions_are_folded_not_dropped(ckpt: Checkpoint) -> None:
    """With a bound of 3, five sessions leave the last three listed and the first two summed in
    the older row (count, first and last start, totals)."""
    store = HistoryStore(ckpt._conn, max_sessions=3)
    for n in range(5):
        session = store.start(float(n))
        store.end(session, ended=n + 0.5, outcome="completed", exit_code=0, stop_reason=None,
                  counts=SessionCounts(succeeded=10 * (n + 1), failed=n, cost=1.5, requests=7, rate_limited=1))
    store.start(5.0)  # the fold happens at a start
    listed = store.sessions()
    assert [s.started for s in listed] == [3.0, 4.0, 5.0]
    older = store.older()
    assert older is not None
    assert (older.count, older.first_started, older.last_started) == (3, 0.0, 2.0)
    assert (older.succeeded, older.failed, older.cost, older.requests, older.rate_limited) == (60, 3, 4.5, 21, 3)


def test_a_state_dir_from_before_the_history(tmp_path: Path) -> None:
    """A checkpoint without the history's tables reads as no history (read-only, nothing
    changed) and gets them, empty, at its next writable open."""
    Checkpoint.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / Checkpoint.DB_NAME)
    for table in ("sessions", "sessions_older", "series", "histograms"):
        conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    old = Checkpoint.open(tmp_path, read_only=True)
    assert old.history() == ([], None) and old.samples(1) == [] and old.histograms(1) == {}
    old.close()
    upgraded = Checkpoint.open(tmp_path)
    assert upgraded.history() == ([], None)
    assert upgraded.start_session(3.0) == 1
    upgraded.close()


@pytest.mark.parametrize(("spans", "expected"), [
    ([], []),
    ([10.0], [(0.0, 10.0)]),
    ([10.0, 10.0], [(0.0, 20.0)]),
    ([10.0, 10.0, 5.0], [(0.0, 20.0), (20.0, 5.0)]),
    ([10.0, 10.0, 10.0, 10.0], [(0.0, 20.0), (20.0, 20.0)]),
])
def test_coarsen_merges_neighbours_in_pairs(spans: list[float], expected: list[tuple[float, float]]) -> None:
    """Pairs become one sample spanning both; an odd last one stays as it is."""
    samples, t = [], 0.0
    for span in spans:
        samples.append(Sample(t, span))
        t += span
    assert [(s.t, s.span) for s in coarsen(samples)] == expected


def test_merging_keeps_counts_exact_and_the_in_flight_peak() -> None:
    """Counts add up per group and the in-flight gauge keeps the larger of the two."""
    a = Sample(0.0, 10.0, {"audio-asr": 5, "video-snapshot": 1}, {"audio-asr": 1}, results=3, in_flight=7)
    b = Sample(10.0, 10.0, {"audio-asr": 2}, {}, results=4, in_flight=2)
    assert a.merged(b) == Sample(0.0, 20.0, {"audio-asr": 7, "video-snapshot": 1}, {"audio-asr": 1}, 7, 7)


def test_a_long_session_keeps_a_bounded_series(ckpt: Checkpoint) -> None:
    """Past its bound a session's samples are merged in pairs: 5 samples with a bound of 4
    become 3, covering the same time, with every request still counted."""
    store = SeriesStore(ckpt._conn, max_samples=4)
    for n in range(5):
        store.add(1, Sample(n * 10.0, 10.0, {"g": n + 1}))
    kept = store.samples(1)
    assert [(s.t, s.span) for s in kept] == [(0.0, 20.0), (20.0, 20.0), (40.0, 10.0)]
    assert sum(s.requests["g"] for s in kept) == 15


def test_only_the_last_sessions_keep_their_series(ckpt: Checkpoint) -> None:
    """Starting session N drops the series and histograms of sessions older than the last 20."""
    for _ in range(21):
        session = ckpt.start_session(0.0)
        ckpt.record_progress(Sample(0.0, 1.0, {"g": 1}), {"durations": ((1.0,), (1, 0))}, SessionCounts())
    ckpt.start_session(0.0)
    assert ckpt.samples(1) == [] and ckpt.samples(2) == [] and ckpt.histograms(2) == {}
    assert len(ckpt.samples(session)) == 1 and ckpt.histograms(session)


def test_the_recorder_samples_what_happened_since_its_last_sample(ckpt: Checkpoint) -> None:
    """Each sample holds the requests, 429s and result lines since the previous one, per QPS
    group, and the tasks in flight at its end; the session's row follows the counts."""
    stats, clock = RunStats(), FakeClock(0.0)
    recorder = Recorder(ckpt, stats, Config(time_scale=2.0), clock=clock, wall=lambda: 1000.0)
    assert recorder.step == 5.0
    session = recorder.start()
    stats.caps["audio_asr"].requests, stats.caps["audio_asr"].rate_limited = 6, 1
    stats.caps["audio_asr"].succeeded, stats.caps["audio_asr"].in_flight = 2, 4
    clock.now = 5.0
    recorder.flush()
    stats.caps["audio_asr"].requests += 3
    stats.caps["object_detection"].requests, stats.caps["object_detection"].failed = 2, 2
    stats.caps["audio_asr"].in_flight = 1
    clock.now = 7.5
    recorder.flush()
    recorder.flush()  # no time passed: nothing recorded
    assert ckpt.samples(session) == [
        Sample(0.0, 5.0, {"audio-asr": 6}, {"audio-asr": 1}, results=2, in_flight=4),
        Sample(5.0, 2.5, {"audio-asr": 3, "image-object-detection": 2}, {}, results=2, in_flight=1)]
    (row,), _ = ckpt.history()
    assert (row.counts.succeeded, row.counts.failed, row.counts.requests, row.counts.rate_limited) == (2, 2, 11, 1)


def test_session_counts_cost_each_capability_by_the_price_table() -> None:
    """A session's cost is its successes priced as the summary prices them, per capability."""
    stats = RunStats()
    caps = stats.caps
    caps["object_detection"].succeeded = 4
    caps["object_detection"].successes_by_service["ops-object-detect-001"] = 4
    caps["object_detection"].usage["ops-object-detect-001"]["image"] = 4
    counts = session_counts(caps, {"ops-object-detect-001": {"image": 0.25}})
    assert counts.cost == pytest.approx(1.0) and counts.by_capability["object_detection"]["cost"] == pytest.approx(1.0)
    assert list(counts.by_capability) == ["object_detection"]
