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
            self.rate += 0.02 / max(self.rate, 1.0)  # ~ +0.02 submissions/s per second

    def throttled_for(self, retry_after: float | None) -> None:
        """The API said 429: pause for Retry-After, and lower the adaptive rate."""
        self.throttled += 1
        now = self._clock()
        pause = retry_after if retry_after is not None else 1.0
        self._paused_until = max(self._paused_until, now + pause)
        if self.fixed:
            return
        recent = len(self._accepted) / self.WINDOW
        ceiling = self.rate if self.rate is not None else max(recent, self.MIN_RATE)
        self.rate = max(self.MIN_RATE, min(ceiling, max(recent, self.MIN_RATE)) * 0.85)
        self._next = max(self._next, self._paused_until)
