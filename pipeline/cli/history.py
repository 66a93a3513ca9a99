"""`status --history`: a run's sessions, one line each (read-only, works during a run).

Each session: when it started and how long it took, its outcome and exit code (or "running",
or "interrupted" for one killed), what it did (succeeded, failed, skipped, rejected lines),
its cost and requests (429s among them), why it stopped, and the catalog's delta counts once the
catalog work records them. Sessions folded away by the history's bound are one totals line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..config.load import Config
from ..core.echo import clipped
from ..core.errors import UsageError
from ..core.exit_codes import ExitCode
from ..state.checkpoint import Checkpoint
from ..state.history import INTERRUPTED, RUNNING
from ..state.lock import live_holder
from .status import summary_of

__all__ = ["format_history", "history"]


def history(state_dirs: list[Path], config: Config | None = None) -> tuple[ExitCode, dict[str, Any]]:
    """The history of each state dir, as JSON-safe dicts: {"runs": [{"state_dir", "sessions",
    "older", "exit_code"}]}. The exit code is plain `status`'s (the run's: 3 for a run whose last
    session did not finish, 7 while one is live; for several state dirs the highest), so the two
    views of a state dir agree; a state dir without a run is a usage error (exit 2)."""
    runs = []
    codes = []
    for state_dir in state_dirs:
        if not (state_dir / Checkpoint.DB_NAME).exists():
            raise UsageError(f"{state_dir} holds no run (no {Checkpoint.DB_NAME} in it)")
        ckpt = Checkpoint.open(state_dir, read_only=True)
        try:
            with ckpt.snapshot():
                rows, older = ckpt.history()
                code = ExitCode(summary_of(ckpt, state_dir, config or Config())["status_exit_code"])
        finally:
            ckpt.close()
        codes.append(code)
        live = live_holder(state_dir) is not None
        sessions = []
        for i, row in enumerate(rows):
            outcome = row.outcome
            if outcome == RUNNING and not (live and i == len(rows) - 1):
                outcome = INTERRUPTED  # killed: the next start records it so
            c = row.counts
            sessions.append({
                "started": row.started, "ended": row.ended, "outcome": outcome, "exit_code": row.exit_code,
                "stop_reason": row.stop_reason, "succeeded": c.succeeded, "failed": c.failed, "skipped": c.skipped,
                "rejected": c.rejected, "cost": c.cost, "requests": c.requests, "rate_limited": c.rate_limited,
                "by_capability": dict(c.by_capability), "catalog": row.catalog})
        runs.append({"state_dir": str(state_dir), "sessions": sessions,
                     "older": None if older is None else vars(older), "exit_code": int(code)})
    return max(codes, default=ExitCode.OK), {"runs": runs}


def _when(epoch: float | None) -> str:
    return "—" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _duration(started: float, ended: float | None) -> str:
    if ended is None:
        return "—"
    seconds = max(0.0, ended - started)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def format_history(report: dict[str, Any]) -> str:
    parts = []
    for run in report["runs"]:
        lines = [f"state dir: {run['state_dir']}"]
        older = run["older"]
        if older:
            lines.append(f"  {older['count']} earlier sessions, {_when(older['first_started'])} to "
                         f"{_when(older['last_started'])}: {older['succeeded']} succeeded, {older['failed']} failed, "
                         f"cost {older['cost']:.4f}, {older['requests']} requests ({older['rate_limited']} 429s)")
        if not run["sessions"] and not older:
            lines.append("  no history yet: the runs of this state dir were made by a version that kept none; "
                         "the next session starts it")
        for s in run["sessions"]:
            code = f" (exit {s['exit_code']})" if s["exit_code"] is not None else ""
            line = (f"  {_when(s['started'])}  {_duration(s['started'], s['ended']):>9}  {s['outcome']}{code}: "
                    f"{s['succeeded']} succeeded, {s['failed']} failed, {s['skipped']} skipped, "
                    f"{s['rejected']} rejected lines; cost {s['cost']:.4f}; {s['requests']} requests "
                    f"({s['rate_limited']} 429s)")
            if s["catalog"]:
                line += "; catalog " + ", ".join(f"{k} {v}" for k, v in s["catalog"].items())
            if s["stop_reason"]:
                line += f"; stopped: {clipped(s['stop_reason'], 300)}"
            lines.append(line)
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
