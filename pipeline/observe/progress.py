"""Live progress on stderr: a rich table on a terminal, one plain line at a steady interval otherwise.

Both read the same `RunStats` snapshot: per capability queued / in flight / done / failed, the
request rate against its limit, 429s and retries; elapsed time and an ETA from the recent
finishing rate and the manifest's line count (an estimate: it counts lines, not valid items).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from .report import RunStats

log = logging.getLogger("pipeline.progress")


def count_lines(manifest: str) -> int | None:
    """Items in a JSONL/CSV manifest, the progress bar's total; None when not known cheaply.

    Counts what the reader treats as records: not blank lines, not comments (first non-blank
    character '#'), not the CSV header; a quoted CSV cell may span lines, so CSV is parsed.
    An estimate still: invalid records count. None for stdin, YAML, or an unreadable file.
    """
    import csv  # local: only this function needs it

    if manifest == "-":
        return None
    path = Path(manifest)
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson", ".json", ".txt"):
            n = 0
            with open(path, "rb") as f:
                for raw in f:
                    text = raw.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()  # a BOM on line 1
                    if text and not text.startswith(b"#"):
                        n += 1
            return n
        if suffix == ".csv":
            with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
                rows = sum(1 for row in csv.reader(f)
                           if any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#"))
            return max(rows - 1, 0)  # the header
    except (OSError, csv.Error):  # e.g. a cell over the csv module's field limit: no total
        return None
    return None


class Snapshot:
    """Derived figures for one moment; the rate window is the last ~30 s."""

    def __init__(self, stats: RunStats, limits: Mapping[str, float], total: int | None,
                 history: deque[tuple[float, int, dict[str, int]]]) -> None:
        now = time.monotonic()
        self.records = total  # the manifest's records (lines), counted once before the run
        # Result lines to expect: exact once the reader has read everything (the units it read,
        # rejected lines aside); until then the records times the analyses per record so far.
        self.estimate = not stats.read_complete
        if stats.read_complete:
            total = stats.units_read
        elif total:
            total = round(total * stats.units_per_record())
        self.elapsed = stats.elapsed()
        done_total = sum(s.done + s.skipped for s in stats.caps.values())
        history.append((now, done_total, {name: s.requests for name, s in stats.caps.items()}))
        while len(history) > 2 and history[0][0] < now - 30:
            history.popleft()
        (t0, d0, r0), (t1, d1, r1) = history[0], history[-1]
        span = t1 - t0
        self.rows = []
        for name, s in stats.caps.items():
            if not (s.done or s.queued or s.in_flight or s.requests or s.skipped):
                continue
            # The recent request rate (last ~30 s), the figure to hold against the limit.
            rate = (r1[name] - r0[name]) / span if span > 0 else 0.0
            self.rows.append((name, s.queued, s.in_flight, s.succeeded + s.skipped, s.failed, rate,
                              limits.get(name), s.rate_limited, s.retries))
        self.done = done_total
        self.rejected = stats.rejected
        # Bytes sent to OSS (local files too big to inline), and their rate over the run so far.
        self.uploaded_mb = stats.uploaded_bytes / 1e6
        self.upload_rate = self.uploaded_mb / self.elapsed if self.elapsed > 0 else 0.0
        self.total = total
        self.eta: float | None = None
        if total and t1 > t0 and d1 > d0:
            remaining = max(total - done_total - (stats.rejected if self.estimate else 0), 0)
            self.eta = remaining / ((d1 - d0) / (t1 - t0))

    def plain(self) -> str:
        parts = [f"progress: {self.done}{self.of_total()} done"
                 f", {self.rejected} rejected, elapsed {_hms(self.elapsed)}"
                 f"{', eta ' + _hms(self.eta) if self.eta is not None else ''}"
                 + (f", uploaded {self.uploaded_mb:.1f} MB at {self.upload_rate:.1f} MB/s" if self.uploaded_mb
                    else "")]
        for name, queued, inflight, ok, failed, rate, limit, r429, retries in self.rows:
            parts.append(f"{name}: q={queued} fly={inflight} ok={ok} fail={failed} "
                         f"{rate:.1f}/{limit:g}rps 429={r429} retry={retries}")
        return " | ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": self.done, "total_lines": self.records, "expected_results": self.total,
            "expected_is_estimate": self.estimate, "rejected": self.rejected,
            "uploaded_mb": round(self.uploaded_mb, 3),
            "elapsed_s": round(self.elapsed, 1), "eta_s": round(self.eta, 1) if self.eta else None,
            "capabilities": {r[0]: {"queued": r[1], "in_flight": r[2], "succeeded": r[3],
                                    "failed": r[4], "request_rate": round(r[5], 2), "limit": r[6],
                                    "rate_limited": r[7], "retries": r[8]} for r in self.rows},
        }


    def of_total(self) -> str:
        """'/N' of the results expected ('/~N' while an estimate), or nothing when unknown."""
        if not self.total:
            return ""
        return f"/{'~' if self.estimate else ''}{self.total}"


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


async def show_progress(stats: RunStats, limits: Mapping[str, float], *, total: int | None,
                        mode: str, interval: float, stream: TextIO | None = None) -> None:
    """Runs until cancelled. mode: "rich", "plain", "off" or "auto" (rich on a terminal)."""
    stream = stream or sys.stderr
    if mode == "auto":
        mode = "rich" if stream.isatty() else "plain"
    if mode == "off":
        return
    history: deque[tuple[float, int, dict[str, int]]] = deque()
    if mode == "plain":
        while True:
            await asyncio.sleep(interval)
            snap = Snapshot(stats, limits, total, history)
            log.info("%s", snap.plain(), extra={"progress": snap.as_dict()})
    await _rich(stats, limits, total, history, stream)


async def _rich(stats: RunStats, limits: Mapping[str, float], total: int | None,
                history: deque[tuple[float, int, dict[str, int]]], stream: TextIO) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    def render() -> Table:
        snap = Snapshot(stats, limits, total, history)
        title = (f"{snap.done}{snap.of_total()} done · {snap.rejected} rejected · "
                 f"elapsed {_hms(snap.elapsed)} · ETA {_hms(snap.eta)}"
                 + (f" · uploaded {snap.uploaded_mb:.1f} MB ({snap.upload_rate:.1f} MB/s)" if snap.uploaded_mb else ""))
        table = Table(title=title, title_justify="left", expand=False)
        for col in ("capability", "queued", "in flight", "done", "failed", "req/s / limit", "429s", "retries"):
            table.add_column(col, justify="left" if col == "capability" else "right")
        for name, queued, inflight, ok, failed, rate, limit, r429, retries in snap.rows:
            table.add_row(name, str(queued), str(inflight), str(ok), str(failed),
                          f"{rate:.1f} / {limit:g}", str(r429), str(retries))
        return table

    console = Console(file=stream, stderr=stream is sys.stderr)
    try:
        # Live redirects sys.stderr while it runs, so log lines print above the table.
        with Live(render(), console=console, refresh_per_second=4, transient=False) as live:
            try:
                while True:
                    await asyncio.sleep(0.5)
                    live.update(render())
            finally:
                live.update(render())
    finally:
        console.line()
