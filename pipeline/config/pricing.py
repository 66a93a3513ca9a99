"""What analyses cost by the config's price table: the one home of the cost model, and of
the published prices the config starts from (`default_prices`, `default_usage_estimates`).

- `item_cost` / `item_cost_bound`: one successful submission, likely and pessimistic, from the
  per-item usage guesses (`usage_estimates`); what `validate` estimates and a spend cap reserves.
- `estimate_manifest_cost`: a manifest's worth of them.
- `estimate_cost` / `line_cost`: what finished work cost, from the usage the service reported.
Pure functions of the tables; async tasks are billed on success only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.results import ItemStatus, ResultLine

if TYPE_CHECKING:  # the config reads its default prices from here
    from .load import Config

__all__ = ["BOUND_FACTOR", "CostEstimate", "default_prices", "default_usage_estimates", "estimate_cost",
           "estimate_manifest_cost", "item_cost", "item_cost_bound", "line_cost", "unit_priced", "usage_numbers"]

#: How many times its per-item guess each per-unit usage (tokens, seconds) may reach in the
#: pessimistic figure. Media vary a lot (a long video has many more tokens than a typical
#: one); five times the typical usage covers the long tail of a catalog without making the
#: figure useless. Raise the guesses in `usage_estimates` for catalogs of long media.
BOUND_FACTOR = 5.0


def default_prices() -> dict[str, dict[str, float]]:
    """The config's `prices` by default: the published unit prices (docs/protocol.md, "Prices").
    Keys: "request" is per successful request; any other key is a usage field of that service's
    responses."""
    return {
        "ops-image-analyze-ocr-001": {"request": 0.001},
        "ops-image-analyze-vlm-001": {"token_count": 0.002},
        "ops-object-detect-001": {"request": 0.002},
        "ops-object-detect-face-001": {"request": 0.001},
        "ops-video-segment-001": {},
        "ops-video-snapshot-001": {"request": 0.002},
        "ops-video-summarize-001": {"input_token": 0.002, "output_token": 0.004, "request": 0.001},
        "ops-audio-asr-001": {},
    }


def default_usage_estimates() -> dict[str, dict[str, float]]:
    """The config's `usage_estimates` by default: the per-item usage assumed where the price is
    per token, an upper bound for typical media, not a guarantee (tune them to your catalog)."""
    return {
        "ops-image-analyze-vlm-001": {"token_count": 2000},
        "ops-video-summarize-001": {"input_token": 20000, "output_token": 2000},
    }


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


def estimate_cost(usage: Mapping[str, Mapping[str, float]], successes: Mapping[str, int],
                  prices: Mapping[str, Mapping[str, float]]) -> tuple[float, list[str]]:
    """Estimated cost from usage and the price table; also the service ids with no price."""
    cost = 0.0
    unpriced: list[str] = []
    for service_id in set(usage) | set(successes):
        table = prices.get(service_id)
        if not table:
            if successes.get(service_id):
                unpriced.append(service_id)
            continue
        cost += table.get("request", 0.0) * successes.get(service_id, 0)
        for key, value in usage.get(service_id, {}).items():
            cost += table.get(key, 0.0) * value
    return round(cost, 6), sorted(unpriced)


def line_cost(line: ResultLine, prices: Mapping[str, Mapping[str, float]]) -> float:
    """What a finished item cost by the price table: tasks are billed on success only."""
    if line.status is not ItemStatus.SUCCESS:
        return 0.0
    cost, _ = estimate_cost({line.service_id: usage_numbers(line.usage)}, {line.service_id: 1}, prices)
    return cost


def usage_numbers(usage: Mapping[str, Any] | None) -> dict[str, float]:
    """The numeric entries of a usage report (a line's `usage`), as floats."""
    return {k: float(v) for k, v in (usage or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def unit_priced(service_id: str, prices: Mapping[str, Mapping[str, float]]) -> bool:
    """Whether `service_id` is priced per unit of usage (tokens, seconds): what one of its
    analyses costs is then unknown until the service reports usage."""
    return any(unit != "request" and price for unit, price in (prices.get(service_id) or {}).items())
