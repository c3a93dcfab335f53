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
async def test_retry_after_pauses_every_submission():
    clock = Clock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttled_for(2.0)
    await limiter.acquire()
    assert clock.now >= 102.0


def test_adaptive_rate_starts_from_retry_after_and_backs_off_once_per_episode():
    clock = Clock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.throttled_for(0.125, generation=0)
    assert limiter.rate == pytest.approx(8.0)
    limiter.throttled_for(0.125, generation=0)  # paced before that decrease
    assert limiter.rate == pytest.approx(8.0)
    limiter.throttled_for(0.125, generation=1)
    assert limiter.rate == pytest.approx(8.0 * RateLimiter.DECREASE)
    before = limiter.rate
    limiter.accepted()
    assert limiter.rate > before


def test_fixed_rate_is_not_changed_by_429():
    limiter = RateLimiter(3.0)
    limiter.throttled_for(0.01)
    assert limiter.rate == 3.0
