"""Strict sliding-window rate limiting (a sliding log: a deque of accepted timestamps).

A request at time ``t`` is accepted when fewer than ``limit`` requests were accepted in the
half-open window ``(t - length, t]``. Rejected requests are not logged, so a client that backs
off is not punished for having asked. This is stricter than a token bucket: no burst above
the limit is ever possible, in any window, including right after start or an idle period.
"""

from __future__ import annotations

from collections import deque

#: The smallest wait ``try_acquire`` reports for a refusal: 0.0 is reserved for "accepted",
#: so a refusal that lands exactly on a slot's edge must still be a positive number.
MIN_REFUSAL_WAIT = 1e-6


class SlidingWindow:
    """At most ``limit`` accepted events in any window of ``length`` seconds."""

    __slots__ = ("_stamps", "length", "limit")

    def __init__(self, limit: int, length: float) -> None:
        self.limit = limit  # events allowed per window
        self.length = length  # window length in (real) seconds
        self._stamps: deque[float] = deque()  # times of accepted events, oldest first

    def _prune(self, now: float) -> None:
        horizon = now - self.length
        stamps = self._stamps
        while stamps and stamps[0] <= horizon:
            stamps.popleft()

    def try_acquire(self, now: float) -> float:
        """Log an event and return 0.0, or return the seconds until a slot frees (not logged)."""
        self._prune(now)
        if len(self._stamps) < self.limit:
            self._stamps.append(now)
            return 0.0
        # The oldest event in the window leaves it `length` after it happened.
        return max(self._stamps[0] + self.length - now, MIN_REFUSAL_WAIT)

    def __repr__(self) -> str:
        return f"SlidingWindow(limit={self.limit}, length={self.length}, in_window={len(self._stamps)})"


class WindowPeak:
    """The largest number of events seen in any window of ``length`` seconds (a measurement)."""

    __slots__ = ("_stamps", "length", "peak")

    def __init__(self, length: float) -> None:
        self.length = length  # window length in (real) seconds
        self.peak = 0  # maximum events observed in one window so far
        self._stamps: deque[float] = deque()  # times of events still inside the window

    def observe(self, now: float) -> int:
        """Record an event at ``now``; returns the count in the window ending at ``now``.

        The busiest window can always be slid right until it ends on an event, so checking
        the count at each event finds the true maximum.
        """
        horizon = now - self.length
        stamps = self._stamps
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        stamps.append(now)
        self.peak = max(self.peak, len(stamps))
        return len(stamps)
