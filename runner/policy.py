"""Timings: when to poll and how long to back off. One object, so tests can shrink it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Timing:
    """Polling and backoff delays in seconds; ``scaled(0.01)`` makes a test-speed copy."""

    first_poll_share: float = 0.85  # first poll at this share of the API's estimated_time
    first_poll_min: float = 0.5
    first_poll_unknown: float = 3.0  # first poll when the API gives no estimate
    poll_start: float = 0.3  # then polls start this often ...
    poll_growth: float = 1.4  # ... and space out by this factor ...
    poll_max: float = 5.0  # ... up to this interval
    backoff_base: float = 1.0  # retry waits: base * 2**attempt, with jitter
    backoff_max: float = 60.0
    jitter: float = 0.25  # ± share of every wait
    scale: float = 1.0

    def scaled(self, factor: float) -> Timing:
        return replace(self, scale=self.scale * factor)

    def poll_delays(self, estimated_time: float | None, rng: random.Random) -> Iterator[float]:
        """Waits before each poll of a task, from its submission on."""
        if estimated_time is None or estimated_time <= 0:
            first = self.first_poll_unknown if estimated_time is None else self.first_poll_min
        else:
            first = max(self.first_poll_min, estimated_time * self.first_poll_share)
        yield self._jittered(first, rng)
        interval = self.poll_start
        while True:
            yield self._jittered(interval, rng)
            interval = min(self.poll_max, interval * self.poll_growth)

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
