"""The retry budget of one request, as a table: what each failed attempt leads to (wait how long, or
give up) for the three counts (transient failures, 429s, ambiguous creates)."""

from __future__ import annotations

import pytest

from pipeline.core.backoff import RetryPolicy
from pipeline.core.errors import (
    InvalidParameter,
    RateLimited,
    ServerError,
    TransportError,
    UnreadableResponse,
)
from pipeline.core.retries import Failure, RetryBudget, failure_of

T, R, A = Failure.TRANSIENT, Failure.RATE_LIMITED, Failure.AMBIGUOUS
GIVE_UP = None


def one() -> float:
    """rand() at the top of its range: each delay is the whole backoff bound (1, 2, 4, ... s)."""
    return 1.0


def verdicts(policy: RetryPolicy, create: bool, failures: list[Failure],
             retry_after: float | None = None) -> list[float | None]:
    """The delay (or GIVE_UP) after each failure in turn; the request must stop at its first GIVE_UP."""
    budget = RetryBudget(policy, create=create)
    delays: list[float | None] = []
    for failure in failures:
        assert GIVE_UP not in delays, "a failure after the budget gave up"
        verdict = budget.after(failure, one, retry_after)
        budget = verdict.budget
        delays.append(verdict.delay)
        assert verdict.gives_up is (verdict.delay is None)
    return delays


DEFAULT = RetryPolicy()  # 5 attempts, 30 429s, 1 ambiguous create
SMALL = RetryPolicy(max_attempts=3, max_rate_limited=2, ambiguous_creates=1)

CASES = [
    # name, policy, create, failures, the delay after each (GIVE_UP: the request fails)
    ("a poll: 5xx back off 1, 2, 4, 8 s, the fifth fails", DEFAULT, False, [T] * 5, [1.0, 2.0, 4.0, 8.0, GIVE_UP]),
    ("a create: the same for failures that cannot have landed", DEFAULT, True, [T] * 5, [1.0, 2.0, 4.0, 8.0, GIVE_UP]),
    ("one attempt only: the first failure is final", RetryPolicy(max_attempts=1), False, [T], [GIVE_UP]),
    ("a poll's 429s have their own budget", SMALL, False, [R, R], [1.0, GIVE_UP]),
    ("429s do not spend max_attempts", SMALL, False, [T, R, T, T], [1.0, 1.0, 2.0, GIVE_UP]),
    ("failures do not spend the 429 budget", SMALL, False, [R, T, T, R], [1.0, 1.0, 2.0, GIVE_UP]),
    ("429 backoff grows with the 429s alone", SMALL, True, [R, T, R, R], [1.0, 1.0, 2.0, 4.0]),
    ("a create never gives up for 429s", SMALL, True, [R] * 40, [1.0, 2.0, 4.0, 8.0, 16.0] + [30.0] * 35),
    ("an ambiguous create is re-sent once by default", DEFAULT, True, [A, A], [1.0, GIVE_UP]),
    ("no ambiguous budget: the first is final", RetryPolicy(ambiguous_creates=0), True, [A], [GIVE_UP]),
    ("two re-sends allowed: the third ambiguous one is final", RetryPolicy(ambiguous_creates=2), True, [A, A, A],
     [1.0, 2.0, GIVE_UP]),
    ("ambiguous failures spend max_attempts too", RetryPolicy(max_attempts=3, ambiguous_creates=5), True,
     [T, A, T], [1.0, 2.0, GIVE_UP]),
    ("unambiguous failures leave the ambiguous budget alone", DEFAULT, True, [T, T, T, A, A], [1.0, 2.0, 4.0, 8.0,
                                                                                           GIVE_UP]),
]


@pytest.mark.parametrize(("policy", "create", "failures", "expected"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_the_budget_table(policy: RetryPolicy, create: bool, failures: list[Failure],
                          expected: list[float | None]) -> None:
    """Each sequence of failed attempts leads to the documented waits and gives up exactly where the policy says."""
    assert verdicts(policy, create, failures) == expected


def test_counts_are_what_was_spent() -> None:
    """The verdict's budget counts every attempt and each kind of failure, this one included; the old budget is
    left as it was."""
    start = RetryBudget(DEFAULT, create=True)
    budget = start
    for failure in (T, R, A, R):
        budget = budget.after(failure, one).budget
    assert (budget.attempts, budget.failures, budget.rate_limited, budget.ambiguous) == (4, 2, 2, 1)
    assert budget.next_attempt == 5
    assert (start.attempts, start.next_attempt) == (0, 1)


@pytest.mark.parametrize(("retry_after", "expected"), [(3.0, 3.0), (0.0, 0.0), (600.0, 60.0)])
def test_retry_after_wins_capped(retry_after: float, expected: float) -> None:
    """A server's Retry-After replaces the backoff, capped at retry_after_cap, for 429s and failures alike."""
    assert verdicts(DEFAULT, True, [R], retry_after) == [expected]
    assert verdicts(DEFAULT, False, [T], retry_after) == [expected]


def test_a_create_warns_each_max_rate_limited_429s_in_a_row() -> None:
    """A create throttled for long is told to warn at the 2nd, 4th, 6th 429 (max_rate_limited 2); a poll never is."""
    for create, expected in ((True, [2, 4, 6]), (False, [])):
        policy = RetryPolicy(max_rate_limited=2 if create else 7)  # 7: the poll's six 429s stay within its budget
        budget, warned = RetryBudget(policy, create=create), []
        for n in range(1, 7):
            verdict = budget.after(R, one)
            budget = verdict.budget
            if verdict.warn_throttled:
                warned.append(n)
        assert warned == expected


@pytest.mark.parametrize(("error", "create", "failure"), [
    (RateLimited(None, "429"), True, R),
    (RateLimited(None, "429"), False, R),
    (ServerError(None, "500"), True, T),
    (TransportError("Timeout", "no answer"), True, A),  # may have reached the service
    (TransportError("Timeout", "no answer"), False, T),  # a poll bills nothing
    (TransportError("ConnectionError", "refused", maybe_sent=False), True, T),  # never sent
    (UnreadableResponse(None, "not JSON", http_status=200), True, A),  # accepted, so maybe billed
    (UnreadableResponse(None, "not JSON", http_status=200), False, T),
])
def test_failure_of_the_service_errors(error: TransportError, create: bool, failure: Failure) -> None:
    """A create's failure is ambiguous only when its body may have reached the service; a 429 is never ambiguous."""
    assert failure_of(error, create=create) is failure


def test_with_attempts_leaves_the_caught_error_as_it_was() -> None:
    """with_attempts builds a new error of the same class (code, status, maybe_sent kept), the original unchanged."""
    caught = TransportError("Timeout", "no answer", maybe_sent=False, request_id="r-1")
    again = caught.with_attempts(3, note=" (sent twice)")
    assert again is not caught and type(again) is TransportError
    assert (again.attempts, again.message, again.maybe_sent, again.request_id) == (3, "no answer (sent twice)",
                                                                                  False, "r-1")
    assert "no answer (sent twice)" in str(again) and "after 3 attempts" in str(again)
    assert (caught.attempts, caught.message) == (1, "no answer")
    other = InvalidParameter("FileError", "gone").with_attempts(2)
    assert type(other) is InvalidParameter and other.args == ("FileError", "gone")
