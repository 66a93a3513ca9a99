"""The HTML run report in a real browser (headless Chromium, JavaScript off, the network cut):
it draws every plot, is not blank, asks for nothing outside itself, fits a phone, goes dark
with the system and prints."""

from __future__ import annotations

import base64
import math
import re

import pytest
from PIL import Image, ImageStat
from report_browser import CHROMIUM, NETWORK_CUT, devtools, screenshot
from report_run import real_run
from report_samples import HOSTILE_ID, SAMPLES, rendered

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; "
                                                         ".ci/run installs it)")

#: For each element of the page whose id starts with "mark-": its id and the size it was drawn at.
MARKS = """[...document.querySelectorAll('[id^="mark-"]')].map(e => {
  const box = e.getBoundingClientRect(); return [e.id, box.width, box.height]; })"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Each sample's report written to a file."""
    folder = tmp_path_factory.mktemp("reports")
    out = {}
    for name in SAMPLES:
        out[name] = folder / f"{name}.html"
        out[name].write_text(rendered(name), encoding="utf-8")
    return out


def drawn(marks, plot: str) -> int:
    """How many marks named `mark-PLOT-N` have a size on the page."""
    prefix = f"mark-{plot}-"
    return sum(1 for mark_id, w, h in marks
               if mark_id.startswith(prefix) and mark_id[len(prefix):].isdigit() and w + h > 0)


def test_every_plot_is_drawn_with_the_network_cut(pages):
    """Opened with JavaScript off and no network, the 300-item run's report draws every mark of
    every plot from its data, requests nothing, fails to load nothing, and runs no script."""
    data = SAMPLES["mixed"]()
    with devtools(*NETWORK_CUT) as browser:
        browser.open(pages["mixed"])
        marks = browser.evaluate(MARKS)
        plots = browser.evaluate("[...document.querySelectorAll('figure[data-plot]')].map(f => "
                                 "[f.dataset.plot, f.querySelector('svg').getBoundingClientRect().height])")
        assert browser.requests() == [] and browser.failures() == []
        assert browser.evaluate("document.scripts.length") == 0
        assert browser.evaluate("document.title").startswith("Completed with failures")
        assert HOSTILE_ID in browser.evaluate("document.getElementById('failure-table').textContent")
    assert [name for name, _ in plots] == ["requests", "in-flight", "durations", "detection-lag", "failures", "cost",
                                           "history"]
    assert all(height > 100 for _, height in plots), plots
    series, history = data.series, data.history
    assert series is not None and history is not None and data.durations and data.detection_lag
    sessions = history.sessions[-30:]
    expected = {
        "requests": len(series.groups),
        "requests-limit": len(series.groups),
        "requests-429": sum(1 for g in series.groups if any(v for _, v in g.rate_limited)),
        "in-flight": 2,
        "durations": len(data.durations.counts) - (data.durations.counts[-1] == 0),
        "detection-lag": len(data.detection_lag.counts) - (data.detection_lag.counts[-1] == 0),
        "failures": len(data.failures.groups),
        "cost": sum(1 for c in data.capabilities if c.cost > 0),
        "history-items": sum(1 for s in sessions if s.succeeded),
        "history-failed": sum(1 for s in sessions if s.failed),
        "history-cost": sum(1 for s in sessions if s.cost),
        "history-duration": sum(1 for s in sessions if s.duration_s),
        "history-killed": 1,
    }
    assert {plot: drawn(marks, plot) for plot in expected} == expected


