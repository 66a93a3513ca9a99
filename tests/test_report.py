"""Run report: cost estimate from the default price table, summary counts, and its text rendering."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.config.load import Config
from pipeline.config.pricing import estimate_cost
from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.results import ItemStatus, ResultLine
from pipeline.observe.report import RunStats, format_summary, stats_from_outcomes, summarize
from pipeline.state.checkpoint import Outcome

PRICES = Config().prices
OCR = "ops-image-analyze-ocr-001"
VLM = "ops-image-analyze-vlm-001"
DETECT = "ops-object-detect-001"
FACE = "ops-object-detect-face-001"
SNAPSHOT = "ops-video-snapshot-001"
SUMMARIZE = "ops-video-summarize-001"


def ok(job_id: str, capability: str, service_id: str, usage: dict[str, Any] | None = None) -> Outcome:
    return Outcome(job_id, capability, service_id, "SUCCESS", None, None, usage, 1.0, 1)


def failed(job_id: str, capability: str, service_id: str, code: str | None) -> Outcome:
    return Outcome(job_id, capability, service_id, "FAILED", None, code, None, 1.0, 1)


# ---- estimate_cost ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_id", "successes", "usage", "expected"),
    [
        (OCR, 3, {}, 3 * 0.001),
        (DETECT, 5, {}, 5 * 0.002),
        (FACE, 4, {}, 4 * 0.001),
        (SNAPSHOT, 2, {}, 2 * 0.002),
        (VLM, 2, {"token_count": 1000}, 1000 * 0.002),  # priced per token, not per request
        (SUMMARIZE, 2, {"input_token": 100, "output_token": 50}, 100 * 0.002 + 50 * 0.004 + 2 * 0.001),
    ],
)
def test_estimate_cost_with_the_default_price_table(service_id, successes, usage, expected):
    """Per-request prices multiply successes; per-unit prices multiply the matching usage keys."""
    cost, unpriced = estimate_cost({service_id: usage}, {service_id: successes}, PRICES)
    assert cost == pytest.approx(expected)
    assert unpriced == []


def test_estimate_cost_ignores_usage_keys_without_a_price():
    """Usage fields the price table does not name (pv_count, audio_token, …) add nothing."""
    cost, _ = estimate_cost({OCR: {"pv_count": 7, "token_count": 900}}, {OCR: 1}, PRICES)
    assert cost == pytest.approx(0.001)
    cost, _ = estimate_cost({SUMMARIZE: {"audio_token": 10_000, "image_token": 10_000}}, {SUMMARIZE: 1}, PRICES)
    assert cost == pytest.approx(0.001)


def test_estimate_cost_sums_services_and_lists_unknown_ones_as_unpriced():
    """Costs of several services add up; a service id missing from the table is listed, not guessed."""
    usage = {VLM: {"token_count": 500}, "ops-mystery-001": {"tokens": 10}}
    successes = {OCR: 10, VLM: 1, "ops-mystery-001": 3, "ops-zzz-002": 1}
    cost, unpriced = estimate_cost(usage, successes, PRICES)
    assert cost == pytest.approx(10 * 0.001 + 500 * 0.002)
    assert unpriced == ["ops-mystery-001", "ops-zzz-002"]


def test_estimate_cost_of_nothing_is_zero():
    """No successes and no usage cost nothing and leave nothing unpriced."""
    assert estimate_cost({}, {}, PRICES) == (0.0, [])


def test_estimate_cost_only_counts_successes_for_request_prices():
    """Per-request prices are charged per success: a service seen with zero successes costs nothing."""
    cost, unpriced = estimate_cost({}, {OCR: 0, "ops-mystery-001": 0}, PRICES)
    assert cost == 0.0
    assert unpriced == []


# ---- summarize ----------------------------------------------------------------------------


@pytest.fixture
def caps():
    return stats_from_outcomes([
        ok("a1", "image_analyze", OCR),
        ok("a2", "image_analyze", OCR),
        ok("a3", "image_analyze", VLM, {"token_count": 500, "pv_count": 1}),
        failed("a4", "image_analyze", OCR, "InvalidParameter"),
        failed("a5", "image_analyze", OCR, "InvalidParameter"),
        failed("a6", "image_analyze", OCR, None),
        ok("s1", "video_summarization", SUMMARIZE, {"input_token": 100, "output_token": 50}),
        failed("s2", "video_summarization", SUMMARIZE, "TaskFailed"),
        ok("m1", "object_detection", "ops-mystery-001"),
    ])


def test_summarize_counts_successes_failures_and_codes(caps):
    """summarize counts succeeded and failed per capability and in total, with failures by code."""
    s = summarize(caps, prices=PRICES, elapsed=10.0)
    assert (s["succeeded"], s["failed"]) == (5, 4)
    image = s["capabilities"]["image_analyze"]
    assert (image["succeeded"], image["failed"]) == (3, 3)
    assert image["failed_by_code"] == {"InvalidParameter": 2, "Unknown": 1}
    video = s["capabilities"]["video_summarization"]
    assert (video["succeeded"], video["failed"], video["failed_by_code"]) == (1, 1, {"TaskFailed": 1})
    assert s["wall_time_s"] == 10.0


def test_summarize_totals_usage_and_cost(caps):
    """Usage is summed per capability, cost is estimated per capability and totalled; unknown services are listed."""
    s = summarize(caps, prices=PRICES, elapsed=None)
    image = s["capabilities"]["image_analyze"]
    assert image["usage"] == {"token_count": 500, "pv_count": 1}
    assert image["estimated_cost"] == pytest.approx(2 * 0.001 + 500 * 0.002)
    video = s["capabilities"]["video_summarization"]
    assert video["estimated_cost"] == pytest.approx(100 * 0.002 + 50 * 0.004 + 0.001)
    assert s["estimated_cost"] == pytest.approx(image["estimated_cost"] + video["estimated_cost"])
    assert s["unpriced_services"] == ["ops-mystery-001"]
    assert s["wall_time_s"] is None


def test_summarize_leaves_out_untouched_capabilities(caps):
    """Only capabilities with activity appear in the summary."""
    s = summarize(caps, prices=PRICES, elapsed=1.0)
    assert set(s["capabilities"]) == {"image_analyze", "video_summarization", "object_detection"}


def test_summarize_is_json_safe_and_carries_outcome_rejects_and_extra(caps):
    """The summary serializes to JSON and carries the outcome, rejected-line count and extra fields."""
    s = summarize(caps, prices=PRICES, elapsed=2.0, rejected=4, outcome="partial", extra={"run_id": "r1"})
    assert json.loads(json.dumps(s)) == s
    assert (s["outcome"], s["rejected_lines"], s["run_id"]) == ("partial", 4, "r1")


def test_summarize_request_rate_against_the_limit():
    """With requests, elapsed time and limits, each capability reports its request rate and share of the limit."""
    stats = RunStats(clock=lambda: 0.0)
    for _ in range(18):
        stats.on_response("image_analyze", 200)
    stats.on_response("image_analyze", 429)
    stats.on_response("image_analyze", 429)
    stats.on_retry("image_analyze")
    s = summarize(stats.caps, prices=PRICES, elapsed=8.0, qps={"image_analyze": 10.0})
    entry = s["capabilities"]["image_analyze"]
    assert (entry["requests"], entry["rate_limited"], entry["retries"]) == (20, 2, 1)
    assert entry["request_rate"] == pytest.approx(2.5)
    assert entry["rate_vs_limit"] == pytest.approx(0.25)


def test_short_sessions_report_no_rate_against_the_limit():
    """A session of a few seconds prints no "x of limit" figure (a burst would read as a broken limit)."""
    stats = RunStats(clock=lambda: 0.0)
    for _ in range(10):
        stats.on_response("image_analyze", 200)
    entry = summarize(stats.caps, prices=PRICES, elapsed=1.0, qps={"image_analyze": 10.0})["capabilities"]
    assert "rate_vs_limit" not in entry["image_analyze"] and entry["image_analyze"]["requests"] == 10


def test_run_stats_agree_with_the_lines_written():
    """RunStats fed the sink's lines counts exactly what the lines say."""
    stats = RunStats(clock=lambda: 0.0)
    lines = [
        ResultLine.finished(id=f"j{i}", capability="video_snapshot", service_id=SNAPSHOT,
                            status=ItemStatus.SUCCESS if i % 3 else ItemStatus.FAILED, task_id=f"t{i}",
                            usage={"image_count": 2} if i % 3 else None,
                            error=None if i % 3 else {"code": "TaskFailed", "message": "x", "http_status": 200},
                            attempts=1, polls=1, submitted_at=0.0, finished_at=1.0)
        for i in range(9)
    ]
    for line in lines:
        stats.on_line(line)
    s = summarize(stats.caps, prices=PRICES, elapsed=1.0)
    assert (s["succeeded"], s["failed"]) == (6, 3)
    assert s["capabilities"]["video_snapshot"]["failed_by_code"] == {"TaskFailed": 3}
    assert s["capabilities"]["video_snapshot"]["usage"] == {"image_count": 12}
    assert s["estimated_cost"] == pytest.approx(6 * 0.002)


