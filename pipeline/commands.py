"""`validate` and `status`: read-only commands that never touch the network.

Each returns (exit code, report dict); the CLI prints the report as text or JSON.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .capabilities import CAPABILITIES
from .checkpoint import Checkpoint
from .config import Config
from .job import Job
from .manifest import Rejected, read_manifest
from .report import estimate_cost, stats_from_checkpoint, summarize

EXIT_OK, EXIT_PROBLEMS = 0, 2
MAX_PROBLEMS_SHOWN = 200


def validate(manifest: str, config: Config) -> tuple[int, dict[str, Any]]:
    """Check every line: counts by capability and source kind, problems, a cost estimate."""
    by_cap: Counter[str] = Counter()
    by_source: dict[str, Counter[str]] = defaultdict(Counter)
    by_service: Counter[str] = Counter()
    problems: list[dict[str, Any]] = []
    rejected = 0
    for item in read_manifest(manifest):
        if isinstance(item, Rejected):
            rejected += 1
            if len(problems) < MAX_PROBLEMS_SHOWN:
                problems.append(item.to_dict())
            continue
        assert isinstance(item, Job)
        by_cap[item.capability] += 1
        by_source[item.capability][item.source_kind] += 1
        by_service[item.service_id] += 1
    cost, per_token, unpriced = estimate_manifest_cost(by_service, config)
    report = {
        "manifest": manifest,
        "valid_items": sum(by_cap.values()),
        "rejected_lines": rejected,
        "by_capability": {cap: {"items": n, "sources": dict(by_source[cap])} for cap, n in by_cap.items()},
        "by_service": dict(by_service),
        "problems": problems,
        "problems_not_shown": max(rejected - len(problems), 0),
        "estimated_cost": round(cost, 6),
        "cost_is_upper_bound": per_token,
        "unpriced_services": unpriced,
    }
    return (EXIT_OK if rejected == 0 else EXIT_PROBLEMS), report


def estimate_manifest_cost(by_service: Counter[str], config: Config) -> tuple[float, bool, list[str]]:
    """Cost if every item succeeds. Per-token prices use `usage_estimates` per item, which makes
    the figure an upper bound (True in the result) rather than an exact price."""
    usage: dict[str, dict[str, float]] = {}
    per_token = False
    for service_id, n in by_service.items():
        estimates = config.usage_estimates.get(service_id, {})
        usage[service_id] = {key: value * n for key, value in estimates.items()}
        priced_units = set(config.prices.get(service_id, {})) - {"request"}
        per_token |= bool(priced_units)
    cost, unpriced = estimate_cost(usage, by_service, config.prices)
    return cost, per_token, unpriced


def format_validate(report: dict[str, Any]) -> str:
    lines = [f"{report['manifest']}: {report['valid_items']} valid items, "
             f"{report['rejected_lines']} rejected lines"]
    for cap, entry in sorted(report["by_capability"].items()):
        sources = ", ".join(f"{k} {v}" for k, v in sorted(entry["sources"].items()))
        lines.append(f"  {cap:<20} {entry['items']:>8}   ({sources})")
    for problem in report["problems"]:
        lines.append(f"  line {problem['line']}: {problem['reason']}")
    if report["problems_not_shown"]:
        lines.append(f"  ... and {report['problems_not_shown']} more problems")
    bound = "at most " if report["cost_is_upper_bound"] else ""
    note = (" (per-token services priced with the per-item usage_estimates in the config: an upper bound)"
            if report["cost_is_upper_bound"] else "")
    lines.append(f"estimated cost if every item succeeds: {bound}{report['estimated_cost']:.4f}{note}")
    if report["unpriced_services"]:
        lines.append(f"  not priced (no price in the config): {', '.join(report['unpriced_services'])}")
    return "\n".join(lines)


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
