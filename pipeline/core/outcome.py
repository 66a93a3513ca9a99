"""How a run ended, decided from the whole run (every session), not from this session alone.

`decide()` is the single place that maps (why the run stopped, how many items failed in the
whole run, how many manifest lines were rejected) to an outcome and an exit code; `run` and
`status` both use it, so they always agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .exit_codes import ExitCode

__all__ = ["NO_ITEMS", "UNFINISHED", "RunOutcome", "Stop", "StopReason", "decide", "is_run_fault"]


class StopReason(str, Enum):
    """Why a run stopped before its manifest was done."""

    INTERRUPTED = "interrupted"
    TIME_LIMIT = "time limit"
    UNREACHABLE = "service unreachable"
    AUTH = "API key refused"
    OSS_AUTH = "OSS credentials refused"
    THRESHOLD = "failure threshold"
    SPEND_CAP = "spend cap"

    @property
    def exit_code(self) -> ExitCode:
        return _EXIT[self]

    @property
    def drains(self) -> bool:
        """Stop taking items, but poll the tasks already accepted to their end (their cost is
        committed) — rather than leaving them to the next run."""
        return self in (StopReason.TIME_LIMIT, StopReason.SPEND_CAP)

    @property
    def immediate(self) -> bool:
        """Every further call would fail the same way: do not wait for calls on the wire. (OSS
        refusing its key pair is not: the service's creates already sent may still be accepted,
        and their task ids must be recorded.)"""
        return self in (StopReason.AUTH, StopReason.UNREACHABLE)


_EXIT = {
    StopReason.INTERRUPTED: ExitCode.INTERRUPTED,
    StopReason.TIME_LIMIT: ExitCode.INTERRUPTED,
    StopReason.UNREACHABLE: ExitCode.INTERRUPTED,
    StopReason.AUTH: ExitCode.AUTH,
    StopReason.OSS_AUTH: ExitCode.AUTH,
    StopReason.THRESHOLD: ExitCode.THRESHOLD,
    StopReason.SPEND_CAP: ExitCode.SPEND_CAP,
}


@dataclass(frozen=True)
class Stop:
    reason: StopReason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"

    def to_record(self) -> dict[str, str]:
        return {"reason": self.reason.value, "detail": self.detail}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Stop | None:
        """The stop a record describes; None for no record or one this version cannot read."""
        try:
            return cls(StopReason(record["reason"]), str(record["detail"])) if record else None
        except (ValueError, KeyError, TypeError):
            return None


#: What the checkpoint says while a session runs, until it records how it ended: a session that
#: never got that far (kill -9, a full disk, a crash) is a stop a resume carries on from.
#: The summary's reason for exit 1 with nothing failed or rejected: the catalog held no items.
NO_ITEMS = "the catalog held no items"

UNFINISHED = Stop(StopReason.INTERRUPTED, "the last session did not finish (killed, or stopped by an "
                  "error such as a full disk); run the same command again to resume")


class RunOutcome(str, Enum):
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed with failures"
    STOPPED = "stopped"


def decide(stop: Stop | None, *, failed: int, rejected: int, empty: bool = False) -> tuple[RunOutcome, ExitCode]:
    """The outcome and exit code of the whole run: a stop wins; then any failed item or
    rejected line in any session, or a catalog with no items at all (`validate` says "no
    items", exit 1), makes it "completed with failures" (exit 1)."""
    if stop is not None:
        return RunOutcome.STOPPED, stop.reason.exit_code
    if failed or rejected or empty:
        return RunOutcome.COMPLETED_WITH_FAILURES, ExitCode.PARTIAL
    return RunOutcome.COMPLETED, ExitCode.OK


#: Codes of failures that say the run itself is broken (the service or the network), not
#: the item: these feed the failure threshold. A 400 is the item's own fault.
TRANSPORT_CODES = frozenset({"Timeout", "ConnectionError"})
#: A 2xx whose body is not the service's (a proxy's page, say), after every retry.
UNREADABLE_CODE = "UnreadableResponse"


def is_run_fault(error_code: str | None, http_status: int | None) -> bool:
    """Whether a failed item's error means the run is broken (5xx, 429, timeouts, dropped
    connections after every retry) rather than the item being bad."""
    if http_status is None:
        return error_code in TRANSPORT_CODES
    return http_status >= 500 or http_status == 429 or error_code == UNREADABLE_CODE
