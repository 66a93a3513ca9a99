"""The HTML run report as a file: every run value escaped, nothing loaded from outside, the empty
states said in words, bounded size, and a clear message without the `report` extra. (What a
browser makes of it is tests/test_report_browser.py.)"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import timezone
from html.parser import HTMLParser

import pytest
from report_browser import outside_references
from report_samples import HOSTILE_CODE, HOSTILE_ID, HOSTILE_MESSAGE, SAMPLES, mixed_run, rendered

from pipeline.observe import html_report
from pipeline.observe.html_report import ReportUnavailable, render_report
from pipeline.observe.report_data import Outcome


class Elements(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if a.get("id")}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_no_script_no_handler_and_every_run_value_is_text(name):
    """The page holds no script and no event handler at all; an id, error code and message made
    of markup come out as text (in the table and in the plots), never as elements."""
    page = Elements(rendered(name))
    assert [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "img", "link")] == ["link"]
    assert not [(t, k) for t, attrs in page.tags for k in attrs if k.lower().startswith("on")]
    if name == "mixed":
        text = "".join(page.text)
        assert HOSTILE_ID in text and HOSTILE_MESSAGE in text
        assert text.count(HOSTILE_CODE) >= 2  # the failures table and the failures plot's axis


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_file_refers_to_nothing_outside_itself(name):
    """No src, href or CSS url() in the page is anything but a data: URI or a #fragment."""
    assert outside_references(rendered(name)) == []


def test_the_reference_check_sees_every_kind_of_outside_reference():
    """The check above finds each way a page can load something from another host."""
    html = rendered("ten_seconds").replace("</head>", (
        '<link rel="stylesheet" href="https://cdn.example/a.css"><style>@import "https://cdn.example/b.css";'
        'body{background:url(//img.example/c.png)}</style><script src="https://cdn.example/d.js"></script>'
        '<svg><image xlink:href="http://img.example/e.svg"/></svg><img srcset="https://img.example/f.png 2x">'
        '<p style="background: url(\'https://img.example/g.png\')"></p></head>'))
    assert sorted(outside_references(html)) == sorted([
        "https://cdn.example/a.css", "https://cdn.example/b.css", "//img.example/c.png", "https://cdn.example/d.js",
        "http://img.example/e.svg", "https://img.example/f.png", "https://img.example/g.png"])


def test_a_first_run_says_there_is_no_history_and_shows_the_summary():
    """A state dir without history or time series: the report says so in words, and the outcome
    and per-capability table are there."""
    page = Elements(rendered("first"))
    text = " ".join("".join(page.text).split())
    assert {"no-history", "no-series", "no-histograms", "outcome", "capabilities"} <= page.ids()
    assert "No history yet" in text
    assert "Completed with failures — exit code 1" in text
    assert "video_summarization" in text


def test_a_live_run_is_marked_live():
    """A snapshot of a running run carries the LIVE badge, says it is a snapshot and has no exit code."""
    page = Elements(rendered("live"))
    text = " ".join("".join(page.text).split())
    assert "live" in page.ids()
    assert "A snapshot of a run still going" in text and "exit code" not in text.split("What to do next")[0]
    assert ("section", {"class": "outcome tone-live", "id": "outcome"}) in page.tags


def test_zero_failures_say_so():
    """A run without failures has a sentence saying so, and no failures plot or table."""
    page = Elements(rendered("ten_seconds"))
    assert "no-failures" in page.ids()
    assert "plot-failures" not in page.ids() and "failure-table" not in page.ids()


@pytest.mark.parametrize(("exit_code", "words", "tone", "advice"), [
    (0, "completed", "ok", "What to do next: nothing."),
    (3, "stopped", "warn", "What to do next: run the same command again: it resumes."),
    (6, "stopped", "bad", "What to do next: raise the cap and resume."),
])
def test_the_outcome_line_and_what_to_do_next(exit_code, words, tone, advice):
    """The outcome is one line in words and colour, followed by the exit-code table's advice."""
    data = replace(SAMPLES["first"](), outcome=Outcome(exit_code, words, "spend cap: 12.00 of 12.00 CNY"))
    page = Elements(render_report(data, zone=timezone.utc))
    text = " ".join("".join(page.text).split())
    assert f"{words.capitalize()} — exit code {exit_code}" in text
    assert advice in text
    assert ("section", {"class": f"outcome tone-{tone}", "id": "outcome"}) in page.tags


@pytest.mark.parametrize(("name", "limit"), [("mixed", 1_000_000), ("ten_hours", 2_000_000), ("ten_seconds", 200_000)])
def test_report_size_is_bounded(name, limit):
    """A 300-item run's report stays under 1 MB and a 10-hour run's under 2 MB (issue 23)."""
    size = len(rendered(name).encode())
    assert size < limit, f"{name}: {size:,} bytes"


def test_long_values_are_clipped_and_long_lists_bounded():
    """A 5,000-character message is shown clipped; 25 error codes list the 12 most frequent and
    say how many more; the history lists its last 30 sessions and sums up the older ones."""
    page = Elements(rendered("ten_hours"))
    text = " ".join("".join(page.text).split())
    assert "x" * 5000 not in text and "(5,000 characters)" in text
    assert "Error.Code11" in text and "Error.Code12" not in text
    assert "And 13 less frequent error code(s)" in text
    assert "30 earlier session(s) of the history are not shown here" in text
    assert "250 session(s) from" in text


def test_without_the_extra_the_message_says_what_to_install(monkeypatch):
    """Without matplotlib (the `report` extra), rendering fails with a message naming the extra."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert not html_report.available()
    with pytest.raises(ReportUnavailable, match=r"report.* extra \(matplotlib not installed\): pip install "
                                                r"'opensearch-media-pipeline\[report\]'"):
        render_report(mixed_run(nights=0))


def test_the_renderer_reads_no_secret_from_the_environment(monkeypatch):
    """The renderer shows only what it is given: an API key in the environment never reaches the page."""
    secret = "sk-report-test-secret-0123456789"
    monkeypatch.setenv("DASHSCOPE_API_KEY", secret)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", secret)
    assert secret not in render_report(SAMPLES["first"](), zone=timezone.utc)
