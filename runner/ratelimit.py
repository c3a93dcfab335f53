"""Submission pacing: a fixed rate when the manifest gives one, else the rate the API
accepts, found by additive increase / multiplicative decrease on 429."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """Spaces submissions ``1/rate`` apart; pauses everyone after a 429's Retry-After."""

    MIN_RATE = 0.2  # submissions per second, the floor of the adaptive rate
    WINDOW = 2.0  # seconds of accepted submissions that estimate the API's rate
    INCREASE = 1.01  # per accepted submission, while adapting
    DECREASE = 0.7  # per 429, while adapting

    def __init__(self, rate: float | None = None, *, clock: Clock = time.monotonic,
                 sleep: Sleep = anyio.sleep) -> None:
        self.fixed = rate is not None
        self.rate: float | None = rate  # None: not limited (yet)
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0  # earliest time of the next submission
        self._paused_until = 0.0
        self._accepted: deque[float] = deque()
        self.throttled = 0

    async def acquire(self) -> None:
        """Wait for this submission's turn."""
        while True:
            now = self._clock()
            start = max(now, self._paused_until)
            if self.rate is not None:
                start = max(start, self._next)
                self._next = start + 1.0 / self.rate
            if start <= now:
                return
            await self._sleep(start - now)
            if self._clock() >= self._paused_until:
                return

    def accepted(self) -> None:
        """A submission went through: remember it, and probe a little higher."""
        now = self._clock()
        self._accepted.append(now)
        while self._accepted and self._accepted[0] < now - self.WINDOW:
            self._accepted.popleft()
        if not self.fixed and self.rate is not None:
            self.rate *= self.INCREASE

    def throttled_for(self, retry_after: float | None) -> None:
        """The API said 429: pause everyone for Retry-After, and lower the adaptive rate."""
        self.throttled += 1
        now = self._clock()
        pause = retry_after if retry_after is not None else 1.0
        self._paused_until = max(self._paused_until, now + pause)
        self._next = max(self._next, self._paused_until)
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