@pytest.mark.slow
def test_a_real_runs_report_draws_every_plot_with_the_network_cut(tmp_path):
    """The report `run` wrote at the end of a real 300-item run against the emulator opens in
    Chromium with the network cut and JavaScript off: its outcome, and every plot drawn with a
    mark per QPS group, bucket and failure code; nothing requested, nothing failed to load."""
    page = real_run(tmp_path)
    assert page.stat().st_size < 1_000_000
    with devtools(*NETWORK_CUT) as browser:
        browser.open(page)
        marks = browser.evaluate(MARKS)
        plots = browser.evaluate("[...document.querySelectorAll('figure[data-plot]')].map(f => "
                                 "[f.dataset.plot, f.querySelector('svg').getBoundingClientRect().height])")
        outcome = browser.evaluate("document.getElementById('outcome').textContent")
        assert browser.requests() == [] and browser.failures() == []
        assert browser.evaluate("document.scripts.length") == 0
    assert "Completed with failures — exit code 1" in outcome
    assert [name for name, _ in plots] == ["requests", "in-flight", "durations", "detection-lag", "failures", "cost",
                                           "history"]
    assert all(height > 100 for _, height in plots), plots
    assert drawn(marks, "requests") == 6  # one line per QPS group: every capability ran
    assert drawn(marks, "requests-limit") == 6
    assert drawn(marks, "in-flight") == 2
    assert drawn(marks, "durations") >= 2 and drawn(marks, "detection-lag") >= 2
    assert drawn(marks, "failures") >= 1 and drawn(marks, "cost") >= 1 and drawn(marks, "history-items") == 1


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_no_request_leaves_the_page(pages, name):
    """With the network cut, no sample's report asks for anything, so nothing fails to load."""
    with devtools(*NETWORK_CUT) as browser:
        browser.open(pages[name])
        assert (browser.requests(), browser.failures()) == ([], [])


def test_the_request_check_sees_a_page_that_loads_from_outside(pages, tmp_path):
    """The check above is not blind: the same report with a web font, a stylesheet and an image
    from other hosts shows each request and its failure."""
    page = tmp_path / "leaky.html"
    page.write_text(rendered("ten_seconds").replace("</head>", (
        '<link rel="stylesheet" href="https://fonts.example/css?family=Inter">'
        '<style>body { background: url(http://img.example/bg.png) }</style></head>')).replace(
        "</footer>", '</footer><img src="https://img.example/logo.png" alt="">'), encoding="utf-8")
    with devtools(*NETWORK_CUT) as browser:
        browser.open(page)
        requests, failures = browser.requests(), browser.failures()
    assert set(requests) == {"http://img.example/bg.png", "https://fonts.example/css?family=Inter",
                             "https://img.example/logo.png"}, requests
    assert len(failures) == len(requests), failures  # each one failed: the network is cut


def test_the_screenshot_is_not_blank(pages, tmp_path):
    """Chromium's screenshot of the report (JavaScript off) has content from top to bottom: every
    band of 400 pixels varies, and the outcome's colour and the plots' blue are on it."""
    png = tmp_path / "report.png"
    screenshot(pages["mixed"], png, width=1200, height=2400)
    image = Image.open(png).convert("RGB")
    assert image.size == (1200, 2400)
    bands = [ImageStat.Stat(image.crop((0, top, 1200, top + 400)).convert("L")).stddev[0]
             for top in range(0, 2400, 400)]
    assert all(spread > 8 for spread in bands), bands
    colours = {colour for _, colour in image.getcolors(1 << 20) or []}
    assert any(_near(c, (0x9A, 0x67, 0x00)) for c in colours), "no amber outcome line (exit 1)"
    assert any(_near(c, (0x00, 0x72, 0xB2)) for c in colours), "no blue plot line"


def _near(a, b, tolerance=12):
    return math.dist(a, b) <= tolerance


def test_a_phone_scrolls_the_plots_not_the_page(pages):
    """At a phone's 390 pixels the page itself is no wider than the screen (plots scroll inside
    their frames, tables inside theirs) and the text keeps a readable size."""
    with devtools(*NETWORK_CUT) as browser:
        browser.open(pages["mixed"], width=390)
        assert browser.evaluate("document.documentElement.scrollWidth") <= 390
        assert browser.evaluate("parseFloat(getComputedStyle(document.body).fontSize)") >= 14
        assert browser.evaluate("document.querySelector('figure svg').getBoundingClientRect().width") >= 470


def test_dark_mode_and_print(pages):
    """With a dark system theme the page is dark; printed, it is a PDF of several pages."""
    with devtools(*NETWORK_CUT) as browser:
        browser.open(pages["mixed"])
        light = browser.evaluate("getComputedStyle(document.body).backgroundColor")
        browser.call("Emulation.setEmulatedMedia", session=True,
                     features=[{"name": "prefers-color-scheme", "value": "dark"}])
        dark = browser.evaluate("getComputedStyle(document.body).backgroundColor")
        pdf = base64.b64decode(browser.call("Page.printToPDF", session=True)["data"])
    assert (light, dark) == ("rgb(255, 255, 255)", "rgb(13, 17, 23)")
    assert pdf.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 3
