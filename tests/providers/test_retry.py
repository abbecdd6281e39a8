"""The shared retry policy: only transient errors are retried, with jittered, capped backoff."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from tradeos_lab.errors import (
    DependencyUnavailable,
    ProviderError,
    ProviderRateLimited,
    RateLimited,
)
from tradeos_lab.providers import TokenBucket
from tradeos_lab.retry import RetryPolicy, parse_retry_after, retry_call


class Flaky:
    """Fails with the given errors, in order, then returns 'ok'; counts its calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


QUICK = RetryPolicy(attempts=4, base=0.001, cap=0.004)


def test_transient_errors_are_retried_until_success() -> None:
    call = Flaky(DependencyUnavailable("down"), DependencyUnavailable("down"))
    assert retry_call(call, what="fetch", policy=QUICK) == "ok"
    assert call.calls == 3


def test_permanent_errors_are_raised_at_once() -> None:
    call = Flaky(ProviderError("404"))
    with pytest.raises(ProviderError, match="404"):
        retry_call(call, what="fetch", policy=QUICK)
    assert call.calls == 1


def test_giving_up_says_how_often_it_tried_and_keeps_the_error_kind() -> None:
    call = Flaky(*[DependencyUnavailable("timed out")] * 4)
    with pytest.raises(DependencyUnavailable, match="fetch failed after 4 attempts: timed out"):
        retry_call(call, what="fetch", policy=QUICK)
    assert call.calls == 4


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        delays = [policy.backoff(attempt) for _ in range(2000)]
        assert min(delays) >= 0
        assert max(delays) <= ceiling
        assert max(delays) > 0.9 * ceiling  # spread over the whole interval, not fixed
        assert min(delays) < 0.1 * ceiling


def test_retry_after_sets_the_wait() -> None:
    call = Flaky(ProviderRateLimited("429", retry_after=0.3))
    began = time.monotonic()
    assert retry_call(call, what="fetch", policy=QUICK) == "ok"
    assert time.monotonic() - began >= 0.3


def test_a_retry_after_beyond_our_patience_fails_fast() -> None:
    call = Flaky(ProviderRateLimited("429", retry_after=600))
    with pytest.raises(RateLimited, match="asked to wait 600s"):
        retry_call(call, what="fetch", policy=RetryPolicy(max_retry_after=60))
    assert call.calls == 1


def test_sleep_is_pluggable_so_a_shutdown_can_cut_the_wait_short() -> None:
    stop = threading.Event()
    stop.set()
    policy = RetryPolicy(attempts=2, base=30, cap=30, sleep=stop.wait)
    began = time.monotonic()
    assert retry_call(Flaky(DependencyUnavailable("down")), what="fetch", policy=policy) == "ok"
    assert time.monotonic() - began < 10  # far below the 30 s the policy would have slept


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 2 ", 2.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_headers_parse_as_seconds_or_dates(
    header: str | None, seconds: float | None
) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base=-1)


def test_token_bucket_allows_a_burst_then_paces() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    # a rate whose interval is exact in binary, so the fake clock lands on whole tokens
    bucket = TokenBucket(rate=4, capacity=3, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        bucket()
    assert slept == []  # the burst is free
    for _ in range(5):
        bucket()
    assert slept == [0.25] * 5


def test_token_bucket_is_shared_safely_between_threads() -> None:
    bucket = TokenBucket(rate=100, capacity=1)
    began = time.monotonic()
    threads = [threading.Thread(target=lambda: [bucket() for _ in range(5)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - began >= 19 / 100 * 0.95
