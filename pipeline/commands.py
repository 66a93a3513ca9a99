"""`status`: a read-only command that never touches the network (`validate` is in
`pipeline.validate`).

It returns (exit code, report dict); the CLI prints the report as text or JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .capabilities import CAPABILITIES
from .checkpoint import Checkpoint
from .config import Config
from .report import stats_from_checkpoint, summarize

EXIT_OK = 0


def status(state_dir: Path, config: Config) -> tuple[int, dict[str, Any]]:
    """What a run has done so far, from its checkpoint, read-only (safe while it runs)."""
    ckpt = Checkpoint.open(state_dir, read_only=True)
    try:
        caps = stats_from_checkpoint(ckpt)
        counts = ckpt.counts()
        meta = {key: ckpt.get_meta(key) for key in ("manifest", "out")}
    finally:
        ckpt.close()
    in_flight = {cap: c.get("submitted", 0) for cap, c in counts.items() if c.get("submitted")}
    for cap, n in in_flight.items():
        caps[cap].in_flight = n
    retry = {cap: c.get("retry", 0) for cap, c in counts.items() if c.get("retry")}
    summary = summarize(caps, prices=config.prices, elapsed=None)
    summary.update(manifest=meta["manifest"], results=meta["out"], in_flight=in_flight,
                   waiting_for_retry=retry)
    last = Path(meta["out"]).with_name(Path(meta["out"]).stem + ".summary.json") if meta["out"] else None
    if last is not None and last.exists():
        try:
            summary["last_run"] = {k: v for k, v in json.loads(last.read_text()).items()
                                   if k in ("outcome", "reason", "wall_time_s")}
        except ValueError:
            pass
    return EXIT_OK, summary


def format_status(summary: dict[str, Any]) -> str:
    lines = [f"manifest: {summary.get('manifest')}", f"results:  {summary.get('results')}"]
    last = summary.get("last_run")
    if last:
        lines.append(f"last run: {last.get('outcome')}" + (f" ({last['reason']})" if last.get("reason") else ""))
    lines.append(f"finished: {summary['succeeded']} succeeded, {summary['failed']} failed; "
                 f"in flight (task recorded, not finished): {sum(summary['in_flight'].values())}; "
                 f"estimated cost so far {summary['estimated_cost']:.4f}")
    for name in CAPABILITIES:
        c = summary["capabilities"].get(name)
        if not c:
            continue
        failed = ", ".join(f"{k} {v}" for k, v in sorted(c["failed_by_code"].items()))
        usage = ", ".join(f"{k}={v:g}" for k, v in sorted(c["usage"].items()))
        lines.append(f"  {name:<20} ok {c['succeeded']:>7}  failed {c['failed']:>5}"
                     f"{' (' + failed + ')' if failed else ''}  in flight {c.get('in_flight', 0)}"
                     f"{'  usage ' + usage if usage else ''}")
    return "\n".join(lines)
