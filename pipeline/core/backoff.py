"""Pure retry and poll delay schedules: no I/O, no clock, the random source passed in.

Retries use exponential backoff with *full jitter* (AWS Architecture Blog, "Exponential
Backoff and Jitter", 2015): the n-th delay is uniform in ``[0, min(max_delay, base*factor**(n-1)))``,
which spreads retrying clients apart better than a fixed or half jitter. A ``Retry-After``
from the server overrides the schedule but is capped, so a bad header cannot stall a run.

Polls of an async task grow geometrically from ``first_delay`` to ``max_delay`` with a small
symmetric jitter, so pollers do not move in lockstep.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime

from .errors import ConfigError

__all__ = ["PollPolicy", "RetryPolicy", "parse_retry_after", "poll_delay", "retry_delay"]

Rand = Callable[[], float]  # returns a float in [0, 1), like random.random


@dataclass(frozen=True)
class RetryPolicy:
    """How one request is retried (`core.retries.RetryBudget` spends it).

    ``max_attempts`` counts the requests of non-429 failures, the first included; the delays
    grow from ``base`` by ``factor`` up to ``max_delay``, with full jitter, or follow the
    server's ``Retry-After`` up to ``retry_after_cap``. A 429 never fails a create: after each
    ``max_rate_limited`` 429s in a row a warning says for how long the service has throttled
    (at most once a minute per capability); a status poll hands back to the poller after that
    many, and is polled again later. ``ambiguous_creates`` is how many times a create whose
    outcome is unknown (a timeout or a dropped connection after the body was sent, or a 2xx
    whose body cannot be used) may be sent again: the service may have accepted, and billed,
    the first one, so this budget is small and may be 0.
    """

    base: float = 1.0
    factor: float = 2.0
    max_attempts: int = 5
    max_delay: float = 30.0
    retry_after_cap: float = 60.0
    max_rate_limited: int = 30
    ambiguous_creates: int = 1

    def __post_init__(self) -> None:
        _require(self.base >= 0, "retry.base", "must be >= 0 seconds", self.base)
        _require(self.factor >= 1, "retry.factor", "must be >= 1", self.factor)
        _require(self.max_attempts >= 1, "retry.max_attempts", "must be >= 1", self.max_attempts)
        _require(self.max_delay >= 0, "retry.max_delay", "must be >= 0 seconds", self.max_delay)
        _require(self.retry_after_cap >= 0, "retry.retry_after_cap", "must be >= 0 seconds", self.retry_after_cap)
        _require(self.max_rate_limited >= 1, "retry.max_rate_limited", "must be >= 1", self.max_rate_limited)
        _require(self.ambiguous_creates >= 0, "retry.ambiguous_creates", "must be >= 0", self.ambiguous_creates)


@dataclass(frozen=True)
class PollPolicy:
    """How often an async task's status is checked, and for how long at most (``timeout``, s)."""

    first_delay: float = 5.0
    growth: float = 1.5
    max_delay: float = 30.0
    jitter: float = 0.1
    timeout: float = 3600.0

    def __post_init__(self) -> None:
        _require(self.first_delay >= 0, "polling.first_delay", "must be >= 0 seconds", self.first_delay)
        _require(self.growth >= 1, "polling.growth", "must be >= 1", self.growth)
        _require(self.max_delay >= 0, "polling.max_delay", "must be >= 0 seconds", self.max_delay)
        _require(0 <= self.jitter < 1, "polling.jitter", "must be in [0, 1)", self.jitter)
        _require(self.timeout > 0, "polling.timeout", "must be > 0 seconds", self.timeout)


def _require(ok: bool, key: str, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{expected}, got {value!r}", key=key)


def retry_delay(attempt: int, policy: RetryPolicy, rand: Rand, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...).

    Full jitter: ``rand() * min(max_delay, base * factor**(attempt-1))``. A server's
    ``retry_after`` wins over the schedule, capped at ``policy.retry_after_cap``.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), policy.retry_after_cap)
    exponent = max(attempt, 1) - 1
    try:
        bound = min(policy.max_delay, policy.base * policy.factor**exponent)
    except OverflowError:  # a huge attempt number: the cap applies anyway
        bound = policy.max_delay
    return rand() * bound


def poll_delay(poll_number: int, policy: PollPolicy, rand: Rand) -> float:
    """Seconds to wait before status poll number ``poll_number`` (1 = the first poll after submit).

    ``min(max_delay, first_delay * growth**(n-1))``, spread by ``± jitter`` (a fraction) so
    pollers do not move in lockstep.
    """
    try:
        nominal = min(policy.max_delay, policy.first_delay * policy.growth ** (max(poll_number, 1) - 1))
    except OverflowError:  # a huge poll number: the cap applies anyway
        nominal = policy.max_delay
    spread = 1.0 + policy.jitter * (2.0 * rand() - 1.0)
    return max(nominal * spread, 0.0)


# Delta-seconds per RFC 9110 §10.2.3 is digits only; decimals are accepted because some
# servers send them. A leading minus is matched so negatives clamp to 0 instead of being garbage.
_SECONDS = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Parse a ``Retry-After`` header into seconds from now.

    Accepts integer or decimal seconds and an HTTP-date; a negative number or a date in the
    past gives 0; a missing or unreadable value gives None (fall back to the backoff schedule).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        seconds = float(text)
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(when.timestamp() - now(), 0.0)
