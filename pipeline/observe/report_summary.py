"""`ReportData` from what every run already writes: the summary (`results.summary.json`, the dict
`report.summarize` makes) and the FAILED result lines. This is the whole report of a state dir
from before the run history and time series existed, and the part of every report they do not
give: outcome, per capability, failures by code with examples. Pure: the caller reads the files.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .report_data import CapabilityRow, FailureExample, FailureGroup, Failures, Outcome, ReportData

__all__ = ["EXAMPLES_PER_CODE", "failures_from", "from_summary"]

#: Example failures kept per error code (the report shows this many).
EXAMPLES_PER_CODE = 3


def from_summary(summary: Mapping[str, Any], *, title: str, generated_at: float, started: float | None = None,
                 live: bool = False, limits: Mapping[str, float] | None = None, currency: str = "CNY",
                 failures: Failures | None = None) -> ReportData:
    """The report of a run known only by its summary. `limits` (requests/s by capability, from
    the config) fills in the limit where the summary has no rate (a session under a few seconds);
    `failures` is `failures_from(...)`, or codes without examples when None. A live run has no
    exit code yet; a finished one's summary must carry it (`run` writes `exit_code`)."""
    if live:
        outcome = Outcome(None, "running")
    elif summary.get("exit_code") is None:
        raise ValueError("the summary has no exit_code: give the summary a finished run wrote "
                         "(results.summary.json), or live=True for a run still going")
    else:
        outcome = Outcome(int(summary["exit_code"]), str(summary.get("outcome") or ""), summary.get("reason"))
    rows = tuple(_row(name, entry, (limits or {}).get(name))
                 for name, entry in (summary.get("capabilities") or {}).items())
    return ReportData(
        title=title, generated_at=generated_at, started=started, outcome=outcome, capabilities=rows,
        wall_time_s=summary.get("wall_time_s"), live=live, currency=currency,
        rejected_lines=int(summary.get("rejected_lines") or 0),
        failures=failures if failures is not None else failures_from(summary, (), not_retried=()))


def _row(name: str, entry: Mapping[str, Any], limit: float | None) -> CapabilityRow:
    rate, ratio = entry.get("request_rate"), entry.get("rate_vs_limit")
    if limit is None and rate and ratio:
        limit = rate / ratio  # the summary rounds both to 3 places: close enough for a table
    return CapabilityRow(
        name=name, succeeded=int(entry.get("succeeded", 0)), failed=int(entry.get("failed", 0)),
        skipped=int(entry.get("skipped_already_done", 0)), requests=int(entry.get("requests", 0)),
        rate_limited=int(entry.get("rate_limited", 0)), request_rate=rate, limit=limit,
        cost=float(entry.get("estimated_cost", 0.0)))


def failures_from(summary: Mapping[str, Any], failed_lines: Iterable[Mapping[str, Any]], *,
                  not_retried: Collection[str], retry_command: str | None = None) -> Failures:
    """Failures by error code, most frequent first: the counts from the summary (every session),
    the first `EXAMPLES_PER_CODE` examples of each from `failed_lines` (result lines, read as a
    stream: memory holds the examples only). `not_retried` is `state.resume.NOT_RETRIED_CODES`."""
    by_code: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for capability, entry in (summary.get("capabilities") or {}).items():
        for code, n in (entry.get("failed_by_code") or {}).items():
            by_code[code][capability] = int(n)
    examples: defaultdict[str, list[FailureExample]] = defaultdict(list)
    for line in failed_lines:
        error = line.get("error") or {}
        code = str(error.get("code") or "Unknown")
        if line.get("status") == "FAILED" and len(examples[code]) < EXAMPLES_PER_CODE:
            examples[code].append(FailureExample(str(line.get("id")), str(line.get("analysis") or line.get(
                "capability") or ""), str(error.get("message") or "")))
    groups = [FailureGroup(code=code, count=sum(caps.values()), examples=tuple(examples.get(code, ())),
                           by_capability=dict(caps), retried=code not in not_retried)
              for code, caps in by_code.items()]
    groups.sort(key=lambda g: (-g.count, g.code))
    return Failures(groups=tuple(groups), retry_command=retry_command if groups else None)
