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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.load import Config
from ..core.exit_codes import ExitCode
from ..core.job import Job
from ..manifest.reader import Rejected, Skipped, read_manifest
from ..upload.files import distinct_contents
from ..upload.stage import goes_to_oss

__all__ = ["BOUND_FACTOR", "CostEstimate", "estimate_manifest_cost", "format_validate", "item_cost",
           "item_cost_bound", "validate"]

#: How many times its per-item guess each per-unit usage (tokens, seconds) may reach in the
#: pessimistic figure. Media vary a lot (a long video has many more tokens than a typical
#: one); five times the typical usage covers the long tail of a catalog without making the
#: figure useless. Raise the guesses in `usage_estimates` for catalogs of long media.
BOUND_FACTOR = 5.0
MAX_PROBLEMS_SHOWN = 200
NO_ITEMS = "the manifest has no items"


@dataclass(frozen=True)
class CostEstimate:
    """What a manifest costs if every item succeeds once, in the config's currency."""

    likely: float
    bound: float
    #: Service ids with no price in the config (they add nothing to either figure).
    unpriced: list[str]
    #: "service_id: unit" pairs priced per unit with no usage guess (they add nothing either).
    unestimated: list[str]


def _unit_costs(service_id: str, config: Config, factor: float) -> float:
    prices: Mapping[str, float] = config.prices.get(service_id) or {}
    estimates: Mapping[str, float] = config.usage_estimates.get(service_id) or {}
    per_unit = sum(price * estimates.get(unit, 0.0) for unit, price in prices.items() if unit != "request")
    return prices.get("request", 0.0) + factor * per_unit


def item_cost(service_id: str, config: Config) -> float:
    """Likely cost of one successful submission of `service_id`: the request price plus each
    per-unit price times its per-item guess in `config.usage_estimates` (0 when unpriced)."""
    return _unit_costs(service_id, config, 1.0)


def item_cost_bound(service_id: str, config: Config) -> float:
    """Pessimistic cost of one submission of `service_id`: the request price plus each per-unit
    price times `BOUND_FACTOR` times its per-item guess (0 when unpriced). Pure; what a spend
    cap reserves before each submission."""
    return _unit_costs(service_id, config, BOUND_FACTOR)


def estimate_manifest_cost(by_service: Mapping[str, int], config: Config) -> CostEstimate:
    """Likely and pessimistic cost of `by_service` (valid items per service id), if all succeed."""
    likely = bound = 0.0
    unpriced: list[str] = []
    unestimated: list[str] = []
    for service_id, n in sorted(by_service.items()):
        prices = config.prices.get(service_id) or {}
        if not prices:
            unpriced.append(service_id)
            continue
        estimates = config.usage_estimates.get(service_id) or {}
        unestimated += [f"{service_id}: {unit}" for unit in prices if unit != "request" and unit not in estimates]
        likely += n * item_cost(service_id, config)
        bound += n * item_cost_bound(service_id, config)
    return CostEstimate(round(likely, 6), round(bound, 6), unpriced, unestimated)


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
