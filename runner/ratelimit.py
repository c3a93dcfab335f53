"""Submission pacing: a fixed rate when the manifest gives one, else the rate the API
accepts, found from its 429s: a first estimate, then a ceiling (the rate at the last
429) that the rate returns to quickly and probes above slowly."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """Spaces submissions ``1/rate`` apart; after a 429 pauses everyone briefly.

    Each 429 opens a new generation: only a request paced under the current generation
    can lower the rate again (one decrease per episode, not one per request in flight).
    """

    MIN_RATE = 0.2  # submissions per second, the floor of the adaptive rate
    WINDOW = 2.0  # seconds of accepted submissions that measure the accepted rate
    HEADROOM = 1.5  # the adaptive rate stays within this factor of the accepted rate
    SLOW_START = 1.15  # per accepted submission, before any ceiling is known
    RECOVER = 1.02  # per accepted submission, while below 95% of the ceiling
    PROBE = 1.002  # per accepted submission, near or above the ceiling
    DECREASE = 0.85  # of the ceiling, per 429 episode

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
        self.ceiling: float | None = None  # the rate at the last 429
        self._accepted: deque[float] = deque()
        self.throttled = 0

    async def acquire(self) -> int:
        """Wait for this submission's turn; returns the generation it was paced under.
        A turn is taken only when it is due, so a rate change applies to every waiter."""
        while True:
            now = self._clock()
            start = max(self._paused_until, self._next if self.rate is not None else 0.0)
            if start <= now:
                if self.rate is not None:
                    self._next = max(self._next, now) + 1.0 / self.rate
                return self._generation
            await self._sleep(start - now)

    def accepted(self) -> None:
        """A submission went through: remember it, and probe a little higher."""
        now = self._clock()
        self._accepted.append(now)
        while self._accepted and self._accepted[0] < now - self.WINDOW:
            self._accepted.popleft()
        if self.fixed or self.rate is None:
            return
        if self.ceiling is None:
            grown = self.rate * self.SLOW_START
        elif self.rate < 0.95 * self.ceiling:
            grown = self.rate * self.RECOVER
        else:
            grown = self.rate * self.PROBE
        # a rate far above what is actually sent is untested: do not let it run away
        self.rate = max(self.rate, min(grown, self.HEADROOM * self._accepted_rate(now)))

    def throttled_for(self, retry_after: float | None, generation: int | None = None) -> None:
        """The API said 429. The request that got it waits its Retry-After (the caller
        does that); everyone else pauses briefly, and the adaptive rate goes down if the
        request was paced under the current rate."""
        self.throttled += 1
        if generation is not None and generation != self._generation:
            return  # paced under a rate already lowered
        self._generation += 1
        if not self.fixed:
            if self.rate is None:
                self.rate = self._first_estimate(retry_after)
            else:
                accepted = self._accepted_rate(self._clock())
                self.ceiling = min(self.rate, accepted) if accepted > 0 else self.rate
                self.rate = max(self.MIN_RATE, self.ceiling * self.DECREASE)
        pause = retry_after if retry_after is not None else 1.0
        if self.rate is not None:
            pause = min(pause, 2.0 / self.rate)
        self._paused_until = max(self._paused_until, self._clock() + pause)
        self._next = self._paused_until  # everyone reserves again under the new rate

    def _accepted_rate(self, now: float) -> float:
        """Submissions per second the API accepted over the last window."""
        if len(self._accepted) < 2:
            return 0.0
        span = max(now - self._accepted[0], 1.0 / len(self._accepted), 0.25)
        return len(self._accepted) / span

    def _first_estimate(self, retry_after: float | None) -> float:
        """What the API accepted over the last second, and never more than a token
        bucket's sub-second Retry-After (one token's interval, 1/rate) allows; slow start
        goes on from there until a 429 sets the ceiling."""
        seen = len(self._accepted) / (self.WINDOW / 2)
        if retry_after is not None and 0 < retry_after < 1:  # whole seconds are rounding
            seen = min(seen, 1.0 / retry_after) if seen else 1.0 / retry_after
        return max(self.MIN_RATE, seen)
