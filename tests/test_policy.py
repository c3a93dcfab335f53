"""Polling and backoff timings."""

from __future__ import annotations

import itertools
import random

from runner.policy import Timing


def test_first_poll_is_near_the_estimate_then_intervals_grow_to_a_cap():
    timing = Timing(jitter=0)
    delays = list(itertools.islice(timing.poll_delays(10, random.Random(1)), 12))
    assert delays[0] == 8.5
    assert delays[1] == timing.poll_start
    assert delays == delays[:1] + sorted(delays[1:])
    assert max(delays[1:]) == timing.poll_max


def test_backoff_doubles_and_never_undercuts_retry_after():
    timing = Timing(jitter=0)
    rng = random.Random(1)
    assert [timing.backoff(n, rng) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert timing.backoff(1, rng, retry_after=30) == 30


def test_scaled_timing_shrinks_every_wait():
    fast = Timing(jitter=0).scaled(0.01)
    assert next(fast.poll_delays(10, random.Random())) == 0.085
    assert fast.backoff(1, random.Random()) == 0.01
