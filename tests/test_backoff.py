"""Pure retry and poll schedules: jitter bounds, caps, Retry-After parsing."""

from __future__ import annotations

import pytest

from pipeline.core.backoff import PollPolicy, RetryPolicy, parse_retry_after, poll_delay, retry_delay
from pipeline.core.errors import ConfigError


def const(value: float):
    return lambda: value


def test_retry_policy_defaults_match_the_docs():
    """The default retry policy is the documented one: 1 s doubling, 5 attempts, Retry-After capped at 60 s."""
    p = RetryPolicy()
    assert (p.base, p.factor, p.max_attempts, p.max_delay, p.retry_after_cap) == (1.0, 2.0, 5, 30.0, 60.0)
    assert p.max_rate_limited > p.max_attempts


@pytest.mark.parametrize(("attempt", "bound"),
                         [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (50, 30.0)])
def test_retry_delay_bound_doubles_then_caps(attempt, bound):
    """With rand() near 1 the delay is the bound 1, 2, 4, 8, … capped at max_delay."""
    assert retry_delay(attempt, RetryPolicy(), const(1.0), None) == pytest.approx(bound)


@pytest.mark.parametrize("attempt", [1, 3, 10])
def test_retry_delay_full_jitter(attempt):
    """Full jitter: rand()=0 gives 0, rand()=0.5 gives half the bound."""
    p = RetryPolicy()
    bound = min(p.max_delay, p.base * p.factor ** (attempt - 1))
    assert retry_delay(attempt, p, const(0.0), None) == 0.0
    assert retry_delay(attempt, p, const(0.5), None) == pytest.approx(bound / 2)


def test_retry_delay_huge_attempt_does_not_overflow():
    """An absurd attempt number still yields the capped delay instead of an OverflowError."""
    assert retry_delay(10_000, RetryPolicy(), const(1.0), None) == 30.0


def test_ambiguous_creates_budget_is_small_and_may_be_zero():
    """A create whose outcome is unknown may be resent once by default, and 0 (never) is allowed."""
    assert RetryPolicy().ambiguous_creates == 1
    assert RetryPolicy(ambiguous_creates=0).ambiguous_creates == 0


@pytest.mark.parametrize(("retry_after", "expected"),
                         [(3.0, 3.0), (0.0, 0.0), (59.5, 59.5), (600.0, 60.0), (-5.0, 0.0)])
def test_retry_after_wins_and_is_capped(retry_after, expected):
    """A server Retry-After replaces the jittered schedule, capped at retry_after_cap."""
    assert retry_delay(1, RetryPolicy(), const(0.0), retry_after) == expected


def test_retry_after_cap_is_configurable():
    """retry_after_cap changes the ceiling on a server's Retry-After."""
    assert retry_delay(1, RetryPolicy(retry_after_cap=5.0), const(0.0), 600.0) == 5.0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"factor": 0.5}, {"base": -1}, {"max_rate_limited": 0}, {"retry_after_cap": -1},
     {"ambiguous_creates": -1}],
)
def test_retry_policy_rejects_nonsense(kwargs):
    """A nonsensical retry policy fails at construction, naming the key."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**kwargs)
    assert f"retry.{next(iter(kwargs))}" in str(info.value)


NOW = 1_700_000_000.0  # a fixed clock for HTTP-date cases


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("-4", 0.0),
        ("-0.5", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("3s", None),
        ("1e3", None),
        ("1_000", None),
        ("inf", None),
        ("nan", None),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),  # NOW + 30 s
        ("Tue, 14 Nov 2023 22:13:20 GMT", 0.0),  # exactly now
        ("Mon, 13 Nov 2023 00:00:00 GMT", 0.0),  # in the past
        ("Tue, 14 Nov 2023 22:14:20 -0000", 60.0),
        ("Tue, 99 Nov 2023 22:13:50 GMT", None),
    ],
)
def test_parse_retry_after(value, expected):
    """Retry-After parses seconds (int or decimal) and HTTP-dates; garbage is None, the past and negatives 0."""
    assert parse_retry_after(value, now=const(NOW)) == expected


def test_poll_policy_defaults():
    """The default poll schedule starts at the documented ~5 s."""
    p = PollPolicy()
    assert (p.first_delay, p.growth, p.max_delay, p.jitter, p.timeout) == (5.0, 1.5, 30.0, 0.1, 3600.0)


def test_poll_delay_grows_then_caps():
    """Without jitter (rand()=0.5) delays grow by `growth` from first_delay and stop at max_delay."""
    p = PollPolicy()
    delays = [poll_delay(n, p, const(0.5)) for n in range(1, 9)]
    assert delays == pytest.approx([5.0, 7.5, 11.25, 16.875, 25.3125, 30.0, 30.0, 30.0])


@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_poll_delay_jitter_bounds(n):
    """Jitter moves a poll at most ± jitter fraction of its nominal delay."""
    p = PollPolicy()
    nominal = poll_delay(n, p, const(0.5))
    assert poll_delay(n, p, const(0.0)) == pytest.approx(nominal * 0.9)
    assert poll_delay(n, p, const(1.0)) == pytest.approx(nominal * 1.1)


def test_poll_delay_huge_poll_number_does_not_overflow():
    """An absurd poll number still yields the capped delay instead of an OverflowError."""
    assert poll_delay(10_000, PollPolicy(), const(0.5)) == pytest.approx(30.0)


def test_poll_policy_rejects_nonsense():
    """A nonsensical poll policy fails at construction, naming the key."""
    with pytest.raises(ConfigError, match=r"polling\.jitter"):
        PollPolicy(jitter=1.5)
    with pytest.raises(ConfigError, match=r"polling\.growth"):
        PollPolicy(growth=0.5)
