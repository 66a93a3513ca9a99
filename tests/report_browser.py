"""Headless Chromium for the HTML report's tests, and the README's screenshot.

`python tests/report_browser.py` makes a real 300-item run against the emulator and writes the
screenshot of its report to docs/report.png (the image README shows), with the code the browser
test uses.

Chromium runs with a new empty profile each time and without its own background traffic
(updates, sync, first-run pages). `DevTools` drives it over the DevTools protocol to list what
a page requested and what failed to load; with `NETWORK_CUT` it can reach no other machine.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio"]
#: Attributes whose value the browser fetches (or navigates to).
URL_ATTRIBUTES = {"src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data", "background",
                  "ping", "manifest", "cite", "longdesc", "codebase", "archive", "icon"}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]*)|@import\s+['"]([^'"]+)""", re.I)


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if value is None:
                continue
            if name == "srcset":  # "a.png 1x, b.png 2x"
                self.found.extend(v.split()[0] for v in value.split(",") if v.strip())
            elif name in URL_ATTRIBUTES:
                self.found.append(value.strip())
            elif name == "style":
                self.found.extend(m[0] or m[1] for m in CSS_URL.findall(value))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found.extend(m[0] or m[1] for m in CSS_URL.findall(data))


def outside_references(html: str) -> list[str]:
    """Every URL in `html` (attributes that load or link, CSS `url(...)` and `@import`) that is
    neither a `data:` URI nor a `#fragment` of the page itself."""
    parser = _References()
    parser.feed(html)
    parser.close()
    return [u for u in parser.found if not (u.startswith("#") or u.lower().startswith("data:"))]


#: Cuts the browser off the network: every connection goes to a proxy on the discard port, where
#: nothing listens, and no host name resolves.
NETWORK_CUT = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: requests
    on its fd 3, answers and events on its fd 4, each a JSON object ended by a NUL byte): one page,
    whose own requests and failures are recorded; the browser's background traffic is not the page's."""

    def __init__(self, *flags: str, timeout: float = 90) -> None:
        assert CHROMIUM, "chromium is not installed (apt-get install chromium)"
        self._profile = tempfile.TemporaryDirectory(prefix="report-chromium-")
        # Both of Chromium's ends go above fd 9, so that putting them on 3 and 4 overwrites neither;
        # bash, not dash, which takes no fd above 9, puts them there.
        to_browser, self._send = (_above_nine(fd) for fd in os.pipe())
        self._receive, from_browser = (_above_nine(fd) for fd in os.pipe())
        self._proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$@" 3<&{to_browser} 4>&{from_browser}', "bash", CHROMIUM, *FLAGS,
             f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe", *flags, "about:blank"],
            pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._deadline = time.monotonic() + timeout
        self._buffer = b""
        self._next_id = 0
        self._session = ""
        self.events: list[dict[str, Any]] = []

    def start(self) -> None:
        """A new page, attached: the commands with `session=True` go to it."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command (to the page when `session`) and wait for its answer; events that
        arrive meanwhile are kept in `events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._send, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._next_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return dict(answer.get("result", {}))
            self.events.append(answer)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event `method` of the page (already received, or the next to come)."""
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == self._session:
                    return event
            self.events.append(self._read())

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = self._deadline - time.monotonic()
            ready, _, _ = select.select([self._receive], [], [], max(0.0, left))
            assert ready, "chromium did not answer in time"
            chunk = os.read(self._receive, 1 << 20)
            assert chunk, "chromium closed the DevTools pipe"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(raw))

    def open(self, page: Path, *, javascript: bool = False, width: int = 1200) -> None:
        """Load `page` (its scripts off unless `javascript`) in a `width`-pixel viewport, up to its load event."""
        for domain in ("Page", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setScriptExecutionDisabled", session=True, value=not javascript)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=900,
                  deviceScaleFactor=1, mobile=width < 600)
        self.call("Page.navigate", session=True, url=page.as_uri())
        self.wait_for("Page.loadEventFired")
        self.settle()

    def settle(self) -> None:
        """Wait until every outside request the page started has finished or failed: the network
        service reports on its own, and may do so after the page's load event."""
        while True:
            self.call("Runtime.evaluate", session=True, expression="0")  # what came before it is in
            if not self._pending():
                return
            self.events.append(self._read())

    def _pending(self) -> set[str]:
        started = {e["params"]["requestId"] for e in self.events if e.get("method") == "Network.requestWillBeSent"
                   and not e["params"]["request"]["url"].startswith(("file:", "data:"))}
        ended = {e["params"]["requestId"] for e in self.events
                 if e.get("method") in ("Network.loadingFinished", "Network.loadingFailed")}
        return started - ended

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (DevTools runs it whatever the page's setting)."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, png: Path, *, width: int, height: int) -> None:
        """A PNG of the top `height` pixels of the page in a `width`-pixel window."""
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=width < 600)
        png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"]))

    def requests(self) -> list[str]:
        """Every URL the page asked for so far (the page itself and `data:` URIs aside)."""
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"
                and not e["params"]["request"]["url"].startswith(("file:", "data:"))]

    def failures(self) -> list[str]:
        """Every load of the page that failed so far, with the reason."""
        return [f"{e['params'].get('type')}: {e['params'].get('errorText')}" for e in self.events
                if e.get("method") == "Network.loadingFailed"]

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except AssertionError:
            pass  # it closed the pipe while answering
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._send)
        os.close(self._receive)
        self._profile.cleanup()


def _above_nine(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


@contextmanager
def devtools(*flags: str) -> Iterator[DevTools]:
    """A `DevTools` browser, closed on the way out."""
    browser = DevTools(*flags)
    try:
        browser.start()
        yield browser
    finally:
        browser.close()


def screenshot(page: Path, png: Path, *, width: int = 1200, height: int = 2400) -> None:
    """A PNG of the top of `page`, opened with JavaScript off and the network cut."""
    with devtools(*NETWORK_CUT) as browser:
        browser.open(page, width=width)
        browser.screenshot(png, width=width, height=height)


def readme_screenshot(png: Path = REPO / "docs" / "report.png") -> Path:
    """docs/report.png: the top of the report a real 300-item run against the emulator wrote
    (`report_run.real_run`, the browser test's run), as README shows it."""
    from PIL import Image
    from report_run import real_run

    with tempfile.TemporaryDirectory(prefix="report-shot-") as tmp:
        page, shot = real_run(Path(tmp)), Path(tmp) / "report.png"
        screenshot(page, shot, width=1200, height=2150)
        # 256 colours are plenty for a page of flat colours and a third of the bytes in git.
        Image.open(shot).convert("RGB").quantize(256).save(png, optimize=True)
    return png


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(readme_screenshot())
