"""The report of what every run already writes (its summary and FAILED lines), and the report of
a real run against the emulator, in the browser."""

from __future__ import annotations

import json
from datetime import timezone
from pathlib import Path

import pytest
from report_browser import CHROMIUM, NETWORK_CUT, devtools
from support import cli, config_file, items, read_results, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread, FaultSettings
from pipeline.observe.html_report import render_report
from pipeline.observe.report import CapabilityStats, summarize
from pipeline.observe.report_summary import EXAMPLES_PER_CODE, failures_from, from_summary
from pipeline.state.resume import NOT_RETRIED_CODES

PRICES = {"ops-image-analyze-ocr-001": {"request": 0.01}, "ops-audio-asr-001": {"request": 0.05}}


def sample_summary(elapsed: float = 20.0) -> dict:
    """A summary as `run` writes it: 12 images, 5 of 8 audio files failed, from summarize() itself."""
    image, audio = CapabilityStats(), CapabilityStats()
    image.succeeded, image.requests, image.rate_limited = 12, 180, 3
    image.successes_by_service["ops-image-analyze-ocr-001"] = 12
    audio.succeeded, audio.failed, audio.requests, audio.skipped = 3, 5, 40, 2
    audio.successes_by_service["ops-audio-asr-001"] = 3
    audio.errors.update({"TaskFailed": 4, "InvalidParameter": 1})
    summary = summarize({"image_analyze": image, "audio_asr": audio}, prices=PRICES, elapsed=elapsed,
                        qps={"image_analyze": 10.0, "audio_asr": 5.0}, rejected=1, outcome="completed with failures")
    return {**summary, "exit_code": 1, "reason": None}


def test_per_capability_rows_and_outcome_come_from_the_summary():
    """Counts, skipped, requests, 429s, rate and its limit, cost and the outcome are the summary's."""
    data = from_summary(sample_summary(), title="r.jsonl", generated_at=0.0)
    rows = {r.name: r for r in data.capabilities}
    assert (rows["image_analyze"].succeeded, rows["image_analyze"].requests, rows["image_analyze"].rate_limited) == (
        12, 180, 3)
    assert rows["image_analyze"].rate_vs_limit == pytest.approx(180 / 20 / 10, rel=1e-3)
    assert (rows["audio_asr"].failed, rows["audio_asr"].skipped) == (5, 2)
    assert rows["audio_asr"].cost == pytest.approx(0.15)
    assert (data.outcome.exit_code, data.outcome.words, data.rejected_lines) == (1, "completed with failures", 1)
    assert [(g.code, g.count, g.examples) for g in data.failures.groups] == [("TaskFailed", 4, ()),
                                                                              ("InvalidParameter", 1, ())]


def test_a_short_session_takes_the_limit_from_the_config():
    """A session too short for a rate has none; the limit then comes from `limits`."""
    data = from_summary(sample_summary(elapsed=2.0), title="r", generated_at=0.0, limits={"audio_asr": 5.0})
    rows = {r.name: r for r in data.capabilities}
    assert (rows["audio_asr"].request_rate, rows["audio_asr"].limit) == (None, 5.0)
    assert rows["image_analyze"].limit is None


def test_live_and_finished_outcomes():
    """A live run is "running" with no exit code; a finished summary without one is refused."""
    assert from_summary(sample_summary(), title="r", generated_at=0.0, live=True).outcome.tone == "live"
    with pytest.raises(ValueError, match="no exit_code"):
        from_summary({**sample_summary(), "exit_code": None}, title="r", generated_at=0.0)


def test_failures_keep_the_first_examples_of_each_code_and_say_which_are_retried():
    """Counts are the summary's (every session); examples the first few FAILED lines of each code;
    InvalidParameter is marked as not sent again by --retry-failed."""
    lines = [{"id": f"a{i}", "analysis": "audio_asr", "status": "FAILED",
              "error": {"code": "TaskFailed", "message": f"m{i}"}} for i in range(6)]
    lines += [{"id": "ok", "status": "SUCCESS", "error": None},
              {"id": "bad", "capability": "audio_asr", "status": "FAILED",
               "error": {"code": "InvalidParameter", "message": "file_type"}}]
    failures = failures_from(sample_summary(), iter(lines), not_retried=NOT_RETRIED_CODES, retry_command="run --x")
    task, invalid = failures.groups
    assert [e.id for e in task.examples] == [f"a{i}" for i in range(EXAMPLES_PER_CODE)]
    assert (task.count, task.by_capability, task.retried) == (4, {"audio_asr": 4}, True)
    assert (invalid.examples[0].analysis, invalid.retried) == ("audio_asr", False)
    assert failures.retry_command == "run --x"
    assert failures_from({"capabilities": {}}, [], not_retried=(), retry_command="run --x").retry_command is None


KEY = "report-test-key-5e1f"
SCALE = 10.0


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, str]:
    """A mixed run against the emulator with about a third of its tasks failing: its folder and report."""
    tmp = tmp_path_factory.mktemp("real-run")
    fast = {cap: (0.5, 1.5) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                         "video-summarization", "audio-asr")}
    settings = EmulatorSettings(api_key=KEY, seed=9, time_scale=SCALE, durations=fast,
                                faults=FaultSettings(task_fail_rate=0.3))
    manifest = write_manifest(tmp / "m.jsonl", items(36))
    with EmulatorThread(settings) as emu:
        done = cli(["run", str(manifest), "--out", str(tmp / "results.jsonl"), "--endpoint", emu.url,
                    "--config", str(config_file(tmp / "cfg.yaml", polling={"first_delay": 1.0, "max_delay": 3.0}))],
                   env={"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)})
    assert done.returncode == 1, done.stderr[-2000:]
    summary = json.loads((tmp / "results.summary.json").read_text())
    failed = (line for line in read_results(tmp / "results.jsonl") if line["status"] == "FAILED")
    retry = f"media-pipeline run {manifest} --out {tmp / 'results.jsonl'} --retry-failed"
    failures = failures_from(summary, failed, not_retried=NOT_RETRIED_CODES, retry_command=retry)
    data = from_summary(summary, title="results.jsonl", generated_at=0.0, failures=failures)
    html = render_report(data, zone=timezone.utc)
    (tmp / "results.report.html").write_text(html, encoding="utf-8")
    return tmp, html


@pytest.mark.slow
def test_the_report_of_a_real_run_shows_its_outcome_and_failures(real_run):
    """The report of a run against the emulator says it completed with failures (exit 1), lists
    TaskFailed with examples from the results file and the retry command, and never the API key."""
    _, html = real_run
    text = " ".join(html.split())
    assert "Completed with failures — exit code 1" in text
    assert "<code>TaskFailed</code>" in html and "--retry-failed" in text
    assert "item-000" in text  # an example id from the results file
    assert KEY not in html
    assert 'id="no-history"' in html  # today's state dir keeps no history yet


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_report_of_a_real_run_in_the_browser(real_run):
    """Opened in Chromium with the network cut, the real run's report draws its failures and cost
    plots and asks for nothing."""
    folder, _ = real_run
    with devtools(*NETWORK_CUT) as browser:
        browser.open(folder / "results.report.html")
        assert browser.evaluate("document.getElementById('outcome').innerText").startswith("Completed with failures")
        plots = browser.evaluate("[...document.querySelectorAll('figure[data-plot]')].map(f => [f.dataset.plot, "
                                 "f.querySelectorAll('[id^=\"mark-\"]').length])")
        assert (browser.requests(), browser.failures()) == ([], [])
    assert dict(plots).keys() == {"failures", "cost"} and all(n > 0 for _, n in plots), plots
