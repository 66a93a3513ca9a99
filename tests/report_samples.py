"""Report data shaped like real runs, for the HTML report's tests, its size measurements and the
README's screenshot: a 300-item mixed run with a month of history, a 10-second run with none, a
10-hour run, and a live one. Deterministic (seeded): the same data every time.

The time series follow what the pipeline does: each QPS group paced near its limit while it has
work, a few 429s, video tasks in flight for minutes, results arriving as tasks finish.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import replace
from datetime import timezone

from pipeline.observe.report_data import (
    CapabilityRow,
    CatalogDelta,
    FailureExample,
    FailureGroup,
    Failures,
    GroupTraffic,
    Histogram,
    History,
    OlderSessions,
    Outcome,
    Point,
    ReportData,
    Session,
    TimeSeries,
)

#: A night's start: 2026-03-02 01:00 UTC.
NIGHT = 1_772_413_200.0
DAY = 86_400.0
#: capability, QPS group, limit (requests/s), price per item (CNY), share of the items
MIX = [
    ("image_analyze", "image-analyze", 10.0, 0.012, 0.30),
    ("object_detection", "image-object-detection", 20.0, 0.004, 0.25),
    ("video_segmentation", "video-segmentation", 5.0, 0.08, 0.10),
    ("video_snapshot", "video-snapshot", 5.0, 0.02, 0.10),
    ("video_summarization", "video-summarization", 5.0, 0.15, 0.10),
    ("audio_asr", "audio-asr", 5.0, 0.05, 0.15),
]
DURATION_BOUNDS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
LAG_BOUNDS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
#: An id, an error code and a message that would run as script if the report did not escape them.
HOSTILE_ID = "<script>document.title='pwned'</script>"
HOSTILE_CODE = "<img src=x onerror=alert(1)>"
HOSTILE_MESSAGE = "bad \"quote\" & <b>tag</b> </svg><script>alert(2)</script>"


def _traffic(rng: random.Random, seconds: float, step: float, limit: float, busy_until: float,
             ) -> tuple[tuple[Point, ...], tuple[Point, ...]]:
    """requests/s near 90 % of the limit while there is work, a trickle of polls after; 429s now and then."""
    requests, throttled = [], []
    for i in range(int(seconds // step) + 1):
        t = i * step
        busy = t <= busy_until
        rate = limit * (0.9 + rng.uniform(-0.08, 0.05)) if busy else limit * rng.uniform(0.05, 0.2)
        requests.append((t, round(rate, 3)))
        throttled.append((t, round(rng.choice((0.0,) * 12 + (0.1, 0.3)), 3)))
    return tuple(requests), tuple(throttled)


def _history(rng: random.Random, nights: int, items: int) -> History:
    sessions = []
    for n in range(nights):
        start = NIGHT - (nights - n) * DAY + rng.uniform(0, 120)
        failed = rng.choice((0, 0, 1, 2, 5, 13))
        killed = n == nights - 9  # one night the machine rebooted mid-run
        duration = items * rng.uniform(1.2, 1.6)
        sessions.append(Session(
            started=start, ended=None if killed else start + duration,
            outcome="interrupted" if killed else ("completed with failures" if failed else "completed"),
            exit_code=None if killed else (1 if failed else 0),
            succeeded=items - failed - (items // 3 if killed else 0), failed=failed,
            skipped=rng.choice((0, 0, items // 10)), cost=round(items * rng.uniform(0.035, 0.045), 4),
            requests=int(items * rng.uniform(3.5, 4.5)), rate_limited=rng.choice((0, 0, 3, 11)),
            catalog=CatalogDelta(new=rng.randint(0, 30), changed=rng.randint(0, 12),
                                 unchanged=items - 40, vanished=rng.randint(0, 5)) if n % 7 else None))
    return History(tuple(sessions))


def mixed_run(items: int = 300, seconds: float = 420.0, step: float = 10.0, nights: int = 30,
              seed: int = 23) -> ReportData:
    """A nightly 300-item mixed run (every capability), some failures, a month of history."""
    rng = random.Random(seed)
    rows, groups = [], []
    for name, group, limit, price, share in MIX:
        n = round(items * share)
        failed = {"image_analyze": 4, "video_summarization": 3, "audio_asr": 2}.get(name, 0)
        busy = seconds * (0.35 if limit >= 10 else 0.8)
        req, throttled = _traffic(rng, seconds, step, limit, busy)
        groups.append(GroupTraffic(group, limit, req, throttled))
        requests = int(sum(rate for _, rate in req) * step)  # the table agrees with the plot
        rows.append(CapabilityRow(name, succeeded=n - failed, failed=failed, skipped=2 if name == "audio_asr" else 0,
                                  requests=requests, rate_limited=int(sum(r for _, r in throttled) * step),
                                  request_rate=round(requests / seconds, 3), limit=limit,
                                  cost=round((n - failed) * price, 4)))
    ticks = [i * step for i in range(int(seconds // step) + 1)]
    in_flight = tuple((t, float(round(60 * math.sin(math.pi * t / seconds) ** 0.5 + rng.uniform(-4, 4))))
                      for t in ticks)
    results = tuple((t, round(items / seconds * (1.6 if t < seconds / 3 else 0.7) * rng.uniform(0.7, 1.3), 3))
                    for t in ticks)
    durations = Histogram.of([rng.lognormvariate(2.5, 1.1) for _ in range(items)], DURATION_BOUNDS)
    lag = Histogram.of([rng.expovariate(1 / 2.5) for _ in range(int(items * 0.7))], LAG_BOUNDS)
    failures = Failures(groups=(
        FailureGroup("TaskFailed", 5, by_capability={"video_summarization": 3, "audio_asr": 2}, examples=(
            FailureExample("ep-0042", "video_summarization", "the video has no audio track"),
            FailureExample("talk-0117", "audio_asr", "unsupported codec: opus in mkv"),
            FailureExample(HOSTILE_ID, "audio_asr", HOSTILE_MESSAGE))),
        FailureGroup("InvalidParameter", 3, by_capability={"image_analyze": 3}, retried=False, examples=(
            FailureExample("img-0007", "image_analyze", "file_type: 'gif' is not one of jpg, jpeg, png, bmp, tiff"),
            FailureExample("img-0211", "image_analyze", "url: the image could not be downloaded (404)"))),
        FailureGroup(HOSTILE_CODE, 1, by_capability={"image_analyze": 1}, examples=(
            FailureExample("img-0299", "image_analyze", "Timeout after 3 attempts; it may have been billed"),))),
        retry_command="media-pipeline run catalog.jsonl --out results.jsonl --retry-failed")
    return ReportData(
        title="results.jsonl", generated_at=NIGHT + seconds + 2, started=NIGHT, wall_time_s=seconds,
        outcome=Outcome(1, "completed with failures"), capabilities=tuple(rows), rejected_lines=1,
        history=_history(rng, nights, items) if nights else None,
        series=TimeSeries(step_s=step, groups=tuple(groups), results=results, in_flight=in_flight),
        durations=durations, detection_lag=lag, failures=failures)


def ten_second_run() -> ReportData:
    """A 10-second run of 12 images: every item succeeded, no history yet (a first run)."""
    rng = random.Random(10)
    req = tuple((float(t), round(9.0 + rng.uniform(-1, 0.5), 3)) for t in range(0, 11, 2))
    return ReportData(
        title="small.jsonl", generated_at=NIGHT + 11, started=NIGHT, wall_time_s=10.2,
        outcome=Outcome(0, "completed"),
        capabilities=(CapabilityRow("image_analyze", succeeded=12, requests=48, cost=0.144, limit=10.0),),
        series=TimeSeries(step_s=2.0, groups=(GroupTraffic("image-analyze", 10.0, req),),
                          results=tuple((t, 1.2) for t, _ in req), in_flight=tuple((t, 6.0) for t, _ in req)),
        durations=Histogram.of([rng.uniform(2, 6) for _ in range(12)], DURATION_BOUNDS),
        detection_lag=Histogram.of([rng.uniform(0, 1) for _ in range(12)], LAG_BOUNDS))


def ten_hour_run() -> ReportData:
    """A 10-hour backfill (36,000 s recorded every 10 s: 3,600 points per series) with many error
    codes and a long history, the largest report the pipeline should write."""
    base = mixed_run(items=40_000, seconds=36_000.0, step=10.0, nights=60, seed=36)
    codes = [f"Error.Code{i:02d}" for i in range(25)]
    groups = tuple(FailureGroup(code, 100 - i * 3, examples=tuple(
        FailureExample(f"item-{i:02d}-{k:06d}", "image_analyze", "x" * 5000) for k in range(5)))
        for i, code in enumerate(codes))
    assert base.history is not None
    older = OlderSessions(count=250, first_started=NIGHT - 310 * DAY, last_started=NIGHT - 61 * DAY,
                          succeeded=9_950_000, failed=1_234, cost=401_234.5)
    return replace(base, title="backfill.jsonl", failures=replace(base.failures, groups=groups),
                   history=replace(base.history, older=older))


def live_run() -> ReportData:
    """A snapshot of the mixed run four minutes in: no exit code yet."""
    base = mixed_run(seconds=240.0)
    return replace(base, live=True, outcome=Outcome(None, "running"), wall_time_s=240.0)


def first_run() -> ReportData:
    """The mixed run from a state dir with no history and no time series yet (today's version)."""
    return replace(mixed_run(nights=0), series=None, durations=None, detection_lag=None)


SAMPLES = {"mixed": mixed_run, "ten_seconds": ten_second_run, "ten_hours": ten_hour_run, "live": live_run,
           "first": first_run}


@functools.cache
def rendered(name: str) -> str:
    """The HTML report of the sample `name` (times in UTC), drawn once per test session: each
    takes a few seconds of matplotlib."""
    from pipeline.observe.html_report import render_report

    return render_report(SAMPLES[name](), zone=timezone.utc)
