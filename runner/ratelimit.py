"""Submission pacing: a fixed rate when the manifest gives one, else the rate the API
accepts, found by multiplicative increase / decrease on 429."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """Spaces submissions ``1/rate`` apart; pauses everyone after a 429's Retry-After.

    Each 429 opens a new generation: waiters that reserved a turn under the old rate
    reserve again under the new one, and only a request of the current generation can
    lower the rate again (one decrease per episode, not one per request in flight).
    """

    MIN_RATE = 0.2  # submissions per second, the floor of the adaptive rate
    WINDOW = 2.0  # seconds of accepted submissions that estimate the API's rate
    INCREASE = 1.01  # per accepted submission, while adapting
    DECREASE = 0.7  # per 429 episode, while adapting

    def __init__(
        self,
        rate: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.fixed = rate is not None
        self.rate: float | None = rate  # None: not limited (yet)
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0  # earliest time of the next submission
        self._paused_until = 0.0
        self._generation = 0
        self._accepted: deque[float] = deque()
        self.throttled = 0

    async def acquire(self) -> int:
        """Wait for this submission's turn; returns the generation it was paced under."""
        while True:
            generation = self._generation
            now = self._clock()
            start = max(now, self._paused_until)
            if self.rate is not None:
                start = max(start, self._next)
                self._next = start + 1.0 / self.rate
            if start <= now:
                return generation
            await self._sleep(start - now)
            if generation == self._generation and self._clock() >= self._paused_until:
                return generation

    def accepted(self) -> None:
        """A submission went through: remember it, and probe a little higher."""
        now = self._clock()
        self._accepted.append(now)
        while self._accepted and self._accepted[0] < now - self.WINDOW:
            self._accepted.popleft()
        if not self.fixed and self.rate is not None:
            self.rate *= self.INCREASE

    def throttled_for(self, retry_after: float | None, generation: int | None = None) -> None:
        """The API said 429: pause everyone for Retry-After; lower the adaptive rate if
        the request was paced under the current rate."""
        self.throttled += 1
        pause = retry_after if retry_after is not None else 1.0
        self._paused_until = max(self._paused_until, self._clock() + pause)
        if generation is not None and generation != self._generation:
            return  # paced under a rate already lowered
        self._generation += 1
        self._next = self._paused_until  # everyone reserves again under the new rate
        if self.fixed:
            return
        if self.rate is None:
            self.rate = self._first_estimate(retry_after)
        else:
            self.rate = max(self.MIN_RATE, self.rate * self.DECREASE)

    def _first_estimate(self, retry_after: float | None) -> float:
        """A token bucket's Retry-After is about one token's interval: 1/rate. Without
        one, take the rate accepted over the recent window."""
        if retry_after is not None and 0 < retry_after <= 5:
            return max(self.MIN_RATE, 1.0 / retry_after)
        return max(self.MIN_RATE, len(self._accepted) / self.WINDOW)