# ---- format_summary -----------------------------------------------------------------------


def test_format_summary_mentions_every_capability_present(caps):
    """The text names each capability in the summary, the totals, failure codes and unpriced services."""
    text = format_summary(summarize(caps, prices=PRICES, elapsed=3.0, outcome="partial"))
    for name in ("image_analyze", "video_summarization", "object_detection"):
        assert name in text
    assert "audio_asr" not in text
    assert "succeeded 5" in text and "failed 4" in text
    assert "InvalidParameter 2" in text and "TaskFailed 1" in text
    assert "ops-mystery-001" in text


def test_format_summary_of_every_capability():
    """With activity in all six capabilities, all six are named."""
    caps = stats_from_outcomes(
        ok(f"{name}-1", name, CAPABILITIES[name].default_service_id) for name in CAPABILITIES)
    text = format_summary(summarize(caps, prices=PRICES, elapsed=1.0))
    assert all(name in text for name in CAPABILITIES)


def test_stats_from_checkpoint_totals_match_the_python_aggregation(tmp_path):
    """The SQL aggregation of a checkpoint gives the same counts and usage as walking every outcome."""
    from pipeline.observe.report import stats_from_outcomes, stats_from_totals
    from pipeline.state.checkpoint import Checkpoint, Outcome

    ckpt = Checkpoint.open(tmp_path / "state")
    outcomes = [
        Outcome("a", "image_analyze", "ops-image-analyze-vlm-001", "SUCCESS", "t1", None,
                {"token_count": 10, "pv_count": 1}, 1.0),
        Outcome("b", "image_analyze", "ops-image-analyze-vlm-001", "SUCCESS", "t2", None, {"token_count": 5.5}, 1.0),
        Outcome("c", "image_analyze", "ops-image-analyze-ocr-001", "FAILED", "t3", "TaskFailed", None, 1.0),
        Outcome("d", "audio_asr", "ops-audio-asr-001", "SUCCESS", "t4", None, {"duration": 61.5}, 2.0),
        Outcome("e", "audio_asr", "ops-audio-asr-001", "FAILED", None, None, None, None),
    ]
    ckpt.mark_done(outcomes, 0)
    try:
        fast, slow = stats_from_totals(*ckpt.totals()), stats_from_outcomes(ckpt.outcomes())
    finally:
        ckpt.close()
    for name in ("image_analyze", "audio_asr"):
        f, s = fast[name], slow[name]
        assert (f.succeeded, f.failed, dict(f.errors)) == (s.succeeded, s.failed, dict(s.errors))
        assert {k: dict(v) for k, v in f.usage.items()} == {k: dict(v) for k, v in s.usage.items()}
        assert dict(f.successes_by_service) == dict(s.successes_by_service)
    assert fast["image_analyze"].usage["ops-image-analyze-vlm-001"]["token_count"] == 15.5
    assert dict(fast["audio_asr"].errors) == {"Unknown": 1}
