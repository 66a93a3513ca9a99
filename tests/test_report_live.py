"""The live report's traffic: a live run's report shows the requests and 429s its session has sent
so far (the checkpoint keeps no request counters; the session's history row does)."""

from __future__ import annotations

import copy

import pytest

from pipeline.cli.report_data_of import live_traffic
from pipeline.state.history import RUNNING, SessionCounts, SessionRow


def session(started: float, by_capability: dict[str, dict[str, float]]) -> SessionRow:
    return SessionRow(id=1, started=started, ended=None, outcome=RUNNING, exit_code=None, stop_reason=None,
                      counts=SessionCounts(by_capability=by_capability))


@pytest.mark.parametrize(("capabilities", "by_capability", "now", "expected"), [
    # requests and 429s so far, and their rate since the session started
    ({"image_analyze": {"succeeded": 2, "failed": 0}}, {"image_analyze": {"requests": 40, "rate_limited": 3}}, 120.0,
     {"image_analyze": {"succeeded": 2, "failed": 0, "requests": 40, "rate_limited": 3, "request_rate": 2.0}}),
    # a capability with requests but no line yet gets its row
    ({}, {"audio_asr": {"requests": 7, "rate_limited": 0}}, 170.0,
     {"audio_asr": {"succeeded": 0, "failed": 0, "requests": 7, "rate_limited": 0, "request_rate": 0.1}}),
    # under MIN_RATE_SECONDS: the counts, no rate (a few seconds' rate says little)
    ({"image_analyze": {"succeeded": 0, "failed": 0}}, {"image_analyze": {"requests": 5, "rate_limited": 0}}, 102.0,
     {"image_analyze": {"succeeded": 0, "failed": 0, "requests": 5, "rate_limited": 0}}),
    # a capability that sent nothing (only skipped lines) is left as it is
    ({"video_snapshot": {"succeeded": 0, "failed": 0}}, {"video_snapshot": {"requests": 0, "skipped": 4}}, 120.0,
     {"video_snapshot": {"succeeded": 0, "failed": 0}}),
])
def test_live_traffic_cases(capabilities, by_capability, now, expected):
    """The live summary's capabilities carry the session row's requests, 429s and rate, as the table says."""
    summary = {"outcome": "running", "capabilities": capabilities}
    before = copy.deepcopy(summary)
    got = live_traffic(summary, session(100.0, by_capability), now)
    assert got["capabilities"] == expected and got["outcome"] == "running"
    assert summary == before  # the caller's summary is not changed
