"""Timings: when to poll and how long to back off. One object, so tests can shrink it."""

from __future__ import annotations

import random
from collections import deque
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

    Each finished task leaves a residual: when it ended (known to half a poll step when
    it was still running at its first poll, else taken as one step before that poll)
    minus its estimate (0 when the API gives none). The first poll of a task is at
    ``estimated_time`` plus the ``QUANTILE`` of recent residuals, so that about that
    share of tasks is already done then. Waiting tasks read it again as they wait, so
    what one task teaches applies at once. Until the residuals have shown how long tasks
    take, a first poll never waits longer than ``max(PROBE_MIN, 2 x the longest task
    seen)``: an estimate that means nothing (a constant, say) cannot stall a run.
    """

    QUANTILE = 0.3
    PRIOR_OFFSET = -0.6  # before any task finished: integer estimates rounded up
    MIN_SAMPLES = 3
    PROBE_MIN = 5.0
    MEMORY = 200

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self._with: deque[float] = deque(maxlen=self.MEMORY)  # residuals, estimate known
        self._without: deque[float] = deque(maxlen=self.MEMORY)  # durations, no estimate
        self._longest_running = 0.0  # the longest time a task was seen still running

    def delay(self, estimated_time: float | None) -> float:
        """Seconds from submission to the first poll (read again while waiting)."""
        if estimated_time is None or estimated_time <= 0:
            wanted = self._quantile(self._without, self.timing.first_poll_unknown)
        else:
            wanted = estimated_time + self._quantile(self._with, self.PRIOR_OFFSET)
        cap = max(self.PROBE_MIN, 2 * self._longest_running)
        return max(self.timing.first_poll_min, min(wanted, cap))

    def observe(
        self,
        estimated_time: float | None,
        done_at_first_poll: bool,
        seen_after: float,
        last_running: float,
    ) -> None:
        """A task finished: first seen done ``seen_after`` seconds from submission, last
        seen running at ``last_running`` (0 if never)."""
        self._longest_running = max(self._longest_running, last_running)
        step = self.timing.poll_step
        ended = seen_after - step if done_at_first_poll else seen_after - step / 2
        ended = max(ended, last_running)
        if estimated_time is None or estimated_time <= 0:
            self._without.append(ended)
        else:
            self._with.append(ended - estimated_time)

    def _quantile(self, values: deque[float], prior: float) -> float:
        if len(values) < self.MIN_SAMPLES:
            return prior
        ordered = sorted(values)
        return ordered[int(self.QUANTILE * (len(ordered) - 1))]
