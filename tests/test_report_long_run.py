"""A 10-hour session and a long history in a real state dir: the stored series stays bounded
(merged in pairs, every request still counted) and the report of it stays under 2 MB."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from support import FakeClock

from pipeline.config.load import Config
from pipeline.core.capabilities import CAPABILITIES
from pipeline.engine.recording import Recorder
from pipeline.observe.html_report import render_report
from pipeline.observe.report import RunStats
from pipeline.state.checkpoint import Checkpoint, SessionCounts
from pipeline.state.series import MAX_SAMPLES

pytest.importorskip("matplotlib")

HOURS = 10


def test_a_ten_hour_session_and_a_year_of_nights(tmp_path: Path) -> None:
    """365 earlier nights and a 10-hour session sampled every 10 s: at most MAX_SAMPLES samples are
    kept, they still count every request, and its report (every plot drawn) is under 2 MB."""
    from pipeline.cli.report_data_of import report_data

    ckpt = Checkpoint.open(tmp_path / "state")
    ckpt.set_meta("out", str(tmp_path / "results.jsonl"))
    for night in range(365):
        ckpt.start_session(night * 86_400.0)
        ckpt.end_session(ended=night * 86_400.0 + 3_600, outcome="completed", exit_code=0, stop_reason=None,
                         counts=SessionCounts(succeeded=300, requests=1_200, cost=12.0))
    stats, clock = RunStats(), FakeClock(0.0)
    recorder = Recorder(ckpt, stats, Config(), clock=clock, wall=lambda: 365 * 86_400.0)
    session = recorder.start()
    sent = 0
    for step in range(1, HOURS * 360 + 1):
        for n, cap in enumerate(CAPABILITIES.values()):
            c = stats.caps[cap.name]
            c.requests += 40 + n
            sent += 40 + n
            c.rate_limited += step % 7 == 0
            c.succeeded += 5
            c.in_flight = 50 + step % 30
            stats.durations.add(step % 400)
            stats.detection_lag.add((step % 50) / 10)
        clock.now = step * recorder.step
        recorder.flush()
    samples = ckpt.samples(session)
    assert len(samples) <= MAX_SAMPLES
    assert sum(sum(s.requests.values()) for s in samples) == sent
    assert math.isclose(samples[-1].t + samples[-1].span, HOURS * 3600)
    data = report_data(ckpt, tmp_path / "state", Config(), now=0.0)
    ckpt.close()
    assert data.history is not None and len(data.history.sessions) == 366
    html = render_report(data)
    for plot in ("requests", "in-flight", "durations", "detection-lag", "history"):
        assert f'data-plot="{plot}"' in html
    assert len(html.encode()) < 2_000_000, len(html.encode())
