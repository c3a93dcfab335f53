"""Polling and backoff timings."""

from __future__ import annotations

import itertools
import random

import pytest

from runner.policy import FirstPoll, Timing


def test_polls_step_briefly_after_the_first_then_space_out_to_a_cap():
    timing = Timing(jitter=0)
    delays = list(itertools.islice(timing.poll_delays(8.5, random.Random(1)), 30))
    assert delays[0] == 8.5
    assert delays[1 : 1 + timing.poll_steps] == [timing.poll_step] * timing.poll_steps
    assert delays[1:] == sorted(delays[1:])
    assert max(delays[1:]) == timing.poll_max


def test_backoff_doubles_and_never_undercuts_retry_after():
    timing = Timing(jitter=0)
    rng = random.Random(1)
    assert [timing.backoff(n, rng) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert timing.backoff(1, rng, retry_after=30) == 30


def test_scaled_timing_shrinks_every_wait():
    fast = Timing(jitter=0).scaled(0.01)
    assert next(fast.poll_delays(10, random.Random())) == 0.1
    assert fast.backoff(1, random.Random()) == 0.01


def simulate(first: FirstPoll, estimate: float | None, durations) -> None:
    """Tasks run one after another; polls every poll_step after the first."""
    step = first.timing.poll_step
    for duration in durations:
        at = first.delay(estimate)
        last_running = 0.0
        while at < duration:
            last_running, at = at, at + step
        first.observe(estimate, last_running == 0.0, at, last_running)


def test_first_poll_settles_where_the_chosen_share_of_tasks_is_already_done():
    rng = random.Random(3)
    first = FirstPoll(Timing())
    simulate(first, 4.0, [4.0 - rng.random() for _ in range(400)])  # ceil-rounded estimates
    done_early = sum(4.0 - rng.random() <= first.delay(4.0) for _ in range(2000)) / 2000
    assert abs(done_early - FirstPoll.QUANTILE) < 0.12


def test_first_poll_learns_that_estimates_are_rounded_down():
    rng = random.Random(4)
    first = FirstPoll(Timing())
    assert first.delay(3.0) < 3.0  # the prior: estimates rounded up
    simulate(first, 3.0, [3.0 + rng.random() for _ in range(50)])
    assert first.delay(3.0) > 3.1


def test_first_poll_learns_that_an_estimate_means_nothing():
    first = FirstPoll(Timing())
    assert first.delay(100.0) == FirstPoll.PROBE_MIN  # never trusted blindly
    simulate(first, 100.0, [2.0] * 100)  # the API always says 100 s; tasks take 2 s
    assert first.delay(100.0) < 3.0


def test_a_burst_of_tasks_done_at_first_poll_moves_the_first_poll_one_step():
    first = FirstPoll(Timing())
    before = first.delay(2.0)
    for _ in range(50):
        first.observe(2.0, done_at_first_poll=True, seen_after=before, last_running=0.0)
    assert first.delay(2.0) == pytest.approx(before - Timing().poll_step)


def test_without_an_estimate_the_first_poll_uses_the_default():
    assert FirstPoll(Timing()).delay(None) == Timing().first_poll_unknown
