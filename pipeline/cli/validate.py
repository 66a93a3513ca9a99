"""`validate`: check every manifest line without touching the network, and estimate the cost.

It reads the manifest through the same `read_manifest` / `validate_record` as `run` (with the
same `--analyses` and config `outputs`), so it passes exactly the items a run would accept. The
report counts valid items and their analyses (an item has one per capability it runs), the
analyses by capability and source kind and by name, lists each problem with its line number,
and gives two cost figures in the config's currency, counted per analysis:

- ``estimated_cost`` (likely): per success, the request price plus every per-unit price times
  the per-item usage guess in ``config.usage_estimates``;
- ``estimated_cost_bound`` (pessimistic): the same with every per-unit usage at
  `BOUND_FACTOR` times its guess (`item_cost_bound`). Per-token services have no hard
  ceiling, so this is a planning bound, not a guarantee; per-request prices are exact.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config.load import Config
from ..config.pricing import BOUND_FACTOR, estimate_manifest_cost
from ..core.exit_codes import ExitCode
from ..core.job import Job
from ..manifest.reader import Rejected, Skipped, read_manifest
from ..upload.files import distinct_contents
from ..upload.stage import goes_to_oss

__all__ = ["format_validate", "validate"]

MAX_PROBLEMS_SHOWN = 200
NO_ITEMS = "the manifest has no items"


def validate(manifest: str, config: Config, analyses: Sequence[str] | None = None) -> tuple[ExitCode, dict[str, Any]]:
    """Check every line: counts of items and analyses (by capability and source kind, by name),
    problems, a cost estimate. `analyses` (``--analyses``) are the capabilities of items that
    name neither capability nor analyses.

    Returns `ExitCode.OK` when every line is a valid item, `ExitCode.PARTIAL` when some lines
    were rejected or there are no items at all. A manifest that cannot be opened, or an unknown
    name in `analyses`, raises `ManifestError` (the CLI's exit 2).
    """
    items = 0
    last_item: tuple[int, str] | None = None  # an item's Jobs come one after another
    by_name: Counter[str] = Counter()
    by_cap: Counter[str] = Counter()
    by_source: dict[str, Counter[str]] = defaultdict(Counter)
    by_service: Counter[str] = Counter()
    problems: list[dict[str, Any]] = []
    rejected = 0
    uploads = config.upload.enabled
    to_upload: set[str] = set()  # the local files that go through OSS
    for item in read_manifest(manifest, uploads=uploads, analyses=analyses, outputs=config.outputs):
        if isinstance(item, Rejected):
            rejected += 1
            if len(problems) < MAX_PROBLEMS_SHOWN:
                problems.append(item.to_dict())
            continue
        assert not isinstance(item, Skipped)  # only a resume's `skip` makes these
        assert isinstance(item, Job)
        if (item.line, item.id) != last_item:
            items, last_item = items + 1, (item.line, item.id)
        by_name[item.analysis] += 1
        by_cap[item.capability] += 1
        by_source[item.capability][item.source_kind] += 1
        by_service[item.service_id] += 1
        if (uploads and item.source_kind == "path" and item.source not in to_upload
                and goes_to_oss(item.capability, os.stat(item.source).st_size, always=config.upload.always)):
            to_upload.add(item.source)
    if not by_cap and not rejected:
        problems.append({"line": None, "id": None, "reason": NO_ITEMS})
    cost = estimate_manifest_cost(by_service, config)
    upload_files, upload_bytes = distinct_contents(Path(source) for source in sorted(to_upload))
    report = {
        "manifest": manifest,
        "valid_items": items,
        "analyses": sum(by_name.values()),
        "rejected_lines": rejected,
        # "items" here counts analyses of the capability (one per item that runs it).
        "by_capability": {cap: {"items": n, "sources": dict(by_source[cap])} for cap, n in by_cap.items()},
        "by_analysis": dict(by_name),
        "by_service": dict(by_service),
        "problems": problems,
        "problems_not_shown": max(rejected - MAX_PROBLEMS_SHOWN, 0),
        "estimated_cost": cost.likely,
        "estimated_cost_bound": cost.bound,
        "currency": config.currency,
        "cost_bound_factor": BOUND_FACTOR,
        "unpriced_services": cost.unpriced,
        "usage_without_estimate": cost.unestimated,
        # Content-addressed: byte-identical files (and one file under several paths) upload once.
        "uploads": {"files": upload_files, "bytes": upload_bytes},
    }
    clean = rejected == 0 and bool(by_cap)
    return (ExitCode.OK if clean else ExitCode.PARTIAL), report


def format_validate(report: Mapping[str, Any]) -> str:
    """The `validate` report as text, for a terminal."""
    lines = [f"{report['manifest']}: {report['valid_items']} valid items, "
             f"{report['rejected_lines']} rejected lines"]
    if report["analyses"]:
        names = ", ".join(f"{name} {n}" for name, n in report["by_analysis"].items())
        lines.append(f"  {report['valid_items']} items, {report['analyses']} analyses ({names})")
    for cap, entry in sorted(report["by_capability"].items()):
        sources = ", ".join(f"{k} {v}" for k, v in sorted(entry["sources"].items()))
        lines.append(f"  {cap:<20} {entry['items']:>8}   ({sources})")
    for problem in report["problems"]:
        where = f"line {problem['line']}: " if problem["line"] is not None else ""
        lines.append(f"  {where}{problem['reason']}")
    if report["problems_not_shown"]:
        lines.append(f"  ... and {report['problems_not_shown']} more problems")
    if report["uploads"]["files"]:
        lines.append(f"to upload to OSS: {report['uploads']['files']} files, "
                     f"{report['uploads']['bytes'] / 1e6:.1f} MB")
    currency = report["currency"]
    lines.append(f"estimated cost if every item succeeds: about {report['estimated_cost']:.4f} {currency}, "
                 f"at most {report['estimated_cost_bound']:.4f} {currency}")
    lines.append(f"  (about: per-item usage_estimates from the config; at most: every per-unit usage at "
                 f"{report['cost_bound_factor']:g}x its estimate)")
    if report["unpriced_services"]:
        lines.append(f"  not priced (no price in the config): {', '.join(report['unpriced_services'])}")
    if report["usage_without_estimate"]:
        lines.append(f"  priced per unit with no usage estimate (counted as 0): "
                     f"{', '.join(report['usage_without_estimate'])}")
    return "\n".join(lines)
