"""Prometheus metrics of a run: a node-exporter textfile and a Pushgateway push.

Both are built from the summary dict (`report.summarize`) into a fresh `CollectorRegistry`
each time, so a metric never outlives the run that set it. Every metric is a gauge: a batch
run's figures are a snapshot that starts again with the next run, which is what the
Pushgateway and textfile conventions ask for (a counter that resets would confuse `rate()`).

Names (all prefixed `media_pipeline_`):

=============================================  =============================================
`items{capability,status}`                     status: succeeded, failed, in_flight, queued
`failed_items{capability,code}`                failed items by error code
`skipped_items{capability}`                    done in an earlier session (already counted)
`requests`, `rate_limited_responses`,          this session's traffic, per capability
`retries`, `submits`, `polls` `{capability}`
`request_rate_vs_limit{capability}`            achieved rate / QPS limit (when known)
`estimated_cost{capability}`                   from the config's price table
`usage{capability,key}`                        usage totals (tokens, pages, seconds, ...)
`rejected_lines`, `run_duration_seconds`,      run level
`run_finished`, `exit_code`
`last_update_timestamp_seconds`                every write: a stuck run goes stale
`last_success_timestamp_seconds`               only from a run that ended with exit code 0
=============================================  =============================================

`last_success_timestamp_seconds` is the one alerts hang on ("no success for 26 h"). The
textfile is rewritten whole, so a write that is not a success carries the previous file's
value over (when it exists and parses) instead of dropping the series. The Pushgateway
replaces a group whole on each push (PUT) too, so the success time lives in a group of its
own (`.../instance/<i>/result/success`) that only a successful run pushes to.

prometheus-client (the `metrics` extra) is imported where it is used, so the rest of the
pipeline, and `check_*` (which report it missing as a config error), work without it.

Summaries written by `status` lack this session's traffic counters; absent figures are 0
here, which is also what `summarize()` means when it leaves a zero out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.loggable import host_of, safe_reason
from .pushgateway import push_requests, send

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("pipeline.metrics")

PREFIX = "media_pipeline_"
LAST_SUCCESS = PREFIX + "last_success_timestamp_seconds"
DEFAULT_JOB = "media_pipeline"
#: The most seconds a push may take, both groups together: a dead gateway delays a run's exit by no more.
PUSH_BUDGET_S = 5.0
#: Overrides the host name as the Pushgateway `instance` when `RunMetrics` is given none.
INSTANCE_ENV = "MEDIA_PIPELINE_INSTANCE"

#: Traffic counters `summarize()` writes only when non-zero: (summary key, metric, help).
_TRAFFIC = (
    ("requests", "requests", "HTTP requests sent to the service in this session"),
    ("rate_limited", "rate_limited_responses", "429 answers received in this session"),
    ("retries", "retries", "requests retried in this session"),
    ("submits", "submits", "create/detect requests accepted in this session"),
    ("polls", "polls", "task status checks in this session"),
)


def build_registry(summary: Mapping[str, Any], *, exit_code: int | None, finished: bool,
                   now: float, last_success: float | None) -> CollectorRegistry:
    """A fresh registry holding the summary's figures and the run's metadata."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(PREFIX + name, doc, labels, registry=registry)

    items = gauge("items", "items of this run by status (whole run, all sessions)", ("capability", "status"))
    failed = gauge("failed_items", "failed items by error code", ("capability", "code"))
    skipped = gauge("skipped_items", "items found done by an earlier session (included in items)",
                    ("capability",))
    traffic = {key: gauge(name, doc, ("capability",)) for key, name, doc in _TRAFFIC}
    rate_ratio = gauge("request_rate_vs_limit", "achieved request rate as a fraction of the QPS limit",
                       ("capability",))
    cost = gauge("estimated_cost", "estimated cost from the config's price table", ("capability",))
    usage = gauge("usage", "usage totals reported by the service", ("capability", "key"))

    capabilities = summary.get("capabilities") or {}
    for capability, entry in capabilities.items():
        if not isinstance(entry, Mapping):
            continue
        for status, key in (("succeeded", "succeeded"), ("failed", "failed"),
                            ("in_flight", "in_flight"), ("queued", "queued")):
            items.labels(capability, status).set(_number(entry.get(key)))
        for code, n in (entry.get("failed_by_code") or {}).items():
            failed.labels(capability, str(code)).set(_number(n))
        skipped.labels(capability).set(_number(entry.get("skipped_already_done")))
        for key, metric in traffic.items():
            metric.labels(capability).set(_number(entry.get(key)))
        if "rate_vs_limit" in entry:  # only known when the run had requests and a limit
            rate_ratio.labels(capability).set(_number(entry["rate_vs_limit"]))
        cost.labels(capability).set(_number(entry.get("estimated_cost")))
        for key, value in (entry.get("usage") or {}).items():
            usage.labels(capability, str(key)).set(_number(value))

    gauge("rejected_lines", "manifest lines rejected as invalid").set(_number(summary.get("rejected_lines")))
    catalog = summary.get("catalog")
    if isinstance(catalog, Mapping):  # once the run has ended: tonight's delta against the state it began with
        delta = gauge("catalog_items", "(item, analysis) results by how this run found them against the "
                                       "state: new, changed, unchanged, vanished", ("kind",))
        for kind in ("new", "changed", "unchanged", "vanished"):
            delta.labels(kind).set(_number(catalog.get(kind)))
    if summary.get("wall_time_s") is not None:
        gauge("run_duration_seconds", "wall time of this session so far").set(_number(summary["wall_time_s"]))
    gauge("run_finished", "1 once the run has ended, 0 while it runs").set(1 if finished else 0)
    if exit_code is not None:
        gauge("exit_code", "the run's exit code (0 ok, 1 some failures, 3 resumable, ...)").set(exit_code)
    gauge("last_update_timestamp_seconds", "when these figures were written").set(now)
    if last_success is not None:
        gauge("last_success_timestamp_seconds", "when a run last ended with exit code 0").set(last_success)
    return registry


