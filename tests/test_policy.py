"""Polling and backoff timings."""

from __future__ import annotations

import itertools
import random

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


def test_first_poll_settles_where_the_chosen_share_of_tasks_is_already_done():
    rng = random.Random(3)
    first = FirstPoll(Timing())
    settled = []
    for i in range(3000):  # tasks end uniformly in the second before the estimate
        estimate = 4.0
        end = estimate - rng.random()
        first.observe(estimate, done_at_first_poll=end <= first.delay(estimate))
        if i >= 1000:
            settled.append(first.offset)
    assert abs(sum(settled) / len(settled) - (FirstPoll.DONE_SHARE - 1)) < 0.05


def test_first_poll_learns_that_an_estimate_means_nothing():
    first = FirstPoll(Timing())
    for _ in range(2000):  # the API always says 100 s; tasks take 2 s
        first.observe(100.0, done_at_first_poll=first.delay(100.0) >= 2.0)
    assert first.delay(100.0) < 4.0


def test_without_an_estimate_the_first_poll_uses_the_default():
    assert FirstPoll(Timing()).delay(None) == Timing().first_poll_unknown


def test_a_burst_of_verdicts_from_tasks_in_flight_moves_the_first_poll_only_a_little():
    first = FirstPoll(Timing())
    before = first.offset
    for _ in range(50):  # 50 tasks scheduled together all report "already done"
        first.observe(2.0, done_at_first_poll=True, in_flight=50)
    assert before - first.offset <= FirstPoll.STEP
