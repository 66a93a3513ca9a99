"""The public output line (`ResultLine`), item statuses, and the names of a run's side files.

`ResultLine` is the single definition of the line every consumer reads: the sink writes it,
the report and `status` count it, the demo prints it. Its JSON keys are a stable interface.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import StateError
from .job import OfAnalysis

__all__ = ["ItemStatus", "ResultLine", "RunFiles", "iso"]


class ItemStatus(str, Enum):
    """How an item (or an async task) ended."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch -> `2026-11-25T03:17:34.421Z`."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ResultLine(OfAnalysis):
    """One line of the results file: exactly one per (item, analysis), success or failure.
    `analysis` is the analysis name; an item without `analyses` has its capability's name."""

    id: str
    capability: str
    service_id: str
    status: ItemStatus
    task_id: str | None = None
    data: Any = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    attempts: int = 1
    polls: int = 0
    submitted_at: str | None = None
    finished_at: str | None = None
    elapsed_s: float | None = None
    meta: Any = None
    source_oss: str | None = None
    analysis: str = ""
    #: The source it was computed from (`core.fingerprint.source_of`) and the fingerprint of
    #: source and settings (`core.fingerprint`); None only on lines of earlier versions.
    source: str | None = None
    fingerprint: str | None = None

    @classmethod
    def finished(cls, *, id: str, capability: str, service_id: str, status: ItemStatus,
                 finished_at: float, submitted_at: float | None = None, task_id: str | None = None,
                 data: Any = None, usage: dict[str, Any] | None = None,
                 error: dict[str, Any] | None = None, attempts: int = 1, polls: int = 0,
                 meta: Any = None, source_oss: str | None = None, analysis: str = "",
                 source: str | None = None, fingerprint: str | None = None) -> ResultLine:
        """Build a line from clock readings (seconds since the epoch)."""
        elapsed = round(finished_at - submitted_at, 3) if submitted_at is not None else None
        return cls(id=id, capability=capability, service_id=service_id, status=status, task_id=task_id,
                   data=data, usage=usage, error=error, attempts=attempts, polls=polls,
                   submitted_at=iso(submitted_at), finished_at=iso(finished_at), elapsed_s=elapsed,
                   meta=meta, source_oss=source_oss, analysis=analysis, source=source, fingerprint=fingerprint)

    @property
    def error_code(self) -> str | None:
        return self.error.get("code") if isinstance(self.error, dict) else None

    def to_json(self) -> str:
        """The line's JSON text, without the newline; keys in the documented order."""
        # Built by hand, not dataclasses.asdict: asdict deep-copies `data` (a detection's
        # objects, a transcript's segments) only to serialize it, which cost a third of the
        # client's CPU per item in the client-ceiling benchmark.
        record = {"id": self.id, "analysis": self.analysis, "capability": self.capability,
                  "service_id": self.service_id, "status": self.status.value, "task_id": self.task_id,
                  "data": self.data, "usage": self.usage,
                  "error": self.error, "attempts": self.attempts, "polls": self.polls,
                  "submitted_at": self.submitted_at, "finished_at": self.finished_at,
                  "elapsed_s": self.elapsed_s, "meta": self.meta}
        if self.source_oss is not None:  # only items whose local file went through OSS
            record["source_oss"] = self.source_oss
        if self.fingerprint is not None:
            record["source"] = self.source
            record["fingerprint"] = self.fingerprint
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "results file") -> ResultLine:
        """Parse one line; a line that is not a result line raises `StateError` saying where."""
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(f"{where}: not a JSON line ({exc.msg})") from None
        except UnicodeDecodeError:
            raise StateError(f"{where}: not a JSON line (not UTF-8 text)") from None
        if not isinstance(record, dict):
            raise StateError(f"{where}: not a JSON object")
        missing = [key for key in ("id", "capability", "status") if not isinstance(record.get(key), str)]
        if missing:
            raise StateError(f"{where}: not a result line of this pipeline (no {', '.join(missing)})")
        try:
            status = ItemStatus(record["status"])
        except ValueError:
            raise StateError(f"{where}: unknown status {record['status']!r}") from None
        usage = record.get("usage")
        error = record.get("error")
        attempts = record.get("attempts")
        return cls(
            id=record["id"], capability=record["capability"], service_id=str(record.get("service_id") or ""),
            status=status, task_id=record.get("task_id"), data=record.get("data"),
            usage=usage if isinstance(usage, dict) else None, error=error if isinstance(error, dict) else None,
            attempts=attempts if isinstance(attempts, int) else 0, polls=int(record.get("polls") or 0),
            submitted_at=record.get("submitted_at"), finished_at=record.get("finished_at"),
            elapsed_s=record.get("elapsed_s"), meta=record.get("meta"), source_oss=record.get("source_oss"),
            analysis=analysis if isinstance(analysis := record.get("analysis"), str) else "",
            source=_text(record.get("source")), fingerprint=_text(record.get("fingerprint")))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class RunFiles:
    """Where one run keeps its files: `results.jsonl` -> `results.rejects.jsonl`,
    `results.summary.json`, and the state dir `results.jsonl.state/` unless given."""

    results: Path
    state_dir: Path

    @classmethod
    def for_results(cls, results: Path, state_dir: Path | None = None) -> RunFiles:
        return cls(results, state_dir if state_dir is not None else results.with_name(results.name + ".state"))

    def side(self, kind: str) -> Path:
        return self.results.with_name(f"{self.results.stem}.{kind}")

    @property
    def rejects(self) -> Path:
        return self.side("rejects.jsonl")

    @property
    def summary(self) -> Path:
        return self.side("summary.json")

    @property
    def report(self) -> Path:
        """The HTML run report, written at the end of every run (with the `report` extra)."""
        return self.side("report.html")