def write_textfile(path: Path, summary: Mapping[str, Any], *, exit_code: int | None, finished: bool,
                   now: float | None = None) -> None:
    """Write the run's metrics for node-exporter's textfile collector; raises on I/O errors.

    `prometheus_client.write_to_textfile` writes `<path>.<pid>.<thread>` in the same directory
    and renames it over `path` (removing it on error), so a scrape never sees half a file; the
    temp name does not end in `.prom`, so the collector ignores it meanwhile.
    """
    from prometheus_client import write_to_textfile

    now = time.time() if now is None else now
    success = finished and exit_code == 0
    last_success = now if success else previous_last_success(path)
    registry = build_registry(summary, exit_code=exit_code, finished=finished, now=now,
                              last_success=last_success)
    write_to_textfile(str(path), registry)


def previous_last_success(path: Path) -> float | None:
    """The last-success time in an existing textfile, or None when absent or unreadable."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and math.isfinite(sample.value):
                    return float(sample.value)
    except (OSError, ValueError, UnicodeDecodeError):  # a missing or mangled file has no value to keep
        return None
    return None


def textfile_ours(path: Path, limit: int = 1024 * 1024) -> str | None:
    """None when `path` holds nothing but this pipeline's metrics (an earlier run's textfile,
    which is replaced whole, as the textfile collector expects); otherwise why it must not be
    replaced (the run's `--metrics-file` check, `paths.Target.ours`)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        text = None
    ours = (f"{PREFIX}", f"# HELP {PREFIX}", f"# TYPE {PREFIX}")
    if text is not None and len(raw) <= limit and all(
            line.startswith(ours) for line in text.splitlines() if line.strip()):
        return None
    return (f"already exists and is not a metrics textfile this pipeline wrote (every line a {PREFIX}* metric): "
            "move it away or give --metrics-file a path of its own, such as "
            "/var/lib/node_exporter/textfile/media_pipeline.prom")


def push(gateway_url: str, summary: Mapping[str, Any], *, exit_code: int, job: str = DEFAULT_JOB,
         instance: str, timeout: float = PUSH_BUDGET_S, now: float | None = None) -> bool:
    """`push_async` for synchronous callers (not from a running event loop)."""
    return asyncio.run(push_async(gateway_url, summary, exit_code=exit_code, job=job, instance=instance,
                                  timeout=timeout, now=now))


async def push_async(gateway_url: str, summary: Mapping[str, Any], *, exit_code: int, job: str = DEFAULT_JOB,
                     instance: str, timeout: float = PUSH_BUDGET_S, now: float | None = None) -> bool:
    """Push the finished run's metrics to a Pushgateway; True when it took them. Never raises,
    and returns within `timeout` seconds whatever the gateway does (a hang, a trickle).

    The group is `job` + `instance` and is replaced whole; a run that ended with exit code 0
    also replaces `.../result/success` with its success time. Credentials in the URL
    (`https://user:pass@host`) are sent as basic auth, never logged.
    """
    host = host_of(gateway_url)
    try:
        from prometheus_client import CollectorRegistry, Gauge

        now = time.time() if now is None else now
        registry = build_registry(summary, exit_code=exit_code, finished=True, now=now, last_success=None)
        groups: list[tuple[dict[str, str], CollectorRegistry]] = [({"instance": instance}, registry)]
        if exit_code == 0:
            success = CollectorRegistry()
            Gauge(LAST_SUCCESS, "when a run last ended with exit code 0", registry=success).set(now)
            groups.append(({"instance": instance, "result": "success"}, success))
        await send(push_requests(gateway_url, job, groups), gateway=gateway_url, timeout=timeout)
    except Exception as exc:  # a metrics failure must never change the run's outcome
        reason = f"timed out after {timeout:g} s" if isinstance(exc, asyncio.TimeoutError) else safe_reason(exc)
        log.warning("metrics push to %s failed: %s%s", host, reason, _hint(exc))
        return False
    return True


def _hint(exc: BaseException) -> str:
    """What to fix when the gateway refused the push itself (401/403: credentials, 404: address)."""
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return "; the Pushgateway refused the credentials: fix user:password in --pushgateway"
    if status in (404, 405):
        return "; is --pushgateway the Pushgateway's address (without /metrics/...)?"
    return ""


class RunMetrics:
    """What the runner calls: textfile on each progress tick and at the end, push at the end.

    Nothing here raises: a failure is logged once per destination (a textfile that cannot be
    written would otherwise warn on every progress tick) and the run goes on unchanged.
    """

    __slots__ = ("_instance", "_job", "_pushgateway", "_textfile", "_warned")

    def __init__(self, *, textfile: Path | None = None, pushgateway: str | None = None,
                 instance: str | None = None, job: str = DEFAULT_JOB) -> None:
        self._textfile = textfile  # --metrics-file, or None
        self._pushgateway = pushgateway  # --pushgateway, or None
        # Pushgateway grouping key. It must stay the same from run to run (each run replaces
        # its group); a pod's host name does not, hence the variable for schedulers to set.
        self._instance = instance or os.environ.get(INSTANCE_ENV) or socket.gethostname()
        self._job = job
        self._warned: set[str] = set()  # destinations that already logged a failure

    def progress(self, summary: Mapping[str, Any]) -> None:
        """Rewrite the textfile with a live summary (run not finished, no exit code yet)."""
        self._write(summary, exit_code=None, finished=False)

    async def finish(self, summary: Mapping[str, Any], exit_code: int) -> None:
        """Write the final textfile and push to the Pushgateway (in a worker thread)."""
        self._write(summary, exit_code=exit_code, finished=True)
        if self._pushgateway is None:
            return
        await push_async(self._pushgateway, summary, exit_code=exit_code, job=self._job, instance=self._instance)

    def _write(self, summary: Mapping[str, Any], *, exit_code: int | None, finished: bool) -> None:
        if self._textfile is None:
            return
        try:
            write_textfile(self._textfile, summary, exit_code=exit_code, finished=finished)
        except Exception as exc:  # a metrics failure must never change the run's outcome
            if "textfile" not in self._warned:
                self._warned.add("textfile")
                log.warning("metrics textfile %s not written: %s", self._textfile, safe_reason(exc))

    def __repr__(self) -> str:
        gateway = host_of(self._pushgateway) if self._pushgateway else None
        return f"RunMetrics(textfile={self._textfile!s}, pushgateway={gateway}, instance={self._instance})"


# ---- helpers ---------------------------------------------------------------------------------
def _number(value: Any) -> float:
    """A summary figure as a float; anything absent or not a number counts as 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)
