"""The retry budget of one request: after a failed attempt, retry (after how long) or give up.

Pure: no I/O, no clock, the random source passed in. The service client and the upload stage
both keep one `RetryBudget` per request and ask it after each retryable failure; neither counts
attempts itself. Three counts, each against its own part of the `RetryPolicy`:

- a transient failure (5xx, a timeout, a dropped connection, an unusable 2xx) spends one of
  ``max_attempts``, and the backoff grows with these;
- a 429 spends one of ``max_rate_limited`` and leaves ``max_attempts`` alone; a create never
  gives up for 429s (another application can hold the account's quota for minutes: the run is
  slow, not broken) and is told to warn each ``max_rate_limited`` 429s in a row instead;
- an ambiguous create (it may have been accepted, and billed: a timeout or a dropped connection
  after sending, an unusable 2xx) is a transient failure that also spends one of
  ``ambiguous_creates``, so it is re-sent at most that many times, 0 included.

A server's ``Retry-After`` wins over the backoff schedule, capped (`backoff.retry_delay`).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from .backoff import Rand, RetryPolicy, retry_delay
from .errors import RateLimited, RetryableError, TransportError, UnreadableResponse

__all__ = ["Failure", "RetryBudget", "Verdict", "failure_of"]


class Failure(enum.Enum):
    """What a failed attempt was, as the budget counts it."""

    TRANSIENT = "transient"  # against max_attempts
    RATE_LIMITED = "rate_limited"  # against max_rate_limited (never, for a create)
    AMBIGUOUS = "ambiguous"  # a create that may have landed: against max_attempts and ambiguous_creates


def failure_of(err: RetryableError, *, create: bool) -> Failure:
    """How a retryable error of the service counts. A create (or a synchronous call, billed the
    same) is ambiguous when its body may have reached the service: a timeout or a dropped
    connection after connecting (`TransportError.maybe_sent`), or a 2xx it cannot use."""
    if isinstance(err, RateLimited):
        return Failure.RATE_LIMITED
    if create and ((isinstance(err, TransportError) and err.maybe_sent) or isinstance(err, UnreadableResponse)):
        return Failure.AMBIGUOUS
    return Failure.TRANSIENT


@dataclass(frozen=True)
class Verdict:
    """What to do after a failed attempt: wait ``delay`` seconds and try again, or (``delay``
    None) give up. ``budget`` is what has been spent, this failure included."""

    budget: RetryBudget
    delay: float | None
    #: A create has now been answered 429 another ``max_rate_limited`` times in a row: say so.
    warn_throttled: bool = False

    @property
    def gives_up(self) -> bool:
        """Whether the request fails now, with the error of this attempt."""
        return self.delay is None


@dataclass(frozen=True)
class RetryBudget:
    """What one request has spent of ``policy`` so far. Immutable: `after` gives the next one.

    ``create``: the request creates something billable (a task, or a synchronous call's
    answer): never given up for 429s, and its ambiguous failures counted."""

    policy: RetryPolicy
    create: bool = False
    attempts: int = 0  # attempts that failed so far
    failures: int = 0  # transient failures (ambiguous ones included), against max_attempts
    rate_limited: int = 0  # 429s, against max_rate_limited
    ambiguous: int = 0  # creates that may have landed, against ambiguous_creates

    @property
    def next_attempt(self) -> int:
        """The number of the attempt about to be made (1 for the first)."""
        return self.attempts + 1

    def after(self, failure: Failure, rand: Rand, retry_after: float | None = None) -> Verdict:
        """The verdict on failed attempt number `next_attempt`, which met `failure` (and the
        server's `retry_after`, in seconds, if it sent one)."""
        policy = self.policy
        spent = dataclasses.replace(self, attempts=self.attempts + 1)
        warn = False
        if failure is Failure.RATE_LIMITED:
            spent = dataclasses.replace(spent, rate_limited=self.rate_limited + 1)
            step = spent.rate_limited
            exhausted = not self.create and step >= policy.max_rate_limited
            warn = self.create and step % policy.max_rate_limited == 0
        else:
            spent = dataclasses.replace(spent, failures=self.failures + 1)
            step = spent.failures
            exhausted = step >= policy.max_attempts
            if failure is Failure.AMBIGUOUS:
                spent = dataclasses.replace(spent, ambiguous=self.ambiguous + 1)
                exhausted = exhausted or spent.ambiguous > policy.ambiguous_creates
        if exhausted:
            return Verdict(spent, None, warn)
        return Verdict(spent, retry_delay(step, policy, rand, retry_after), warn)
