"""Timings: when to poll and how long to back off. One object, so tests can shrink it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Timing:
    """Polling and backoff delays in seconds; ``scaled(0.01)`` makes a test-speed copy."""

    first_poll_min: float = 0.25
    first_poll_unknown: float = 2.0  # first poll when the API gives no estimate
    poll_step: float = 0.2  # after the first poll, poll this often ...
    poll_steps: int = 8  # ... this many times, then space out ...
    poll_growth: float = 1.3  # ... by this factor ...
    poll_max: float = 5.0  # ... up to this interval
    backoff_base: float = 1.0  # retry waits: base * 2**attempt, with jitter
    backoff_max: float = 60.0
    jitter: float = 0.1  # ± share of every wait
    scale: float = 1.0

    def scaled(self, factor: float) -> Timing:
        return replace(self, scale=self.scale * factor)

    def poll_delays(self, first: float, rng: random.Random) -> Iterator[float]:
        """Waits before each poll of a task: ``first`` (from its submission), then short
        steps around the expected end, then longer ones."""
        yield max(0.0, first) * self.scale
        for _ in range(self.poll_steps):
            yield self._jittered(self.poll_step, rng)
        interval = self.poll_step
        while True:
            interval = min(self.poll_max, interval * self.poll_growth)
            yield self._jittered(interval, rng)

    def backoff(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Wait before retry number ``attempt`` (1-based); never shorter than Retry-After."""
        wait = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempt - 1))
        wait = self._jittered(wait, rng)
        if retry_after is not None:
            wait = max(wait, retry_after * self.scale)
        return wait

    def _jittered(self, seconds: float, rng: random.Random) -> float:
        spread = seconds * self.jitter
        return max(0.0, (seconds + rng.uniform(-spread, spread)) * self.scale)


class FirstPoll:
    """Learns when tasks really end relative to the API's ``estimated_time``.

    The first poll of a task is at ``estimated_time + offset``. The offset tracks a
    quantile online: it moves earlier when a task was already done at its first poll and
    later when it was not, settling where about ``DONE_SHARE`` of tasks are done at the
    first poll. Integer-rounded, exact and meaningless estimates all converge this way.
    """

    DONE_SHARE = 0.25
    STEP = 0.2  # seconds per observation, scaled by the estimate's size
    LATEST = 0.5  # never first poll later than this past the estimate

    def __init__(self, timing: Timing, offset: float = -0.6) -> None:
        self.timing = timing
        self.offset = offset

    def delay(self, estimated_time: float | None) -> float:
        """Seconds from submission to the first poll."""
        if estimated_time is None or estimated_time <= 0:
            return self.timing.first_poll_unknown
        return max(self.timing.first_poll_min, estimated_time + self.offset)

    def observe(
        self, estimated_time: float | None, done_at_first_poll: bool, in_flight: int = 1
    ) -> None:
        """One task's first poll found it done or not. Verdicts arrive ``in_flight`` at
        a time for polls scheduled under one offset, so each moves it that much less."""
        if estimated_time is None or estimated_time <= 0:
            return
        step = self.STEP * max(1.0, estimated_time / 10) / max(1, in_flight)
        if done_at_first_poll:
            self.offset -= step * (1 - self.DONE_SHARE)
        else:
            self.offset += step * self.DONE_SHARE
        self.offset = min(max(self.offset, -estimated_time), self.LATEST)
