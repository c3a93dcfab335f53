"""Submission pacing, on a fake clock."""

from __future__ import annotations

import pytest

from runner.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.anyio
async def test_fixed_rate_spaces_submissions():
    clock = Clock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    for _ in range(9):
        await limiter.acquire()
    assert clock.now == pytest.approx(102.0)


@pytest.mark.anyio
async def test_after_a_429_everyone_pauses_briefly_under_the_new_rate():
    clock = Clock()
    limiter = RateLimiter(5.0, clock=clock, sleep=clock.sleep)
    limiter.throttled_for(30.0)  # a long Retry-After binds only the request that got it
    await limiter.acquire()
    assert clock.now == pytest.approx(100.4)  # two intervals at 5/s


def test_adaptive_rate_starts_from_what_was_accepted_and_retry_after():
    clock = Clock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        limiter.accepted()
    limiter.throttled_for(0.01, generation=0)  # 1/0.01 = 100/s, but 4 were accepted
    assert limiter.rate == pytest.approx(4.0)


def test_adaptive_rate_backs_off_once_per_episode_and_returns_to_the_ceiling():
    limiter = RateLimiter(None)
    limiter.throttled_for(0.125, generation=0)
    assert limiter.rate == pytest.approx(8.0)
    limiter.throttled_for(0.125, generation=0)  # paced before that estimate: no change
    assert limiter.rate == pytest.approx(8.0)
    limiter.throttled_for(0.125, generation=1)
    assert limiter.ceiling == pytest.approx(8.0)
    assert limiter.rate == pytest.approx(8.0 * RateLimiter.DECREASE)
    for _ in range(20):
        limiter.accepted()
    assert 0.95 * 8.0 <= limiter.rate < 8.0 * 1.05


def test_fixed_rate_is_not_changed_by_429():
    limiter = RateLimiter(3.0)
    limiter.throttled_for(0.01)
    assert limiter.rate == 3.0


def test_a_whole_second_retry_after_does_not_cap_the_first_estimate():
    clock = Clock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        limiter.accepted()
    limiter.throttled_for(1.0, generation=0)  # "Retry-After: 1" is rounding, not 1/s
    assert limiter.rate == pytest.approx(4.0)
